"""The studio's queue: a comparison run in the window, the runs of one pair and seed together
(their students in lockstep), the teacher trained once per seed and reused, visible,
reorderable, pausable, cancellable, surviving a restart, and the comparison table filling in
as runs finish."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from engine.config import load_config, save_config
from engine.errors import TrainingError
from engine.events import RunFailed, RunFinished, RunStarted
from mgd_gui import paths
from tests.gui.helpers import TINY, apply

COMPARISON = {"comparison.baselines": ["kd"], "comparison.modes": ["off", "stable"], "comparison.seeds": [0, 1]}


class FakeEngine:
    """Stands in for run_experiment: writes a run folder as the engine would (config, summary, a
    teacher.pt when it trains its own teacher), one call at a time, each waiting for a release."""

    def __init__(self, gated: bool = False, fail: str = "", progress=None):
        self.calls: list[dict] = []
        self.groups: list[list[str]] = []
        self.specs: list[list] = []  # the RunSpecs of each group
        self.progress = progress  # (specs, i) -> the events the i-th run of a group sends after it starts
        self.gated = gated
        self.fail = fail
        self.released = threading.Semaphore(0)

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self.released.release()

    def __call__(self, config, *, run_dir, runs_root, subscribers, control, resume, started=None):
        run_dir = Path(run_dir)
        if resume:
            config = load_config(run_dir / "config.yaml")
        self.calls.append({"folder": run_dir.name, "teacher": config.teacher.checkpoint, "resume": resume})
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
        subscribers[0](RunStarted(str(run_dir), {"name": config.name}, "cpu", resumed=resume))
        if started is not None:
            started()
        if self.gated:
            while not self.released.acquire(timeout=0.02):
                if control.stop_requested:
                    (run_dir / "summary.json").write_text(json.dumps({"status": "stopped"}))
                    return {"status": "stopped", "stopped_in": "teacher"}
        if self.fail and self.fail == run_dir.name:
            raise TrainingError("the loss became nan", kind="nan")
        own_teacher = config.teacher.checkpoint is None and config.distiller.name != "none"
        if own_teacher:
            (run_dir / "checkpoints").mkdir(exist_ok=True)
            (run_dir / "checkpoints" / "teacher.pt").write_bytes(b"teacher")
        acc = 70.0 + 5 * (config.granularity.mode == "stable") + config.seed
        summary = {"name": config.name, "status": "finished", "distiller": config.distiller.name,
                   "mode": config.granularity.mode, "seed": config.seed, "data": {"dataset": "demo", "test_size": 355},
                   "teacher": {"arch": None if config.distiller.name == "none" else "resnet20", "test_acc": 90.0},
                   "student": {"arch": "resnet8", "best_acc": acc, "test_acc": acc - 0.5, "best_epoch": 2}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    def group(self, specs, *, control, reuse=None, lockstep=True, on_progress=None):
        """Stands in for engine.run.run_group, as the driver runs a group: the runs one after another,
        none begun after a stop, a new run pointed at the teacher its comparison trained before
        (``reuse.apply``) and what it trained noted (``reuse.remember``), each run's end told as an
        event, then its comparison's table rebuilt. ``progress(specs, i)`` gives the events (Progress
        events among them, as the driver sends them on that run's bus) the i-th run sends once begun."""
        from engine.compare import rebuild_table

        self.groups.append([Path(spec.run_dir).name for spec in specs])
        self.specs.append(list(specs))
        summaries = []
        for i, spec in enumerate(specs):
            if control.stop_requested:
                break
            cfg, run_dir = spec.config, Path(spec.run_dir)
            if reuse is not None and not spec.resume:
                cfg = reuse.apply(cfg)
            subscribers = list(spec.subscribers)
            started = None
            if self.progress is not None:
                def started(i=i, subscribers=subscribers):
                    for event in self.progress(specs, i):
                        for fn in subscribers:
                            fn(event)
            try:
                summary = self(cfg, run_dir=run_dir, runs_root="", subscribers=subscribers, control=control,
                               resume=spec.resume, started=started)
            except TrainingError as exc:
                for fn in subscribers:
                    fn(RunFailed(str(run_dir), "student", str(exc), exc.kind))
                summaries.append({"status": "failed", "failed_in": "student", "error": str(exc)})
                continue
            if reuse is not None:
                reuse.remember(load_config(run_dir / "config.yaml"), run_dir)
            for fn in subscribers:
                fn(RunFinished(str(run_dir), summary, stopped=summary["status"] == "stopped"))
            if spec.comparison_dir is not None:
                rebuild_table(spec.comparison_dir)
            summaries.append(summary)
        return summaries


