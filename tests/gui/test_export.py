"""The export dialog writes the chosen run's student in loadable formats, or says why not."""

from __future__ import annotations

import json

from tests.conftest import save_student_checkpoint

import pytest
import yaml

from engine.config import ExperimentConfig, save_config, set_value
from engine.runs import list_runs


@pytest.fixture
def student_run(studio_home):
    """A run folder with a trained-student checkpoint (a real resnet8, untrained weights)."""
    import torch

    from engine.config import load_config
    from engine.models import build_model
    from mgd_gui import paths

    run = paths.runs_root() / "20260101-000000-demo"
    (run / "checkpoints").mkdir(parents=True)
    cfg = set_value(load_config(paths.demo_preset()), "student.arch", "resnet8")
    save_config(cfg, run / "config.yaml")
    (run / "summary.json").write_text(json.dumps({
        "name": "demo", "status": "finished", "started": "2026-01-01T00:00:00",
        "student": {"arch": "resnet8", "best_acc": 42.0, "best_epoch": 1},
        "data": {"input_shape": [1, 8, 8], "classes": 10}}))
    torch.manual_seed(0)
    model = build_model("resnet8", 10, 1).eval()
    save_student_checkpoint(run, model, best_acc=42.0, best_epoch=1, final_acc=40.0)
    return run, model


def test_export_dialog_writes_loadable_files(qtbot, window, student_run, tmp_path):
    import torch

    from engine.export import load_exported_weights
    from engine.models import build_model

    run, model = student_run
    window.runs.refresh()
    window.runs.select([run])
    assert window.runs.buttons["export"].isEnabled()
    window.runs.buttons["export"].click()
    dialog = window.export_dialog
    assert dialog is not None and dialog.isVisible()
    assert dialog.run_combo.currentData() == str(run)
    out = tmp_path / "exported"
    dialog.folder.setText(str(out))
    assert dialog.formats() == ["weights", "torchscript", "onnx"]
    with qtbot.waitSignal(dialog.exported, timeout=120000):
        dialog.export_button.click()
    files = dialog.result
    assert set(files) == {"weights", "torchscript", "onnx", "card"}
    assert "Exported 4 files" in dialog.report.toPlainText()

    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        expected = model(x)[0]
        reloaded = load_exported_weights(files["weights"], build_model("resnet8", 10, 1)).eval()
        assert torch.allclose(reloaded(x)[0], expected, atol=1e-5)
        scripted = torch.jit.load(files["torchscript"])
        assert torch.allclose(scripted(x), expected, atol=1e-4)
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(files["onnx"], providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(logits - expected.numpy()).max() < 1e-3
    card = yaml.safe_load(open(files["card"]))
    assert card["architecture"] == "resnet8" and card["normalization"]["mean"]
    # the card holds what the run folder's own card holds: the experiment's config included
    from engine.config import load_config, to_dict

    assert card["config"] == to_dict(load_config(run / "config.yaml"))
    assert {"teacher", "accuracy", "noise_curve", "mgd", "config"} <= set(card)
    assert card["mgd"]["mode"] == "stable" and card["accuracy"]["test_acc"] == 42.0
    dialog.close()


def test_export_dialog_reports_the_exact_failure(qtbot, window, student_run, tmp_path):
    from mgd_gui.export_dialog import ExportDialog

    def broken(run_dir, out_dir, formats):
        raise RuntimeError("disk full while writing student.onnx")

    run, _ = student_run
    dialog = ExportDialog(list_runs(window.runs_root), run, window, exporter=broken)
    qtbot.addWidget(dialog)
    dialog.folder.setText(str(tmp_path / "x"))
    with qtbot.waitSignal(dialog.failed, timeout=10000):
        dialog.export_now()
    assert "RuntimeError: disk full while writing student.onnx" in dialog.report.toPlainText()
    assert dialog.export_button.isEnabled()  # it can be tried again


def test_runs_without_a_student_are_not_offered(window, studio_home):
    from mgd_gui import paths

    run = paths.runs_root() / "20260101-000000-stopped"
    run.mkdir(parents=True)
    save_config(ExperimentConfig(name="stopped"), run / "config.yaml")
    (run / "summary.json").write_text(json.dumps({"status": "stopped"}))
    window.runs.refresh()
    window.runs.select([run])
    assert not window.runs.buttons["export"].isEnabled()
    assert window.runs.buttons["resume"].isEnabled()
