"""The studio's window model without a window (mgd_gui/model): the run state machine, the
document, the queue controller on the engine's comparison, the runs shown. None of these
tests creates a Qt object (one of them checks that the model imports no Qt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mgd_gui.model.document import Document
from mgd_gui.model.queue import RunQueue
from mgd_gui.model.queue_controller import QueueController, comparison_folder
from mgd_gui.model.run_state import TRANSITIONS, RunState
from mgd_gui.model.runs import RunsModel
from mgd_gui.run.record import RunRecord

DEMO = Path("resources/presets/demo.yaml")


def test_the_window_model_imports_no_qt():
    code = ("import sys, mgd_gui.model.document, mgd_gui.model.run_state, mgd_gui.model.queue, "
            "mgd_gui.model.queue_controller, mgd_gui.model.runs; "
            "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'pyqtgraph'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the run state machine ------------------------------------------------------------------------

def test_a_run_goes_running_pausing_paused_running_stopping_idle():
    state, seen = RunState(), []
    state.listeners.append(lambda old, new: seen.append(new))
    assert state.start() and state.toggle_pause() == "pause" and state.state == "pausing"
    assert state.paused() and state.state == "paused"
    assert state.toggle_pause() == "resume" and state.state == "running"
    assert state.stop() and state.state == "stopping"
    assert not state.pause() and not state.resume() and not state.start()  # nothing else while stopping
    assert state.ended() and state.idle
    assert seen == ["running", "pausing", "paused", "running", "stopping", "idle"]


def test_requests_that_do_not_apply_change_nothing():
    state = RunState()
    for request in ("pause", "resume", "stop", "paused", "resumed"):
        assert not getattr(state, request)() and state.state == "idle"
    assert state.toggle_pause() is None
    state.start()
    assert not state.start() and not state.resumed() and state.state == "running"
    # every transition's ends are states, and every state can end
    assert all(a in ("idle", "running", "pausing", "paused", "stopping") for a, _ in TRANSITIONS)
    assert {a for a, e in TRANSITIONS if e == "ended"} == {"idle", "running", "pausing", "paused", "stopping"}


def test_the_actions_follow_the_state():
    state = RunState()
    idle = state.actions()
    assert idle.run and not idle.pause and not idle.stop and not idle.busy
    assert not state.actions(engine_active=True).run  # the engine is still ending its last run
    state.start()
    running = state.actions()
    assert not running.run and running.pause and running.stop and running.pause_label == "Pause"
    assert not state.actions(pausable=False).pause  # a run of several processes cannot pause
    state.pause()
    assert state.actions().pause_label == "Resume" and state.actions().pause
    state.stop()
    assert not state.actions().pause and not state.actions().stop and state.actions().busy


# -- the document ---------------------------------------------------------------------------------

def test_the_document_knows_where_the_set_up_came_from_and_whether_it_changed(tmp_path):
    from engine.config import load_config, set_value

    cfg = load_config(DEMO)
    doc = Document()
    doc.loaded(DEMO, cfg, is_preset=True)
    assert doc.file is None and doc.origin == "demo (preset)" and doc.shown_preset(cfg) == str(DEMO)
    assert not doc.is_dirty(cfg) and doc.is_dirty(cfg, unreadable=True)
    edited = set_value(load_config(DEMO), "student.schedule.epochs", 7)
    assert doc.is_dirty(edited) and doc.shown_preset(edited) is None
    doc.saved(tmp_path / "mine.yaml", edited)
    assert doc.file == tmp_path / "mine.yaml" and not doc.is_dirty(edited) and doc.title().startswith("mine.yaml")
    doc.duplicated(edited)
    assert doc.file is None and doc.is_dirty(edited) and doc.origin.endswith("(new)")  # never saved: asks
    doc.from_run("cmp › s0-kd-off", cfg)
    assert doc.origin == "run cmp › s0-kd-off" and doc.file is None and not doc.is_dirty(cfg)


# -- the queue controller -------------------------------------------------------------------------

def comparison_config(**extra):
    from engine.config import load_config, set_value

    cfg = load_config(DEMO)
    for key, value in {"comparison.baselines": ["kd"], "comparison.modes": ["off", "stable"],
                       "comparison.seeds": [0, 1], "comparison.student_alone": False, **extra}.items():
        cfg = set_value(cfg, key, value)
    return cfg


@pytest.fixture
def controller(tmp_path):
    said = []
    ctl = QueueController(RunQueue(tmp_path / "queue.json"), lambda text, level="info": said.append(text))
    changes = []
    ctl.listeners.append(changes.append)
    return ctl, said, changes


def test_the_controller_launches_one_seed_at_a_time_with_the_engines_specs(controller, tmp_path):
    ctl, said, changes = controller
    jobs, folder = ctl.add_comparison(comparison_config(), tmp_path / "runs")
    assert folder == comparison_folder(comparison_config(), tmp_path / "runs") and len(jobs) == 4
    assert ctl.next_launch() is None  # the queue is not running yet
    assert ctl.start()
    launch = ctl.next_launch()
    assert [q.folder for q, _ in launch.jobs] == ["s0-kd-off", "s0-kd-stable"]  # one seed: together
    assert [spec.tag for spec in launch.specs] == [q.id for q, _ in launch.jobs]
    assert not any(spec.resume for spec in launch.specs)
    assert ctl.running == [q.id for q, _ in launch.jobs]
    assert [j.state for j in ctl.queue.jobs] == ["running", "running", "pending", "pending"]
    assert [r.label for r in launch.records.values()] == ["demo › s0-kd-off", "demo › s0-kd-stable"]
    assert "together" in launch.text and changes


def test_a_cancel_of_a_training_run_stops_the_group_and_the_others_resume_next(controller, tmp_path):
    ctl, said, _ = controller
    ctl.add_comparison(comparison_config(), tmp_path / "runs")
    ctl.start()
    launch = ctl.next_launch()
    first, second = [q.id for q, _ in launch.jobs]
    waiting = ctl.queue.jobs[3].id
    assert ctl.cancel([first, waiting]) == [first]  # the window stops the group for the first
    assert ctl.queue.job(waiting).state == "cancelled"
    ctl.job_ended(first, {"status": "stopped", "stopped_in": "teacher"})
    ctl.job_ended(second, {"status": "stopped", "stopped_in": "teacher"})
    ctl.group_ended([(first, {"status": "stopped"}), (second, {"status": "stopped"})])
    assert ctl.queue.job(first).state == "cancelled" and ctl.queue.job(second).state == "pending"
    assert ctl.queue.state == "running"  # a cancel is not a stop: the queue goes on
    assert not ctl.running and not ctl.cancelling


def test_a_stop_by_the_user_pauses_the_queue_and_a_failure_does_not(controller, tmp_path):
    ctl, said, _ = controller
    ctl.add_comparison(comparison_config(), tmp_path / "runs")
    ctl.start()
    launch = ctl.next_launch()
    a, b = [q.id for q, _ in launch.jobs]
    ctl.job_ended(a, {"status": "failed", "failed_in": "student", "error": "loss is NaN"})
    assert ctl.queue.job(a).state == "failed" and "loss is NaN" in ctl.queue.job(a).message
    assert ctl.queue.state == "running"
    ctl.job_ended(b, {"status": "stopped", "stopped_in": "student"})
    assert ctl.queue.job(b).state == "pending" and ctl.queue.state == "paused"
    assert any("Queue paused" in line for line in said)


def test_jobs_that_never_began_are_pending_again_and_a_whole_group_failure_fails_its_jobs(controller, tmp_path):
    ctl, _, _ = controller
    ctl.add_comparison(comparison_config(), tmp_path / "runs")
    ctl.start()
    launch = ctl.next_launch()
    a, b = [q.id for q, _ in launch.jobs]
    ctl.job_ended(a, {"status": "finished", "student": {"best_acc": 55.0}})
    ctl.group_ended([(a, {"status": "finished"})], closing=True)  # b never began; the window closes
    assert ctl.queue.job(a).state == "done" and ctl.queue.job(a).result == 55.0
    assert ctl.queue.job(b).state == "pending" and "not begun" in ctl.queue.job(b).message
    assert ctl.queue.state == "running"  # closing: the queue resumes at the next launch
    launch = ctl.next_launch()
    assert [q.id for q, _ in launch.jobs] == [b]
    ctl.group_failed({"stage": "teacher", "message": "out of memory"})
    assert ctl.queue.job(b).state == "failed" and "out of memory" in ctl.queue.job(b).message


def test_a_finished_run_of_the_comparison_is_skipped_as_done(controller, tmp_path):
    import json

    ctl, _, _ = controller
    jobs, folder = ctl.add_comparison(comparison_config(**{"comparison.seeds": [0]}), tmp_path / "runs")
    finished = folder / jobs[0].folder
    ctl.start()
    ctl.next_launch()  # both of seed 0 run; say the first finished and was then requeued
    ctl.group_ended([])
    (finished / "summary.json").parent.mkdir(parents=True, exist_ok=True)
    (finished / "summary.json").write_text(json.dumps({"status": "finished", "student": {"best_acc": 60.0}}))
    ctl.start()
    launch = ctl.next_launch()  # the engine's Comparison.state says the first finished: skipped as done
    assert [q.folder for q, _ in launch.jobs] == [jobs[1].folder]
    assert ctl.queue.job(jobs[0].id).state == "done" and ctl.queue.job(jobs[0].id).result == 60.0


def test_a_queued_run_finished_from_the_runs_panel_is_done(controller, tmp_path):
    ctl, _, changes = controller
    jobs, _ = ctl.add_comparison(comparison_config(), tmp_path / "runs")
    ctl.finished_outside(jobs[2].run_dir, {"student": {"best_acc": 70.5}})
    assert ctl.queue.job(jobs[2].id).state == "done" and ctl.queue.job(jobs[2].id).result == 70.5
    assert changes[-1] == jobs[2].comparison_dir  # its comparison's open table is refreshed


# -- the runs shown -------------------------------------------------------------------------------

def test_the_runs_model_tells_events_to_their_runs_and_reads_finished_runs_once(tmp_path):
    model = RunsModel()
    a, b = RunRecord(label="a"), RunRecord(label="b")
    model.begin_group({"job-a": a, "job-b": b})
    assert model.live is a and model.record_of("job-b") is b and model.record_of(None) is a
    a.run_dir, b.run_dir = tmp_path / "a", tmp_path / "b"
    b.status = "finished"
    assert model.active_dirs("paused") == {tmp_path / "a": "paused"}
    model.fail_unended({"message": "x"})
    assert a.status == "failed" and b.status == "finished"
    assert model.record_for(tmp_path / "a", training=True, label=str, status=str) is a  # the live one
    run = tmp_path / "done"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    first = model.record_for(run, training=False, label=lambda p: "done run", status=lambda p: "finished")
    assert first.label == "done run" and first.status == "finished"
    assert model.record_for(run, training=False, label=str, status=str) is first  # cached until it changes
    import shutil

    shutil.rmtree(run)
    model.forget_missing()
    assert run not in model._cache