def test_run_queues_a_comparison_and_runs_each_seed_together(qtbot, make_window, studio_home):
    engine = FakeEngine()
    window = make_window(engine=engine, group_engine=engine.group)
    apply(window, COMPARISON)
    assert window.form.is_valid() and window.actions_["run"].isEnabled()
    note = window.form.note_text("comparison.baselines")
    assert note.startswith("Run queues the comparison: 6 runs (3 per seed × 2 seeds)")
    window.actions_["run"].trigger()
    qtbot.waitUntil(lambda: window.queue.state == "idle" and not window.runner.active, timeout=20000)

    folder = window.runs_root / "comparison-demo"
    order = [c["folder"] for c in engine.calls]
    assert order == ["s0-none-off", "s0-kd-off", "s0-kd-stable", "s1-none-off", "s1-kd-off", "s1-kd-stable"]
    # the runs of one pair and seed are one lockstep group
    assert engine.groups == [order[:3], order[3:]]
    teachers = {c["folder"]: c["teacher"] for c in engine.calls}
    # the teacher is trained once per seed (its first run with a teacher) and reused after
    assert teachers["s0-kd-off"] is None and teachers["s1-kd-off"] is None
    assert teachers["s0-kd-stable"] == str(folder / "s0-kd-off" / "checkpoints" / "teacher.pt")
    assert teachers["s1-kd-stable"] == str(folder / "s1-kd-off" / "checkpoints" / "teacher.pt")
    assert window.queue.counts()["done"] == 6
    panel = window.queue_panel
    assert [panel.tree.topLevelItem(i).text(5) for i in range(6)] == ["done"] * 6
    assert panel.tree.topLevelItem(2).text(6) == "75.00%"
    assert "Queue finished: 6 done" in window.log.text()
    # the comparison's files, as mgd-train writes them, and its runs in the runs panel
    assert ("| resnet20 -> resnet8 | kd | 70.00 ± 0.71 / 70.50 ± 0.71 | - | 75.00 ± 0.71 / 75.50 ± 0.71 | - | "
            "+5.00 (not enough seeds: 2 seeds, 3 needed) |") in (folder / "comparison.md").read_text()
    labels = {window.runs.tree.topLevelItem(i).text(0) for i in range(window.runs.tree.topLevelItemCount())}
    assert "demo › s1-kd-stable" in labels and len(labels) == 6
    saved = json.loads(paths.queue_file().read_text())
    assert saved["state"] == "idle" and [j["state"] for j in saved["jobs"]] == ["done"] * 6


