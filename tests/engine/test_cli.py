"""``mgd-train``: exit codes, one-line errors, listings, a run and a resume."""

from __future__ import annotations

import json

import pytest

from engine.cli import EXIT_INPUT, EXIT_OK, EXIT_TRAINING, main
from engine.config import save_config, set_value
from tests.engine.conftest import tiny_config


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


def write(cfg, tmp_path):
    path = tmp_path / "exp.yaml"
    save_config(cfg, path)
    return str(path)


def test_lists(capsys):
    assert main(["--list-models"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "resnet32x4" in out and "wrn_40_2" in out and "ShuffleNetV2" in out
    assert main(["--list-distillers"]) == EXIT_OK
    assert "kd" in capsys.readouterr().out


def test_unknown_model_exits_2_naming_field_and_choices(tmp_path, capsys):
    cfg = set_value(tiny_config(), "student.arch", "resnet9000")
    assert main([write(cfg, tmp_path), "--out", str(tmp_path / "r")]) == EXIT_INPUT
    err = one_line_error(capsys)
    assert "student.arch" in err and "resnet9000" in err and "resnet8x4" in err


def test_bad_override_exits_2(tmp_path, capsys):
    assert main([write(tiny_config(), tmp_path), "--set", "student.schedule.epochs=lots"]) == EXIT_INPUT
    assert "student.schedule.epochs" in one_line_error(capsys)


def test_malformed_yaml_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.yaml"
    path.write_text("teacher: {arch: resnet8\n")
    assert main([str(path)]) == EXIT_INPUT
    assert "broken.yaml" in one_line_error(capsys)


def test_missing_data_folder_exits_2(tmp_path, capsys):
    cfg = set_value(tiny_config(), "data.dataset", "cifar10")
    cfg = set_value(cfg, "data.root", str(tmp_path / "nowhere"))
    assert main([write(cfg, tmp_path), "--out", str(tmp_path / "r")]) == EXIT_INPUT
    assert "nowhere" in one_line_error(capsys)


def test_unreadable_checkpoint_exits_2(tmp_path, capsys):
    bogus = tmp_path / "teacher.pth"
    bogus.write_text("not a checkpoint")
    cfg = set_value(tiny_config(), "teacher.checkpoint", str(bogus))
    assert main([write(cfg, tmp_path), "--out", str(tmp_path / "r")]) == EXIT_INPUT
    assert "teacher.pth" in one_line_error(capsys)


def test_nan_exits_1(tmp_path, capsys, nan_in_teacher):
    assert main([write(tiny_config(), tmp_path), "--out", str(tmp_path / "r"), "-q"]) == EXIT_TRAINING
    assert "loss became" in capsys.readouterr().err


@pytest.mark.e2e
def test_run_prints_result_and_resume_of_finished_run(tmp_path, capsys):
    cfg = set_value(tiny_config(), "granularity.mode", "off")
    out = tmp_path / "r"
    assert main([write(cfg, tmp_path), "--out", str(out), "--set", "seed=3"]) == EXIT_OK
    text = capsys.readouterr()
    assert "student resnet8" in text.out
    assert "epoch" in text.err  # progress lines
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seed"] == 3 and summary["status"] == "finished"
    # resuming a finished run redoes nothing and reports the same figures
    assert main(["--resume", str(out), "-q"]) == EXIT_OK
    again = json.loads((out / "summary.json").read_text())
    assert again["student"]["best_acc"] == summary["student"]["best_acc"]


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert main([write(tiny_config(), tmp_path), "--out", str(out)]) == EXIT_INPUT
    assert "resume" in one_line_error(capsys)
    assert (out / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("args", [["--resume", "/nonexistent/run"], []])
def test_resume_or_config_needed(args, capsys):
    assert main(args) == EXIT_INPUT
    one_line_error(capsys)


def test_a_stop_asked_by_another_process_does_not_make_this_processs_signal_an_abort():
    """Two processes of one run each get the parent-death SIGTERM, a moment apart: the first to stop
    stops the other through the run's control, and the other's own SIGTERM, arriving during its
    checkpoint write, must still be its first (seen: 'failed' with KeyboardInterrupt in torch.save)."""
    import io
    import signal

    from engine.cli import SignalStop
    from engine.control import RunControl

    control = RunControl()
    handler = SignalStop(control, io.StringIO())
    control.stop()  # the group's stop, through strategy.any
    handler(signal.SIGTERM)  # this process's own first signal: no abort
    assert control.stop_requested and "SIGTERM: stopping" in handler.stream.getvalue()
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGTERM)  # a second one of its own aborts
