"""Runs told apart, renamed, noted, duplicated as a new experiment, deleted to the trash, filtered."""

from __future__ import annotations

import json

import pytest

from engine.config import load_config
from engine.errors import InputError
from engine.runfolder import RunLock
from engine.runs import annotate_run, delete_run, duplicate_config, list_runs, run_info
from mgd_gui.plots.base import unbroken
from mgd_gui.runs_panel import COL, distinct_labels
from tests.gui.test_window_tells_the_truth import write_finished_run


def two_alike(root):
    """Two runs of the same name started in the same minute (a second apart), seeds 0 and 1."""
    a = write_finished_run(root, "demo", "2026-01-01T10:00:01", seed=0, folder="20260101-100001-demo")
    b = write_finished_run(root, "demo", "2026-01-01T10:00:02", seed=1, folder="20260101-100002-demo")
    return a, b


def row(panel, path):
    for i in range(panel.tree.topLevelItemCount()):
        item = panel.tree.topLevelItem(i)
        if item.data(0, 256) == path:
            return item
    return None


def test_runs_of_the_same_name_and_minute_are_told_apart(window, studio_home):
    a, b = two_alike(studio_home / "runs")
    panel = window.runs
    panel.refresh()
    ra, rb = row(panel, a), row(panel, b)
    assert ra.text(COL["Seed"]) == "0" and rb.text(COL["Seed"]) == "1"
    assert ra.text(COL["Started"]) == "2026-01-01 10:00:01" and rb.text(COL["Data"]) == "demo"
    assert distinct_labels([panel.infos[a], panel.infos[b]]) == ["demo (seed 0)", "demo (seed 1)"]
    panel.select([a, b])
    assert sorted(r.label for r in window.plots.records) == ["demo (seed 0)", "demo (seed 1)"]
    assert unbroken("demo (seed 1)") in window.plots.run_legend.text()


def test_rename_and_note_a_run(window, studio_home):
    a, b = two_alike(studio_home / "runs")
    panel = window.runs
    panel.refresh()
    panel.select([a])
    panel.ask_text = lambda title, label, text, multiline=False: "baseline KD" if title.startswith("Rename") \
        else "teacher from the\nshared checkpoint"
    panel.buttons["rename"].click()
    panel.buttons["note"].click()
    assert json.loads((a / "annotation.json").read_text()) == {"name": "baseline KD",
                                                               "note": "teacher from the\nshared checkpoint"}
    item = row(panel, a)
    assert item.text(COL["Name"]) == "baseline KD" and item.text(COL["Note"]) == "teacher from the"
    assert "experiment: demo" in item.toolTip(0) and "shared checkpoint" in item.toolTip(0)
    assert window.plots.records[0].label.startswith("baseline KD")
    assert "renamed" in window.log.text()
    info = run_info(a)
    assert info.name == "baseline KD" and info.experiment == "demo" and info.renamed
    # an empty name goes back to the experiment's; the run's own files are untouched
    panel.ask_text = lambda *args, **kw: ""
    panel.buttons["rename"].click()
    assert row(panel, a).text(COL["Name"]) == "demo"
    assert load_config(a / "config.yaml").name == "demo"
    # cancelled: nothing changes
    panel.ask_text = lambda *args, **kw: None
    panel.buttons["note"].click()
    assert run_info(a).note == "teacher from the\nshared checkpoint"


def test_duplicate_a_run_as_a_new_experiment(window, studio_home):
    a, _ = two_alike(studio_home / "runs")
    window.runs.refresh()
    window.runs.select([a])
    window.runs.buttons["duplicate"].click()
    cfg = window.form.config()
    assert cfg.name == "demo-copy" and cfg.seed == 0
    assert window.isWindowModified() and window.windowTitle().startswith("demo-copy (new)")
    asked = []
    window.ask_unsaved = lambda: asked.append(True) or "cancel"
    window.close()
    assert asked and window.isVisible()  # a duplicate is unsaved: closing asks