def test_the_queue_is_cancelled_paused_reordered_and_fills_the_table(qtbot, make_window, studio_home):
    engine = FakeEngine(gated=True, fail="s1-kd-off")
    window = make_window(engine=engine, group_engine=engine.group)
    apply(window, COMPARISON)
    window.start_run()
    panel, queue = window.queue_panel, window.queue
    qtbot.waitUntil(lambda: len(engine.calls) == 1, timeout=10000)
    # the runs of seed 0 train together; seed 1 waits
    assert [panel.tree.topLevelItem(i).text(5) for i in range(6)] == ["running"] * 3 + ["pending"] * 3
    # the group goes to the engine as RunSpecs tagged with the queue's job ids
    assert [(spec.tag, spec.resume, spec.job.folder) for spec in engine.specs[0]] == [
        (f"comparison-demo/{name}", False, name) for name in ("s0-none-off", "s0-kd-off", "s0-kd-stable")]
    assert window.progress.label.text() == "Starting…"  # no Progress event from the engine yet
    assert [r.label for r in window.plots.records] == ["demo › s0-none-off", "demo › s0-kd-off", "demo › s0-kd-stable"]

    # cancel one running run: its group stops (checkpoints kept); the queue goes on without it
    panel.select(["comparison-demo/s0-kd-stable"])
    panel.buttons["cancel"].click()
    qtbot.waitUntil(lambda: len(engine.calls) == 2, timeout=10000)
    assert queue.job("comparison-demo/s0-kd-stable").state == "cancelled"
    assert engine.calls[1] == {"folder": "s0-none-off", "teacher": None, "resume": True}
    assert engine.groups[1] == ["s0-none-off", "s0-kd-off"] and queue.state == "running"

    # pause the queue: the current group finishes, no other starts
    panel.buttons["pause"].click()
    assert queue.state == "paused" and panel.buttons["start"].text() == "Resume"
    # reorder: s1-kd-stable up to run first among seed 1's runs
    panel.select(["comparison-demo/s1-kd-stable"])
    for _ in range(4):
        panel.buttons["up"].click()
    assert [j.folder for j in queue.pending()][0] == "s1-kd-stable"
    assert not panel.buttons["up"].isEnabled()  # first of the pending
    engine.release(2)
    qtbot.waitUntil(lambda: not window.runner.active and window.state == "idle", timeout=10000)
    qtbot.wait(100)
    assert len(engine.calls) == 3  # paused: nothing else started
    assert [queue.job(f"comparison-demo/s0-{r}").state for r in ("none-off", "kd-off")] == ["done", "done"]

    panel.buttons["start"].click()
    folder = window.runs_root / "comparison-demo"
    qtbot.waitUntil(lambda: (folder / "s1-kd-stable" / "config.yaml").exists(), timeout=10000)
    assert engine.groups[2] == ["s1-kd-stable", "s1-none-off", "s1-kd-off"]
    assert engine.calls[3]["teacher"] is None  # no teacher of seed 1 yet: it trains its own
    # the table of the comparison shows the finished runs, and fills in as the next finish
    panel.buttons["table"].click()
    dialog = window.compare_dialog
    assert dialog.summary_label.text().startswith("3 runs selected, 2 in the table")  # one of them running
    engine.release()
    qtbot.waitUntil(lambda: len(engine.calls) == 5, timeout=10000)
    # the open table follows the run that ended (its refresh comes after the run's end is handled)
    # (how many runs it lists depends on whether the next group's folders exist yet: they are begun by then)
    qtbot.waitUntil(lambda: ", 3 in the table" in window.compare_dialog.summary_label.text(), timeout=10000)
    def reopened() -> bool:
        panel.buttons["table"].click()
        return window.compare_dialog.summary_label.text().startswith("4 runs selected, 3 in the table")
    qtbot.waitUntil(reopened, timeout=10000)
    engine.release(5)
    qtbot.waitUntil(lambda: queue.state == "idle" and not window.runner.active, timeout=10000)
    states = {j.folder: j.state for j in queue.jobs}
    assert states == {"s0-none-off": "done", "s0-kd-off": "done", "s0-kd-stable": "cancelled",
                      "s1-none-off": "done", "s1-kd-off": "failed", "s1-kd-stable": "done"}
    # the later run of seed 1 loads the teacher its group's first run trained
    assert engine.calls[5] == {"folder": "s1-kd-off", "resume": False,
                               "teacher": str(folder / "s1-kd-stable" / "checkpoints" / "teacher.pt")}
    failed = queue.job("comparison-demo/s1-kd-off")
    assert "the loss became nan" in failed.message
    assert window.error_box is None  # a queued run's failure does not stop the queue with a dialog
    assert "s0-kd-stable" not in [c["folder"] for c in engine.calls]
    panel.buttons["clear"].click()
    assert queue.jobs == [] and panel.empty.isVisible()


