"""Every hostile config is a refusal: exit 2 with one line naming the field or file, within
seconds, before anything runs; never exit 1 with a traceback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from engine.cli import EXIT_INPUT, main
from engine.config import apply_override, load_config, loads_config
from engine.config_yaml import MAX_CONFIG_BYTES, SafeLoader
from engine.errors import InputError
from engine.runfolder import check_writable_dir

DEMO = Path(__file__).resolve().parents[2] / "resources" / "presets" / "demo.yaml"


def refused(capsys, argv: list[str], *words: str) -> str:
    started = time.perf_counter()
    assert main(argv) == EXIT_INPUT
    assert time.perf_counter() - started < 10
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("mgd-train: error: "), err
    assert "Traceback" not in err and "training failed" not in err
    for word in words:
        assert word in err, err
    return err


def write(tmp_path, text: str, name: str = "exp.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("value", ["!!int 1.5", "!!float abc", "!!float ''", "!!bool maybe",
                                   "!!timestamp 2020-13-45", "!!timestamp 2020-02-30", "!!int 0x",
                                   "!!int " + "9" * 5000])
def test_tagged_values_that_do_not_construct_are_refused_with_their_line(tmp_path, capsys, value):
    path = write(tmp_path, f"name: demo\nseed: {value}\n")
    refused(capsys, [path, "--print-config"], "exp.yaml", "line 2")


@pytest.mark.parametrize("value", ["!!int 1.5", "!!bool maybe", "{a: 1, a: 2}", "[[[[", "!!python/object:os.system x"])
def test_hostile_set_values_are_refused(capsys, value):
    refused(capsys, [str(DEMO), "--set", f"seed={value}", "--print-config"], "seed")


def test_a_key_given_twice_is_refused_with_the_key_and_line(tmp_path, capsys):
    path = write(tmp_path, "name: demo\nstudent:\n  arch: resnet8\n  schedule: {epochs: 3}\n  arch: resnet20\n")
    refused(capsys, [path, "--print-config"], "'arch'", "line 5", "first on line 3")
    with pytest.raises(InputError, match="'epochs' is given twice"):
        loads_config("name: x\nteacher: {schedule: {epochs: 1, epochs: 2}}\n")


def test_merge_keys_still_override_without_being_duplicates():
    cfg = loads_config("name: x\nstudent:\n  schedule:\n    <<: {epochs: 3, lr: 0.1}\n    lr: 0.2\n")
    assert (cfg.student.schedule.epochs, cfg.student.schedule.lr) == (3, 0.2)


def test_yaml_is_read_with_libyaml_where_present():
    import yaml

    assert issubclass(SafeLoader, yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader)


def test_a_file_larger_than_any_experiment_is_refused_by_size_first(tmp_path, capsys):
    path = write(tmp_path, "name: x\nevaluation:\n  noise_levels: [" + ", ".join(["0.1"] * 300_000) + "]\n")
    assert os.path.getsize(path) > MAX_CONFIG_BYTES
    refused(capsys, [path, "--print-config"], "exp.yaml", "bytes")


def test_a_long_flow_sequence_below_the_size_bound_is_refused_fast(tmp_path, capsys):
    path = write(tmp_path, "name: x\nevaluation:\n  noise_levels: [" + ",".join(["0"] * 120_000) + "]\n")
    assert os.path.getsize(path) <= MAX_CONFIG_BYTES
    refused(capsys, [path, "--print-config"], "exp.yaml")


@pytest.mark.parametrize("depth", [41, 500, 5000, 100_000])
def test_deep_nesting_is_refused_fast(tmp_path, capsys, depth):
    path = write(tmp_path, "name: " + "[" * depth + "]" * depth + "\n")
    refused(capsys, [path, "--print-config"], "exp.yaml")


def test_an_alias_bomb_is_refused(tmp_path, capsys):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghij"):
        lines.append(f"{name}: &{name} [{', '.join(['*' + 'abcdefghij'[i]] * 10)}]")
    refused(capsys, [write(tmp_path, "\n".join(lines) + "\n"), "--print-config"], "exp.yaml", "100,000")


@pytest.mark.parametrize("where", ["/proc/self/status", "/proc/self/environ", "/sys/kernel/mm", "/dev/null"])
def test_system_files_are_not_experiment_files(capsys, where):
    if not os.path.exists(where):
        pytest.skip(f"{where} does not exist here")
    refused(capsys, [where, "--print-config"], where)


def test_a_pipe_or_a_folder_is_not_an_experiment_file(tmp_path, capsys):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    refused(capsys, [str(fifo), "--print-config"], "fifo.yaml", "not a regular file")
    refused(capsys, [str(tmp_path), "--print-config"], "a folder")
    refused(capsys, [str(tmp_path / "none.yaml"), "--print-config"], "no such config file")


def test_a_file_that_is_not_text_is_refused(tmp_path, capsys):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"name: \xff\xfe\x00\x01\n")
    refused(capsys, [str(path), "--print-config"], "bin.yaml")


@pytest.mark.parametrize("field", ["data.root", "teacher.checkpoint", "teacher.weights", "export.dir",
                                   "granularity.checkpoint", "comparison.teachers_dir"])
def test_paths_the_file_system_cannot_hold_are_refused_with_the_field(capsys, field):
    refused(capsys, [str(DEMO), "--set", f"{field}=/tmp/{'a' * 5000}", "--print-config"], field, "longer than")
    refused(capsys, [str(DEMO), "--set", f"{field}=/tmp/a\0b", "--print-config"], field, "NUL")


@pytest.mark.parametrize("assignment,field", [
    ("distiller.w_ce=1e300", "distiller.w_ce"), ("distiller.w_div=1e30", "distiller.w_div"),
    ("distiller.w_kd=1e30", "distiller.w_kd"), ("distiller.w_ce=.inf", "distiller.w_ce"),
    ("distiller.w_kd=.nan", "distiller.w_kd"), ("distiller.temperature=1e9", "distiller.temperature"),
    ("student.schedule.lr=1e10", "student.schedule.lr"), ("teacher.schedule.momentum=2", "teacher.schedule.momentum"),
    ("granularity.schedule.weight_decay=1e5", "granularity.schedule.weight_decay"),
    ("granularity.heads.0.temperature=1e20", "granularity.heads.0.temperature"),
    ("distiller.options={alpha: 1e30}", "distiller.options.alpha"),
])
def test_numbers_that_feed_the_losses_are_bounded(capsys, assignment, field):
    argv = [str(DEMO), "--set", assignment, "--print-config"]
    if field == "distiller.options.alpha":
        argv[1:1] = ["--set", "distiller.name=dkd"]
    refused(capsys, argv, field)


def test_the_authors_weights_pass_the_bounds(capsys):
    assert main([str(DEMO), "--set", "distiller.name=pkt", "--print-config"]) == 0  # w_kd 30000
    assert "w_kd: 30000.0" in capsys.readouterr().out


@pytest.mark.parametrize("name,word", [("n" * 300, "bytes"), ("é" * 150, "bytes"), ("a/b", "'/'"),
                                       ("a\\b", "'\\\\'"), ("a\tb", "'\\t'")])
def test_names_that_cannot_name_a_run_folder_are_refused(capsys, name, word):
    refused(capsys, [str(DEMO), "--set", f"name={name}", "--plan"], "name:", word)


def test_a_nul_in_the_name_is_refused():
    with pytest.raises(InputError, match="name"):
        from engine.config import validate

        validate(apply_override(load_config(DEMO), "name=a\0b"))


@pytest.mark.parametrize("folder", ["/tmp/a\0b", "/proc/mgd-export", "/sys/mgd-export"])
def test_export_folders_that_cannot_be_written_are_refused_at_plan_time(capsys, folder):
    refused(capsys, [str(DEMO), "--set", f"export.dir={folder}", "--plan"], "export.dir")


def test_check_writable_dir_creates_writes_and_leaves_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    check_writable_dir(target, "export.dir")
    assert not (tmp_path / "a").exists()  # tried, then removed again
    existing = tmp_path / "here"
    existing.mkdir()
    check_writable_dir(existing, "export.dir")
    assert list(existing.iterdir()) == []  # the probe file is gone
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="export.dir: .* is a file"):
        check_writable_dir(tmp_path / "file" / "sub", "export.dir")
    with pytest.raises(InputError, match="export.dir"):
        check_writable_dir("/proc/mgd-probe", "export.dir")


def test_check_writable_dir_accepts_a_folder_another_process_made_meanwhile(tmp_path, monkeypatch):
    """Two processes of one run probed the same export folder at once: the one that lost the race to
    create it was refused with 'File exists' (seen in CI); a folder made meanwhile is fine, and not ours
    to remove."""
    target = tmp_path / "export"
    real = Path.mkdir

    def racing(self, *args, **kwargs):
        if self == target:
            real(self)  # the other process got there first
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", racing)
    check_writable_dir(target, "export.dir")
    assert target.is_dir() and list(target.iterdir()) == []


def test_check_writable_dir_refuses_a_read_only_folder(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="run folder"):
            check_writable_dir(ro / "run", "run folder (--out)")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("assignments,field", [
    (["comparison.seeds=[]"], "comparison.seeds"), (["comparison.modes=[]"], "comparison.modes"),
    (["comparison.seeds=[0, 0]"], "comparison.seeds"), (["comparison.modes=[off, off]"], "comparison.modes"),
    (["comparison.baselines=[none]", "comparison.student_alone=false"], "comparison.baselines"),
    (["comparison.pairs=[{teacher: resnet20, student: resnet8}, {teacher: resnet20, student: resnet8}]"],
     "comparison.pairs"),
])
def test_a_comparison_that_makes_no_run_is_refused(capsys, assignments, field):
    argv = [str(DEMO), "--set", "comparison.baselines=[kd]"]
    for a in assignments:
        argv += ["--set", a]
    refused(capsys, argv + ["--plan"], field)
