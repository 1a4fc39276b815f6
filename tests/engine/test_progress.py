"""The engine's progress model: each kind of work timed on its own, the ETA from the first epoch on."""

from __future__ import annotations

import pytest

from engine.progress import Stopwatch, WorkItem, WorkProgress, timing


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _train(progress, run, stage, clock, epochs, steps, step_seconds, start_epoch=0):
    progress.update(run, {"event": "StageStarted", "stage": stage, "epochs": epochs, "steps_per_epoch": steps,
                          "start_epoch": start_epoch})
    for epoch in range(start_epoch + 1, epochs + 1):
        for step in range(1, steps + 1):
            clock.t += step_seconds
            progress.update(run, {"event": "StepLosses", "stage": stage, "epoch": epoch, "step": step, "steps": steps})
        yield epoch
        progress.update(run, {"event": "EpochEnd", "stage": stage, "epoch": epoch, "epochs": epochs})
    progress.update(run, {"event": "StageFinished", "stage": stage})


def test_the_eta_prices_each_kind_at_its_own_rate_including_forecast_groups():
    """A comparison of two seeds: a loaded teacher (cheap batches), heads (1 s a step), a shared
    student stage (10 s a step); the second seed is forecast from the first."""
    clock = Clock()
    p = WorkProgress(clock)
    p.total_runs = 4
    kinds = {"teacher": ("teacher", "load"), "heads": ("heads", "train")}
    for seed in (0, 1):
        p.declare(WorkItem(key=((seed, 0), "teacher"), stage="teacher", kind=kinds["teacher"], units=10,
                           runs=((seed, 0),), forecast=seed == 1))
        p.declare(WorkItem(key=((seed, 0), "heads"), stage="heads", kind=kinds["heads"], units=20,
                           runs=((seed, 0),), forecast=seed == 1))
        p.declare(WorkItem(key=("group", seed), stage="student", kind=("student", "train", "lockstep"), units=50,
                           runs=((seed, 0), (seed, 1)), forecast=seed == 1))
    run = (0, 0)
    p.update(run, {"event": "StageStarted", "stage": "teacher", "epochs": 1, "steps_per_epoch": 10})
    for i in range(1, 11):
        clock.t += 0.1
        p.update(run, {"event": "StageProgress", "stage": "teacher", "done": i, "total": 10})
    p.update(run, {"event": "StageFinished", "stage": "teacher"})
    for _ in _train(p, run, "heads", clock, 2, 10, 1.0):
        pass
    truth_after = {}
    for epoch in _train(p, run, "student", clock, 5, 10, 10.0):
        eta = p.remaining_seconds()
        # left: this seed's student epochs, then seed 1: teacher 1 s, heads 20 s, student 500 s
        truth = (5 - epoch) * 100 + 1 + 20 + 500
        truth_after[epoch] = (eta, truth)
    for epoch, (eta, truth) in truth_after.items():
        assert eta == pytest.approx(truth, rel=0.25), epoch  # from the first epoch on
    assert truth_after[1][0] == pytest.approx(truth_after[1][1], rel=0.02)
    assert p.fraction() > 0.4


def test_an_unmeasured_kind_is_priced_from_its_estimate_scaled_by_measured_work():
    clock = Clock()
    p = WorkProgress(clock)
    p.total_runs = 1
    p.declare(WorkItem(key=("r", "teacher"), stage="teacher", kind=("teacher", "train"), units=20, estimate=10.0,
                       runs=("r",)))
    p.declare(WorkItem(key=("r", "student"), stage="student", kind=("student", "train"), units=20, estimate=30.0,
                       runs=("r",)))
    gen = _train(p, "r", "teacher", clock, 2, 10, 1.0)  # really 1 s a step: twice the estimate (0.5)
    next(gen)
    # left: 10 teacher steps at 1 s, and the student: estimated 30 s, corrected by the measured 2x
    assert p.remaining_seconds() == pytest.approx(10 + 60, rel=0.05)


def test_pauses_are_no_ones_time():
    clock = Clock()
    p = WorkProgress(clock)
    p.declare(WorkItem(key=("r", "teacher"), stage="teacher", kind=("teacher", "train"), units=20, runs=("r",)))
    gen = _train(p, "r", "teacher", clock, 2, 10, 1.0)
    next(gen)
    p.update("r", {"event": "Paused", "stage": "teacher"})
    clock.t += 1000
    p.update("r", {"event": "Resumed", "stage": "teacher"})
    assert p.remaining_seconds() == pytest.approx(10, rel=0.05)
    watch = Stopwatch(before=5.0, clock=clock)
    with timing(watch):
        clock.t += 2
    clock.t += 50  # not running: not counted
    assert watch.seconds == pytest.approx(7.0)