def test_the_queue_survives_closing_the_window(qtbot, make_window, studio_home):
    engine = FakeEngine(gated=True)
    window = make_window(engine=engine, group_engine=engine.group)
    apply(window, {**COMPARISON, "comparison.seeds": [0]})
    window.start_run()
    qtbot.waitUntil(lambda: len(engine.calls) == 1, timeout=10000)
    window.close()  # stops the run (resumable), the queue waits for the next launch
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=10000)
    saved = json.loads(paths.queue_file().read_text())
    assert saved["state"] == "running"
    assert [j["state"] for j in saved["jobs"]] == ["pending"] * 3
    assert "resumes from its checkpoint" in saved["jobs"][0]["message"]

    # the next launch, keeping it paused: nothing runs until Resume
    later = make_window(engine=engine, group_engine=engine.group)
    qtbot.wait(100)
    assert len(engine.calls) == 1 and later.queue.state == "paused"
    assert later.queue_panel.buttons["start"].text() == "Resume" and later.queue_panel.buttons["start"].isEnabled()
    later.close()
    qtbot.waitUntil(lambda: not later.isVisible(), timeout=10000)

    # the next launch, continuing: the interrupted run resumes, then the others run
    again = make_window(engine=engine, group_engine=engine.group)
    again.ask_queue_on_launch = lambda: "continue"  # asked once the window is up
    qtbot.waitUntil(lambda: len(engine.calls) == 2, timeout=10000)
    assert engine.calls[1] == {"folder": "s0-none-off", "teacher": None, "resume": True}
    engine.release(3)
    qtbot.waitUntil(lambda: again.queue.state == "idle" and not again.runner.active, timeout=10000)
    assert [j.state for j in again.queue.jobs] == ["done"] * 3


def test_a_real_queued_comparison_reuses_the_teacher(qtbot, window, studio_home):
    apply(window, {**TINY, "comparison.baselines": ["kd"], "comparison.modes": ["off", "granularity"],
                   "comparison.seeds": [3], "comparison.student_alone": False})
    window.start_run()
    qtbot.waitUntil(lambda: window.queue.state == "idle" and not window.runner.active, timeout=300000)
    folder = window.runs_root / "comparison-demo"
    first, second = folder / "s3-kd-off", folder / "s3-kd-granularity"
    assert [j.state for j in window.queue.jobs] == ["done", "done"], window.log.text()
    assert load_config(second / "config.yaml").teacher.checkpoint == str(first / "checkpoints" / "teacher.pt")
    plan = [json.loads(line) for line in (second / "metrics.jsonl").read_text().splitlines()][0]["plan"]
    assert "teacher" not in [s["name"] for s in plan["stages"] if s["action"] == "train"]
    assert (folder / "comparison.csv").is_file()
    # the two runs of the seed trained their students together, one teacher pass per batch
    for run in (first, second):
        summary = json.loads((run / "summary.json").read_text())
        assert summary["lockstep"]["students"] == 2 and summary["lockstep"]["memory_per_extra_student_mib"] > 0
    assert "one teacher pass per batch feeds their students" in window.log.text()
    assert window.runs.active == {}


