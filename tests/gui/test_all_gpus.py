"""All GPUs: on a machine with several, the device choice "all N GPUs" runs the experiment as
N processes (``mgd-train --nproc N``, torchrun) and the window follows its events. This machine
has no GPU: the choice is offered from a probed list, and the run itself goes to two CPU
processes (gloo) in its place."""

from __future__ import annotations

import dataclasses

from engine.progress import describe
from mgd_gui import probes
from mgd_gui.setup.toolbar_widgets import ALL_GPUS, DeviceCombo
from tests.engine.conftest import tiny_config
from tests.gui.helpers import TINY, apply, wait_idle

TWO_GPUS = [("cuda:0", "cuda:0  H200 (139 GiB)"), ("cuda:1", "cuda:1  H200 (139 GiB)")]


def test_all_gpus_is_offered_with_two_or_more(qtbot):
    combo = DeviceCombo()
    qtbot.addWidget(combo)
    combo.set_found(TWO_GPUS[:1])
    assert combo.findData(ALL_GPUS) < 0  # one GPU: nothing to spread over
    combo.set_found(TWO_GPUS)
    index = combo.findData(ALL_GPUS)
    assert index >= 0 and combo.itemText(index) == "all 2 GPUs (one process each)"
    combo.show_device("cuda", processes=2)
    assert combo.currentData() == ALL_GPUS
    combo.show_device("cuda")
    assert combo.currentData() == "cuda"


def test_the_plan_check_knows_the_process_count():
    assert probes.check_plan(tiny_config(), 2) is None
    field, reason = probes.check_plan(tiny_config(), 3)  # 64 images do not split into 3 parts
    assert field == "data.batch_size" and "3 equal parts" in reason


def test_all_gpus_runs_the_experiment_as_several_processes(qtbot, window, monkeypatch):
    window.devices.set_found(TWO_GPUS)
    apply(window, TINY)
    window.devices.device_chosen.emit(ALL_GPUS)
    assert window.form.config().device == "cuda" and window.processes == 2
    assert window.devices.currentData() == ALL_GPUS
    launched = []
    real = window.runner.start_processes

    def on_the_cpu(cfg, processes, **kwargs):  # no GPU here: the same launch, on two CPU processes
        launched.append((cfg.device, processes))
        real(dataclasses.replace(cfg, device="cpu"), processes, **kwargs)

    monkeypatch.setattr(window.runner, "start_processes", on_the_cpu)
    shown = []

    def on_progress(e):  # connected after the window's own slot: what the status bar shows for each
        if e["event"] == "Progress":
            shown.append((describe(e), window.progress.label.text()))

    window.runner.event.connect(on_progress)
    window.start_run()
    assert launched == [("cuda", 2)]
    assert not window.actions_["pause"].isEnabled() and window.actions_["stop"].isEnabled()
    assert "cannot pause" in window.actions_["pause"].toolTip()
    assert "on 2 GPUs (one process each, torchrun)" in window.log.text()
    wait_idle(qtbot, window)
    record = window.live
    assert record.status == "finished", window.log.text()
    assert "2 processes" in record.device and record.summary["status"] == "finished"
    assert len(record.accuracy["student"]["test"]) == 1  # the student's epoch, followed from metrics.jsonl
    assert window.progress.bar.value() == 1000
    # the engine's Progress events, read back from metrics.jsonl, are what the status bar showed
    assert shown and all(label == text for text, label in shown)
    # a comparison still runs its groups in one process: the field says so
    apply(window, {"comparison.baselines": ["kd"]})
    assert "still trains each group in one process" in window.form.note_text("comparison.baselines")
    apply(window, {"comparison.baselines": []})
    # choosing one device again runs in this process, and Pause is back
    window.devices.device_chosen.emit("cpu")
    assert window.processes == 1 and window.form.config().device == "cpu"
    apply(window, {"teacher.schedule.epochs": 30})
    window.start_run()
    qtbot.waitUntil(lambda: window.live.status == "running", timeout=60000)
    assert window.actions_["pause"].isEnabled() and "cannot pause" not in window.actions_["pause"].toolTip()
    window.stop_run()
    wait_idle(qtbot, window)
