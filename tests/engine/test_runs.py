"""engine.runs: listing run folders, reading metrics, exporting a run's student."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import save_student_checkpoint

from engine.config import ExperimentConfig, save_config, set_value
from engine.errors import InputError
from engine.runs import export_run, list_runs, read_metrics, run_info


def make_run(root: Path, name: str, summary: dict | None, cfg: ExperimentConfig | None = None) -> Path:
    path = root / name
    path.mkdir(parents=True)
    save_config(cfg or ExperimentConfig(name=name), path / "config.yaml")
    if summary is not None:
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_list_runs_reads_key_figures(tmp_path):
    make_run(tmp_path, "20260101-000000-a", {
        "name": "a", "status": "finished", "started": "2026-01-01T00:00:00", "mode": "stable", "distiller": "kd",
        "teacher": {"arch": "resnet20", "test_acc": 90.5}, "student": {"arch": "resnet8", "best_acc": 88.25,
                                                                      "best_epoch": 7},
        "heads": [{"dim": 64, "temperature": 2.0, "test_acc": 80.0, "epoch": 3}], "total_seconds": 12.5})
    make_run(tmp_path, "20260102-000000-b", {"name": "b", "status": "stopped", "started": "2026-01-02T00:00:00"})
    make_run(tmp_path, "20260103-000000-c", None)  # killed before the first summary
    (tmp_path / "not-a-run").mkdir()
    (tmp_path / "file.txt").write_text("x")

    runs = list_runs(tmp_path)
    # newest first by start time; a run without a summary (no start time) comes last
    assert [r.path.name for r in runs] == ["20260102-000000-b", "20260101-000000-a", "20260103-000000-c"]
    by_name = {r.path.name: r for r in runs}
    a = by_name["20260101-000000-a"]
    assert (a.status, a.mode, a.distiller) == ("finished", "stable", "kd")
    assert (a.teacher_arch, a.teacher_acc, a.student_arch, a.student_acc, a.best_epoch) == \
        ("resnet20", 90.5, "resnet8", 88.25, 7)
    assert a.heads[0]["dim"] == 64 and a.total_seconds == 12.5 and not a.resumable
    b = by_name["20260102-000000-b"]
    assert b.status == "stopped" and b.resumable and b.student_acc is None
    c = by_name["20260103-000000-c"]
    assert c.status == "unknown" and c.resumable and c.name == "20260103-000000-c"
    assert c.student_arch == "resnet8x4"  # from the config when the summary is missing


def test_list_runs_includes_the_runs_of_comparison_folders(tmp_path):
    comparison = set_value(set_value(ExperimentConfig(name="cmp"), "comparison.baselines", ["kd"]),
                           "comparison.modes", ["off", "stable"])
    folder = make_run(tmp_path, "20260105-000000-cmp", None, comparison)  # as mgd-train writes it
    (folder / "comparison.md").write_text("| baseline |")
    for i, (job, status) in enumerate((("s0-none-off", "finished"), ("s0-kd-off", "finished"),
                                       ("s0-kd-stable", "running"))):
        make_run(folder, job, {"name": f"cmp-{job}", "status": status, "started": f"2026-01-05T00:00:0{i}",
                               "distiller": job.split("-")[1], "mode": job.split("-")[2],
                               "student": {"arch": "resnet8", "best_acc": 50.0 + i}},
                 ExperimentConfig(name=f"cmp-{job}"))
    make_run(folder, "s1-kd-off", None)  # started, killed before its first summary
    (folder / "s2-kd-off").mkdir()  # no config: not a run
    make_run(tmp_path, "20260101-000000-solo", {"name": "solo", "status": "finished",
                                                "started": "2026-01-01T00:00:00"})
    make_run(tmp_path, "20260106-000000-fresh", None, comparison)  # a comparison with no run yet

    runs = list_runs(tmp_path)
    by_name = {r.path.name: r for r in runs}
    assert set(by_name) == {"s0-none-off", "s0-kd-off", "s0-kd-stable", "s1-kd-off", "20260101-000000-solo"}
    assert [r.path.name for r in runs][:3] == ["s0-kd-stable", "s0-kd-off", "s0-none-off"]  # newest first
    kd = by_name["s0-kd-off"]
    assert kd.path == folder / "s0-kd-off" and kd.comparison == "cmp" and kd.comparison_dir == folder
    assert (kd.status, kd.distiller, kd.mode, kd.student_acc) == ("finished", "kd", "off", 51.0)
    assert kd.label == "cmp › s0-kd-off" and kd.summary["status"] == "finished"
    assert by_name["s0-kd-stable"].resumable and by_name["s1-kd-off"].status == "unknown"
    solo = by_name["20260101-000000-solo"]
    assert solo.comparison == "" and solo.comparison_dir is None and solo.label == "solo"
    # a job folder read on its own knows its comparison too
    again = run_info(folder / "s0-kd-off")
    assert (again.comparison, again.comparison_dir, again.label) == ("cmp", folder, "cmp › s0-kd-off")
    assert run_info(tmp_path / "20260101-000000-solo").comparison == ""


def test_list_runs_imports_no_torch(tmp_path):
    make_run(tmp_path, "r", {"status": "finished"})
    code = ("import sys\nfrom engine.runs import list_runs\n"
            f"assert len(list_runs({str(tmp_path)!r})) == 1\nprint('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_list_runs_of_missing_root_is_empty(tmp_path):
    assert list_runs(tmp_path / "nope") == []


def test_read_metrics_tolerates_a_truncated_last_line(tmp_path):
    lines = [json.dumps({"event": "Log", "message": "hello", "level": "info", "time": 1.0}),
             json.dumps({"event": "EpochEnd", "stage": "teacher", "epoch": 1}),
             "",
             '{"event": "StepLosses", "stage": "stu']
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    events = read_metrics(tmp_path)
    assert [e["event"] for e in events] == ["Log", "EpochEnd"]
    assert read_metrics(tmp_path / "missing") == []


def test_export_run_refuses_a_run_without_student(tmp_path):
    path = make_run(tmp_path, "r", {"status": "stopped"})
    with pytest.raises(InputError, match="no trained student"):
        export_run(path, tmp_path / "out", ["weights"])
    with pytest.raises(InputError, match="not a run folder"):
        export_run(tmp_path / "nothing", tmp_path / "out", ["weights"])


def test_export_run_writes_loadable_files(tmp_path):
    torch = pytest.importorskip("torch")
    from engine.export import load_exported_weights
    from engine.models import build_model

    cfg = set_value(set_value(ExperimentConfig(name="exp"), "student.arch", "resnet8"), "data.dataset", "demo")
    path = make_run(tmp_path, "r", {"status": "finished", "student": {"arch": "resnet8", "best_acc": 50.0},
                                     "data": {"input_shape": [1, 8, 8], "classes": 10}}, cfg)
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1).eval()
    save_student_checkpoint(path, model, best_acc=50.0, best_epoch=1, final_acc=49.0)

    files = export_run(path, tmp_path / "out", ["weights", "torchscript"])
    assert set(files) == {"weights", "torchscript", "card"}
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)[0]
        again = load_exported_weights(files["weights"], build_model("resnet8", 10, 1)).eval()
        assert torch.allclose(again(x)[0], expected, atol=1e-5)
        scripted = torch.jit.load(str(files["torchscript"]))
        assert torch.allclose(scripted(x), expected, atol=1e-4)
    card = yaml.safe_load(Path(files["card"]).read_text())
    assert card["architecture"] == "resnet8" and len(card["classes"]) == 10
    assert card["accuracy"]["test_acc"] == 50.0 and card["mgd"]["mode"] == "stable"
    assert run_info(path).has_student


def test_inspect_names_a_renamed_run_by_its_new_name(tmp_path):
    # inspect's plots and report name a run as the studio does (RunInfo.label), not by its config's name
    from engine.config import ExperimentConfig, save_config
    from engine.inspect.analysis import run_label
    from engine.inspect.load import RunModels
    from engine.runs import annotate_run

    run = tmp_path / "20260101-100000-demo"
    run.mkdir()
    cfg = ExperimentConfig(name="demo")
    save_config(cfg, run / "config.yaml")
    models = RunModels(run_dir=run, config=cfg, num_classes=10, in_channels=1, student=None, student_arch="resnet8")
    annotate_run(run, name="my best student")
    assert models.name == "my best student"
    assert run_label(models).startswith("my best student (")
