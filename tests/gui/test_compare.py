"""The comparison table of the selected runs, and a comparison queued by Run."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import QApplication

from engine.compare import comparison_table, to_csv, to_markdown
from engine.config import ExperimentConfig, save_config, set_value


def fake_run(folder: Path, distiller: str, mode: str, seed: int, acc: float, minute: int) -> dict:
    folder.mkdir(parents=True)
    save_config(ExperimentConfig(name=f"demo-{distiller}-{mode}-s{seed}"), folder / "config.yaml")
    summary = {
        "name": f"demo-{distiller}-{mode}-s{seed}", "status": "finished", "started": f"2026-01-01T00:{minute:02d}:00",
        "distiller": distiller, "mode": mode, "seed": seed, "data": {"dataset": "demo"},
        "teacher": {"arch": None} if distiller == "none" else {"arch": "resnet20", "test_acc": 90.0},
        "student": {"arch": "resnet8", "params": 78042, "best_acc": acc, "test_acc": acc - 1.5, "best_epoch": 3,
                    "cpu_latency_ms": 1.25,
                    "ece": 2.5, "output_noise": 0.0312},
        "export": {"bytes": {"weights": 320 * 1024}},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return summary


def make_runs(studio_home: Path) -> tuple[list[Path], list[dict]]:
    """Seed 0 as runs of their own, seed 1 inside a comparison folder (as mgd-train writes it)."""
    runs = studio_home / "runs"
    comparison = runs / "comparison-demo"
    comparison.mkdir(parents=True)
    save_config(set_value(ExperimentConfig(name="demo"), "comparison.baselines", ["kd"]), comparison / "config.yaml")
    paths, summaries = [], []
    for i, (distiller, mode, seed, acc) in enumerate((
            ("kd", "off", 0, 70.0), ("kd", "stable", 0, 75.0), ("none", "off", 0, 65.0),
            ("kd", "off", 1, 72.0), ("kd", "stable", 1, 77.0), ("none", "off", 1, 66.0))):
        folder = (runs / f"20260101-00{i:02d}00-{distiller}-{mode}" if seed == 0
                  else comparison / f"s{seed}-{distiller}-{mode}")
        summaries.append(fake_run(folder, distiller, mode, seed, acc, i))
        paths.append(folder)
    return paths, summaries


def test_compare_selected_runs(qtbot, window, studio_home, tmp_path):
    paths, summaries = make_runs(studio_home)
    panel = window.runs
    panel.refresh()
    assert panel.tree.topLevelItemCount() == 6
    names = {panel.tree.topLevelItem(i).text(0) for i in range(6)}
    assert "demo › s1-kd-off" in names  # a comparison's runs are listed, named after it
    assert not panel.buttons["compare"].isEnabled()

    panel.select(paths)
    assert panel.buttons["compare"].isEnabled() and panel.buttons["compare"].text() == "Compare (6)"
    panel.buttons["compare"].click()
    dialog = window.compare_dialog
    assert dialog is not None and dialog.isVisible()

    b = dialog.baselines
    assert [b.horizontalHeaderItem(c).text() for c in range(b.columnCount())] == [
        "pair", "baseline", "MGD off", "+ MGD granularity", "+ MGD stable", "granularity - off", "stable - off",
        "paper (off / MGD)", "ours - paper"]
    assert b.rowCount() == 2
    assert [b.item(0, c).text() for c in range(7)] == [
        "resnet20 -> resnet8", "kd", "69.50 ± 1.41 / 71.00 ± 1.41", "-", "74.50 ± 1.41 / 76.00 ± 1.41", "-",
        "+5.00 (not enough seeds: 2 seeds, 3 needed)"]
    assert [b.item(1, c).text() for c in range(3)] == ["resnet20 -> resnet8", "student alone (no teacher)",
                                                       "64.00 ± 0.71 / 65.50 ± 0.71"]
    assert "fewer than three seeds" in b.item(0, 6).toolTip()
    s = dialog.students
    assert s.rowCount() == 3
    row = [s.item(0, c).text() for c in range(s.columnCount())]
    assert row == ["resnet20 -> resnet8", "kd", "off", "resnet8", "78,042", "320", "1.25", "2.50", "0.0312"]
    assert s.item(2, 1).text() == "student alone (no teacher)"
    assert "resnet20 -> resnet8: teacher 90.00 ± 0.00 %" in dialog.note.text() and "Welch" in dialog.note.text()
    assert dialog.summary_label.text().startswith("6 runs selected, 6 in the table · seeds 0, 1 · data demo")
    assert dialog.warnings_label.isHidden()

    expected = comparison_table(summaries)
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == to_markdown(expected)
    assert "| kd | 69.50 ± 1.41 / 71.00 ± 1.41 | - |" in QApplication.clipboard().text()
    out = dialog.save_csv(tmp_path / "table.csv")
    assert out.read_bytes().decode("utf-8") == to_csv(expected)
    dialog.close()


def test_compare_from_the_context_menu_says_what_was_left_out(qtbot, window, studio_home):
    paths, _ = make_runs(studio_home)
    stopped = studio_home / "runs" / "20260102-000000-stopped"
    stopped.mkdir()
    save_config(ExperimentConfig(name="stopped"), stopped / "config.yaml")
    (stopped / "summary.json").write_text(json.dumps({"name": "stopped", "status": "stopped", "distiller": "kd",
                                                      "mode": "off", "seed": 2}))
    window.runs.refresh()
    window.runs.select([paths[0], paths[1], stopped])  # one seed only
    menu = window.runs.context_menu()
    actions = {a.objectName(): a for a in menu.actions() if a.objectName()}
    assert actions["compare"].isEnabled() and not actions["reopen"].isEnabled()
    actions["compare"].trigger()
    dialog = window.compare_dialog
    assert dialog.isVisible()
    assert dialog.baselines.item(0, 6).text() == "+5.00 (not enough seeds: one seed, 3 needed)"
    assert "not finished: stopped (stopped)" in dialog.warnings_label.text()
    assert dialog.summary_label.text().startswith("3 runs selected, 2 in the table")
    dialog.close()


def test_a_comparison_is_queued_by_run_and_says_so_at_its_field(qtbot, window, tmp_path):
    window.form.set_field("comparison.baselines", ["kd", "fitnet"])
    assert window.form.is_valid() and window.actions_["run"].isEnabled()
    assert window.form.error_text("comparison.baselines") == ""
    text = window.form.note_text("comparison.baselines")
    out = window.runs_root / "comparison-demo"
    assert text.startswith("Run queues the comparison: 7 runs (7 per seed × 1 seed)")
    assert f"--out {out}" in text
    assert window.actions_["run"].statusTip() == "Queue the comparison's runs"

    window.form.set_field("comparison.baselines", [])
    assert window.form.note_text("comparison.baselines") == ""
    assert window.actions_["run"].statusTip() == "Train the experiment"