def test_a_multi_pair_comparison_runs_from_the_queue_with_typed_jobs(qtbot, window, tmp_path):
    """The paper-table shape (``comparison.pairs``), cut down to seconds: each job carries its pair,
    seed, baseline and mode from the engine (no folder name is parsed), each pair and seed trains
    together, every run folder records its job, and the table has both pairs. The status bar
    shows the engine's Progress events as they are."""
    from engine.config import set_value
    from engine.jobs import read_job
    from engine.progress import describe
    from tests.engine.conftest import tiny_config

    cfg = tiny_config(**{**TINY, "comparison.baselines": ["kd"], "comparison.modes": ["off"],
                         "comparison.seeds": [4]})
    cfg = set_value(cfg, "comparison.pairs", [{"teacher": "resnet14", "student": "resnet8"},
                                              {"teacher": "resnet8", "student": "resnet8"}])
    path = tmp_path / "pairs.yaml"
    save_config(cfg, path)
    assert window.load_path(path)
    assert window.form.note_text("comparison.baselines").startswith(
        "Run queues the comparison: 4 runs (2 per pair and seed × 2 pairs × 1 seed)")
    shown = []

    def on_progress(e):
        if e["event"] == "Progress":
            shown.append((describe(e), window.progress.label.text(), window.progress.bar.value(), e["fraction"]))

    window.runner.event.connect(on_progress)  # after the window's own slot: what it shows for each
    window.start_run()
    qtbot.waitUntil(lambda: window.queue.state == "idle" and not window.runner.active, timeout=300000)
    queue = window.queue
    assert [j.state for j in queue.jobs] == ["done"] * 4, window.log.text()
    assert [(j.teacher, j.student, j.seed, j.baseline, j.mode) for j in queue.jobs] == [
        ("resnet14", "resnet8", 4, "none", "off"), ("resnet14", "resnet8", 4, "kd", "off"),
        ("resnet8", "resnet8", 4, "none", "off"), ("resnet8", "resnet8", 4, "kd", "off")]
    folder = window.runs_root / "comparison-demo"
    for job in queue.jobs:  # the engine's record of each run folder is the queue's job
        assert read_job(job.run_dir).record() == job.job.record()
        assert job.run_dir.parent == folder
    # one group per pair and seed, their students in lockstep
    for job in queue.jobs:
        summary = json.loads((job.run_dir / "summary.json").read_text())
        assert summary["lockstep"]["students"] == 2, job.folder
    assert load_config(queue.jobs[3].run_dir / "config.yaml").teacher.checkpoint is None  # no other pair's teacher
    table = (folder / "comparison.md").read_text()
    assert "resnet14 -> resnet8" in table and "resnet8 -> resnet8" in table
    # the status bar showed each Progress event as the engine described it
    assert shown and all(label == text for text, label, _, _ in shown)
    assert all(value == round(1000 * fraction) for _, _, value, fraction in shown)
    assert any(t.startswith("2 runs together") and "Student (2/3)" in t for t, _, _, _ in shown)
    assert shown[-1][0].startswith("run 2/2 · Evaluation")  # the group's last run, as the engine counts it
    window.queue_panel.buttons["table"].click()
    assert window.compare_dialog.summary_label.text().startswith("4 runs selected")


def test_the_status_bar_shows_the_engines_progress_not_the_latest_runs(qtbot, make_window):
    """A group's events arrive from each of its runs; the status bar shows the engine's latest
    Progress event (its text with the ETA, its fraction), never the position of whichever run
    reported last."""
    from engine.events import Progress, StepLosses

    def progress(specs, i):
        return [StepLosses("teacher", 1, 7, 9, {"total": 1.0}, 0.1),
                Progress(fraction=0.25 + 0.25 * i, eta=90.0 - 30 * i, stage="student",
                         text=f"3 runs together · Student (4/6) · epoch 1/2 · step {3 + i}/10", runs=3,
                         total_runs=3),
                StepLosses("heads", 1, 8, 9, {"total": 1.0}, 0.1)]  # a run's own position, after it

    engine = FakeEngine(gated=True, progress=progress)
    window = make_window(engine=engine, group_engine=engine.group)
    apply(window, {**COMPARISON, "comparison.seeds": [0]})
    window.start_run()
    label, bar = window.progress.label, window.progress.bar
    qtbot.waitUntil(lambda: "Student" in label.text(), timeout=10000)
    qtbot.wait(50)  # the run's later StepLosses has arrived too
    assert label.text() == "3 runs together · Student (4/6) · epoch 1/2 · step 3/10 · ETA 1:30"
    assert bar.value() == 250
    engine.release()
    qtbot.waitUntil(lambda: "step 4/10" in label.text(), timeout=10000)
    qtbot.wait(50)
    assert label.text() == "3 runs together · Student (4/6) · epoch 1/2 · step 4/10 · ETA 1:00"
    assert bar.value() == 500
    window.toggle_pause()  # pausing: its line stays while the bar follows the engine
    assert label.text() == "Pausing after the current step…"
    window.toggle_pause()
    engine.release(2)
    qtbot.waitUntil(lambda: window.queue.state == "idle" and not window.runner.active, timeout=10000)
    assert label.text() == "3 runs together ended: 3 finished" and bar.value() == 1000