def test_the_stage_counter_is_the_groups_whichever_run_reported_last():
    """A group of three runs with different stage lists (the student alone has no teacher, heads or
    export; MGD off has no heads): the status bar's text is the group's, the same after each run's
    report, through the stages they share and those each run does on its own."""
    clock = Clock()
    p = WorkProgress(clock)
    p.total_runs = 3
    stages = {"alone": ("student", "evaluate"), "off": ("teacher", "student", "evaluate", "export"),
              "stable": ("teacher", "heads", "student", "evaluate", "export")}
    for run, names in stages.items():
        for name in names:
            if name != "student":
                p.declare(WorkItem(key=(run, name), stage=name, kind=(name, "train"), units=2, runs=(run,)))
    p.declare(WorkItem(key=("group", "student"), stage="student", kind=("student", "train", "lockstep"), units=3,
                       runs=tuple(stages)))

    def texts(stage, runs, event):
        seen = set()
        for run in runs:
            clock.t += 1.0
            p.update(run, {"stage": stage, **event})
            seen.add(p.text())
        return seen

    step = {"event": "StepLosses", "epoch": 1, "steps": 2}
    assert texts("teacher", ["off"], {**step, "step": 1}) == {"3 runs together · 0/3 runs done · Teacher (1/5) · 1/2"}
    for i in (1, 2, 3):  # in lockstep each run reports each step
        assert texts("student", list(stages), {**step, "step": i, "steps": 3}) == \
            {f"3 runs together · 0/3 runs done · Student (3/5) · {i}/3"}
    shown = texts("evaluate", list(stages), {"event": "StageProgress", "done": 1, "total": 2})  # one after another
    assert shown == {"3 runs together · 0/3 runs done · Evaluation (4/5) · 1/2"}
    p.update("alone", {"event": "RunFinished"})
    assert texts("export", ["off", "stable"], {"event": "StageProgress", "done": 1, "total": 2}) == \
        {"2 runs together · 1/3 runs done · Export (5/5) · 1/2"}
    assert p.snapshot()["runs"] == 2


@pytest.mark.e2e
def test_the_driver_forecasts_the_later_groups_of_a_comparison(tmp_path):
    """While the first seed trains, the second seed's work is already in the ETA: its teacher and
    heads, and its students' shared stage priced as the first seed's."""
    from engine.comparison import Comparison
    from engine.driver import Driver
    from tests.engine.conftest import tiny_config

    cfg = tiny_config(**{"export.enabled": False, "comparison.baselines": ["kd"],
                         "comparison.modes": ["off", "stable"], "comparison.student_alone": False,
                         "comparison.seeds": [0, 1], "evaluation.noise_levels": [0.0]})
    comparison = Comparison(cfg, tmp_path / "cmp")
    comparison.save()
    seen = {}

    def at_first_student_epoch(event):
        if event.type == "EpochEnd" and event.stage == "student" and not seen:
            items = driver.progress.items
            seen["now"] = {k: (i.units, i.kind, i.forecast) for k, i in items.items()}

    groups = [[comparison.spec(job, [at_first_student_epoch]) for job in members] for members in comparison.groups()]
    driver = Driver(reuse=comparison.reuse())
    driver.run(groups)
    items = seen["now"]
    first = next(v for k, v in items.items() if k[0] == "group" and k[1] == 0)
    later = next(v for k, v in items.items() if k[0] == "group" and k[1] == 1)
    assert later[2] and not first[2]  # forecast, beside the group being trained
    assert later[:2] == first[:2]  # the same units, priced at the measured kind
    assert any(k == ((1, 0), "teacher") for k in items) and any(k[1] == "heads" for k in items if k[0][0] == 1)


def test_a_stage_that_does_not_train_counts_its_units_without_epochs():
    clock = Clock()
    p = WorkProgress(clock)
    p.declare(WorkItem(key=("r", "export"), stage="export", kind=("export", "export"), units=4, runs=("r",)))
    p.update("r", {"event": "StageStarted", "stage": "export", "epochs": 1, "steps_per_epoch": 4})
    p.update("r", {"event": "StageProgress", "stage": "export", "done": 2, "total": 4})
    assert p.text() == "Export (1/1) · 2/4"


def test_a_resumed_groups_first_eta_is_the_work_that_remains():
    """Two runs of a group stopped 20 steps into their student's second epoch (4 epochs of 23 steps)
    resume together at 1 s a step: the 43 steps done in the earlier session are done, not this
    session's measured work (counted as measured they made the rate 8 times too fast)."""
    from engine.events import StageStarted

    clock = Clock()
    p = WorkProgress(clock)
    p.total_runs = 2
    runs = ("a", "b")
    p.declare(WorkItem(key=("group", runs), stage="student", kind=("student", "train", "lockstep"), units=4 * 23,
                       runs=runs))
    for run in runs:
        p.update(run, StageStarted("student", 4, 23, start_epoch=1, start_step=20))
    assert "epoch 2/4 · step 20/23" in p.text() and p.fraction() == pytest.approx(43 / 92)
    for step in (21, 22, 23):
        clock.t += 1.0
        for run in runs:  # in lockstep every run reports each step
            p.update(run, {"event": "StepLosses", "stage": "student", "epoch": 2, "step": step, "steps": 23})
    assert p.remaining_seconds() == pytest.approx(2 * 23, rel=0.05)  # the first ETA: the 46 steps left