def test_delete_runs_to_the_trash_after_a_confirmation(window, studio_home, monkeypatch):
    root = studio_home / "runs"
    a, b = two_alike(root)
    trashed = []
    monkeypatch.setattr("send2trash.send2trash", lambda path: trashed.append(path) or __import__("shutil").rmtree(path))
    panel = window.runs
    panel.refresh()
    panel.select([a, b])
    assert panel.buttons["delete"].text() == "Delete 2 runs…"
    asked = []
    panel.confirm = lambda title, text: asked.append(text) or False
    panel.buttons["delete"].click()
    assert a.exists() and b.exists() and "20260101-100001-demo" in asked[0]  # cancelled: nothing deleted
    panel.confirm = lambda title, text: True
    panel.select([a])
    panel.buttons["delete"].click()
    assert trashed == [str(a)] and not a.exists() and b.exists()
    assert panel.tree.topLevelItemCount() == 1
    assert "moved to the system trash" in window.log.text()


def test_delete_without_a_system_trash_keeps_the_folder_beside(studio_home, monkeypatch):
    root = studio_home / "runs"
    a, _ = two_alike(root)

    def no_trash(path):
        raise OSError("no trash on this file system")

    monkeypatch.setattr("send2trash.send2trash", no_trash)
    where = delete_run(a)
    kept = list((root / ".trash").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith(a.name) and (kept[0] / "config.yaml").is_file()
    assert where == f"moved to {kept[0]}"
    assert [i.path for i in list_runs(root)] == [root / "20260101-100002-demo"]  # .trash is not listed


def test_a_run_being_written_is_not_deleted(studio_home):
    a, _ = two_alike(studio_home / "runs")
    with RunLock(a):
        with pytest.raises(InputError, match="being written"):
            delete_run(a)
    assert a.exists()


def test_annotations_and_duplicates_in_the_engine(studio_home):
    a, _ = two_alike(studio_home / "runs")
    assert annotate_run(a, name="  my   run ", note="") == {"name": "my run"}
    assert annotate_run(a, note="n") == {"name": "my run", "note": "n"}
    assert annotate_run(a, name="") == {"note": "n"}
    assert duplicate_config(a).name == "demo-copy"
    with pytest.raises(InputError):
        annotate_run(studio_home, name="x")


def test_filter_runs_by_name_data_and_status(window, studio_home):
    root = studio_home / "runs"
    a, b = two_alike(root)
    c = write_finished_run(root, "cifar-pair", "2026-01-02T09:00:00", folder="20260102-090000-cifar-pair")
    summary = json.loads((c / "summary.json").read_text())
    summary.update(status="failed", data={"dataset": "cifar100"})
    (c / "summary.json").write_text(json.dumps(summary))
    annotate_run(b, note="the good one")
    panel = window.runs
    panel.refresh()
    assert panel.visible_paths() and len(panel.visible_paths()) == 3 and panel.count_label.text() == "3 runs"
    panel.filter_text.setText("good")
    assert panel.visible_paths() == [b] and panel.count_label.text() == "1 of 3"
    panel.filter_text.setText("")
    panel.filter_data.setCurrentIndex(panel.filter_data.findData("cifar100"))
    assert panel.visible_paths() == [c]
    panel.filter_data.setCurrentIndex(0)
    panel.filter_status.setCurrentIndex(panel.filter_status.findData("finished"))
    assert set(panel.visible_paths()) == {a, b}
    # a selected run that the filter hides leaves the plots
    panel.filter_status.setCurrentIndex(0)
    panel.select([c])
    assert len(window.plots.records) == 1
    panel.filter_status.setCurrentIndex(panel.filter_status.findData("finished"))
    assert panel.selected_paths() == [] and window.plots.records == []


def test_runs_of_one_comparison_are_labelled_by_their_job(studio_home):
    from tests.gui.test_compare import make_runs

    paths, _ = make_runs(studio_home)
    infos = [run_info(p) for p in paths[3:]]  # the three runs inside the comparison folder
    assert distinct_labels(infos) == ["s1-kd-off", "s1-kd-stable", "s1-none-off"]
    mixed = distinct_labels([run_info(paths[0]), run_info(paths[3])])
    assert mixed[1].startswith("demo › s1-kd-off")