def test_a_single_run_shows_the_engines_progress(qtbot, make_window):
    from engine.events import Progress

    release = threading.Event()

    def engine(config, *, run_dir, runs_root, subscribers, control, resume):
        subscribers[0](RunStarted(str(Path(runs_root) / "one"), {"name": config.name}, "cpu"))
        subscribers[0](Progress(fraction=0.4, eta=3725.0, stage="teacher", text="Teacher (1/4) · epoch 2/5"))
        release.wait(10)
        return {"status": "finished", "student": {"arch": "resnet8", "best_acc": 71.0, "best_epoch": 1}}

    window = make_window(engine=engine)
    window.start_run()
    qtbot.waitUntil(lambda: window.progress.bar.value() == 400, timeout=10000)
    assert window.progress.label.text() == "Teacher (1/4) · epoch 2/5 · ETA 1:02:05"
    release.set()
    qtbot.waitUntil(lambda: not window.runner.active and window.state == "idle", timeout=10000)
    assert window.progress.label.text().startswith("Finished") and window.progress.bar.value() == 1000


def test_a_queue_saved_by_the_previous_version_is_read(studio_home):
    """Version 1 of the queue file held each job's config (the pair in it): its jobs load, with
    their pair, and are saved in the new form."""
    from mgd_gui.model.queue import VERSION, RunQueue

    path = paths.queue_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    old = {"id": "comparison-demo/s0-kd-off", "comparison": "demo", "comparison_dir": "/x/comparison-demo",
           "folder": "s0-kd-off", "config": {"teacher": {"arch": "resnet20"}, "student": {"arch": "resnet8"}},
           "seed": 0, "baseline": "kd", "mode": "off", "state": "running", "message": "", "result": None}
    path.write_text(json.dumps({"version": 1, "state": "running", "jobs": [old, {"id": "broken"}]}))
    queue = RunQueue.load(path)
    assert [(j.id, j.teacher, j.student, j.state) for j in queue.jobs] == [
        ("comparison-demo/s0-kd-off", "resnet20", "resnet8", "pending")]
    assert queue.jobs[0].job.group == ("resnet20", "resnet8", 0) and queue.state == "running"
    queue.save()
    saved = json.loads(path.read_text())
    assert saved["version"] == VERSION == 2 and "config" not in saved["jobs"][0]
    assert RunQueue.load(path).jobs[0].teacher == "resnet20"


def test_a_run_cancelled_in_the_queue_and_resumed_from_the_runs_panel_fills_the_table(qtbot, window):
    """Cancel a queued run mid-way (its checkpoint kept), resume it from the Runs panel: it finishes,
    the comparison's table gets its result (the engine rebuilds it when any of its runs ends)
    and the queue shows it done."""
    from engine.events import EpochEnd

    apply(window, {**TINY, "teacher.schedule.epochs": 6, "comparison.baselines": ["kd"],
                   "comparison.modes": ["off"], "comparison.seeds": [5], "comparison.student_alone": False})
    epochs = []

    def cancel_after_first_epoch(e):
        if e["event"] == EpochEnd.__name__ and not epochs:
            epochs.append(e)
            window.cancel_jobs(["comparison-demo/s5-kd-off"])

    window.runner.event.connect(cancel_after_first_epoch)
    window.start_run()
    qtbot.waitUntil(lambda: window.queue.state == "idle" and not window.runner.active and window.state == "idle",
                    timeout=300000)
    window.runner.event.disconnect(cancel_after_first_epoch)
    job = window.queue.job("comparison-demo/s5-kd-off")
    assert job.state == "cancelled", window.log.text()
    assert json.loads((job.run_dir / "summary.json").read_text())["status"] == "stopped"
    folder = Path(job.comparison_dir)
    assert "| kd |" not in (folder / "comparison.md").read_text()  # rebuilt when it stopped: no result yet

    window.resume_run(job.run_dir)
    qtbot.waitUntil(lambda: not window.runner.active and window.state == "idle", timeout=300000)
    summary = json.loads((job.run_dir / "summary.json").read_text())
    assert summary["status"] == "finished", window.log.text()
    assert f"{summary['student']['best_acc']:.2f}" in (folder / "comparison.md").read_text()
    assert job.state == "done" and job.result == summary["student"]["best_acc"]
