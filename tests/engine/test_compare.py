"""Comparison tables: grouping, statistics, honesty markers, and a small real comparison."""

from __future__ import annotations


import pytest

from engine.cli import EXIT_OK, main
from engine.compare import comparison_table, to_csv, to_markdown
from engine.config import resolve, save_config, set_value
from engine.jobs import comparison_jobs
from tests.engine.conftest import tiny_config


def fake(distiller, mode, acc, seed=0, final=None, pair=("resnet32x4", "resnet8x4"), dataset="cifar100"):
    return {"status": "finished", "distiller": distiller, "mode": mode, "seed": seed,
            "pair": {"teacher": pair[0], "student": pair[1]}, "data": {"dataset": dataset, "test_size": 10000},
            "teacher": {"test_acc": 90.0},
            "student": {"arch": pair[1], "params": 1000, "best_acc": acc, "test_acc": acc - 0.5 if final is None else final,
                        "cpu_latency_ms": 1.0, "ece": 2.0, "output_noise": 0.1},
            "export": {"bytes": {"weights": 4096}}}


def test_table_final_and_best_per_mode_and_welch_verdicts():
    runs = [fake("kd", "off", 71.0 + s, seed=s, final=70.0 + s) for s in range(3)]  # final 70, 71, 72
    runs += [fake("kd", "stable", 75.0 + s, seed=s, final=73.0 + s) for s in range(3)]  # final 73, 74, 75
    runs += [fake("kd", "granularity", 71.0, seed=s, final=70.5 + 0.5 * s) for s in range(3)]
    runs += [fake("none", "off", 65.0, seed=s) for s in range(3)]
    runs.append({"status": "failed", "distiller": "kd", "mode": "off"})
    table = comparison_table(runs)
    kd = next(r for r in table["rows"] if r["baseline"] == "kd")
    assert kd["pair"] == ["resnet32x4", "resnet8x4"]
    assert kd["off"]["final"]["mean"] == pytest.approx(71.0) and kd["off"]["final"]["std"] == pytest.approx(1.0)
    assert kd["off"]["best"]["mean"] == pytest.approx(72.0) and kd["off"]["final"]["n"] == 3
    stable = kd["versus_off"]["stable"]  # [70, 71, 72] vs [73, 74, 75]: t = 3 / sqrt(2/3), df = 4
    assert stable["difference"] == pytest.approx(3.0) and 0.02 < stable["p"] < 0.025
    assert stable["verdict"] == "better"
    gran = kd["versus_off"]["granularity"]  # [70.5, 71, 71.5] vs [70, 71, 72]: no difference
    assert gran["difference"] == pytest.approx(0.0) and gran["verdict"] == "no significant difference"
    assert table["rows"][-1]["baseline"] == "none"  # the reference comes last
    # the paper's numbers (METHOD.md) beside ours, for the pair it reports
    assert kd["off"]["paper"] == 73.27 and kd["stable"]["paper"] == 74.20 and kd["granularity"]["paper"] is None
    md = to_markdown(table)
    assert "| resnet32x4 -> resnet8x4 | kd | 71.00 ± 1.00 / 72.00 ± 1.00 |" in md
    assert "+3.00 (p = 0.02" in md and "73.27 / 74.20 (stable)" in md
    assert "-1.27 / +1.80" in md  # ours (best) minus paper: 72.00 - 73.27, 76.00 - 74.20
    assert "Welch" in md and "final = the last epoch" in md  # the table says how its figures were chosen
    assert "student alone" in md and "(paper 79.42)" in md
    assert "resnet32x4,resnet8x4,kd,71.0,1.0,3" in to_csv(table).replace(" ", "")


def test_few_seeds_do_not_claim_significance():
    table = comparison_table([fake("kd", "off", 70.0), fake("kd", "stable", 71.0)])
    v = table["rows"][0]["versus_off"]["stable"]
    assert v["p"] is None and v["verdict"] == "not enough seeds"
    assert "one seed, 3 needed" in to_markdown(table)
    two = comparison_table([fake("kd", m, a, seed=s) for m, a in (("off", 70.0), ("stable", 75.0)) for s in (0, 1)])
    assert two["rows"][0]["versus_off"]["stable"]["verdict"] == "not enough seeds"


def test_other_data_sets_show_no_paper_numbers():
    table = comparison_table([fake("kd", "off", 70.0, dataset="demo"), fake("kd", "stable", 71.0, dataset="demo")])
    assert table["rows"][0]["off"]["paper"] is None
    assert "| - | - |" in to_markdown(table)


def comparison_runs(cfg):
    return [(job.folder, job.config) for job in comparison_jobs(cfg)]


def test_plan_resets_weights_per_baseline():
    cfg = set_value(tiny_config(), "comparison.baselines", ["kd", "none"])
    cfg = set_value(cfg, "comparison.seeds", [0, 1])
    cfg = set_value(cfg, "distiller.w_ce", 0.5)
    plan = comparison_runs(cfg)
    names = [n for n, _ in plan]
    assert names[:4] == ["s0-none-off", "s0-kd-off", "s0-kd-granularity", "s0-kd-stable"]
    assert len(plan) == 8
    assert all(c.comparison.baselines == [] for _, c in plan)
    kd = dict(plan)["s0-kd-off"]
    assert kd.distiller.w_ce == 0.5  # same baseline as the config: its settings are kept
    alone = dict(plan)["s1-none-off"]
    assert alone.distiller.w_ce is None and alone.seed == 1


@pytest.mark.e2e
def test_comparison_through_the_cli_trains_teacher_and_heads_once_per_seed(tmp_path, capsys):
    import json

    from engine.runfolder import load_checkpoint

    cfg = tiny_config(**{"comparison.baselines": ["kd"], "comparison.modes": ["off", "granularity", "stable"],
                         "comparison.student_alone": False, "export.enabled": False})
    path = tmp_path / "cmp.yaml"
    save_config(cfg, path)
    out = tmp_path / "cmp"
    assert main([str(path), "--out", str(out), "-q"]) == EXIT_OK
    text = capsys.readouterr().out
    assert "| kd |" in text and "Welch" in text
    for name in ("comparison.md", "comparison.csv", "comparison.json"):
        assert (out / name).is_file()
    plans = {run: [(s["stage"], s["action"]) for s in json.loads((out / run / "summary.json").read_text())["plan"]]
             for run in ("s0-kd-off", "s0-kd-granularity", "s0-kd-stable")}
    assert plans["s0-kd-off"][0] == ("teacher", "train")  # the first run trains the teacher ...
    assert plans["s0-kd-granularity"][:2] == [("teacher", "load"), ("heads", "train")]  # ... the first MGD run the heads
    assert plans["s0-kd-stable"][:2] == [("teacher", "load"), ("heads", "load")]  # the later runs load both
    trained = load_checkpoint(out / "s0-kd-granularity" / "checkpoints" / "heads.pt")["modules"]["heads"]
    summaries = {run: json.loads((out / run / "summary.json").read_text()) for run in plans}
    assert summaries["s0-kd-stable"]["heads"] == summaries["s0-kd-granularity"]["heads"]  # the same heads, measured
    assert not (out / "s0-kd-stable" / "checkpoints" / "heads.pt").exists()
    assert trained  # and the stable run's students learned from those weights (its heads stage loaded them)
    # the three students of the seed trained together: one teacher pass per batch
    assert all(summaries[run]["lockstep"]["students"] == 3 for run in summaries)


@pytest.mark.e2e
def test_loaded_heads_of_another_shape_are_refused_at_plan_time(tmp_path):
    from engine.errors import CheckpointError
    from engine.run import plan_experiment, run_experiment

    run_experiment(tiny_config(**{"export.enabled": False, "student.schedule.epochs": 0}), run_dir=tmp_path / "a")
    heads = tmp_path / "a" / "checkpoints" / "heads.pt"
    cfg = tiny_config(**{"granularity.checkpoint": str(heads), "granularity.heads": [{"dim": 32, "temperature": 2}]})
    with pytest.raises(CheckpointError) as err:
        plan_experiment(cfg)
    assert err.value.field == "granularity.checkpoint" and "not granularity heads of this" in str(err.value)


def test_a_difference_below_one_test_image_is_never_significant():
    runs = [fake("kd", "off", 70.0, seed=s, final=70.0) for s in range(3)]
    runs += [fake("kd", "stable", 70.25, seed=s, final=70.25) for s in range(3)]
    for r in runs:
        r["data"]["test_size"] = 355  # one image = 0.28 points
    row = comparison_table(runs)["rows"][0]
    assert row["versus_off"]["stable"]["p"] == 0.0  # agreeing seeds: the test alone would say "certain"
    assert row["versus_off"]["stable"]["verdict"] == "no significant difference"


def test_pairs_and_published_teachers(tmp_path):
    from engine.comparison import check_comparison
    from engine.errors import InputError

    cfg = set_value(tiny_config(), "comparison.baselines", ["kd", "dkd"])
    cfg = set_value(cfg, "comparison.modes", ["off"])
    cfg = set_value(cfg, "comparison.pairs", [{"teacher": "resnet56", "student": "resnet20"},
                                              {"teacher": "wrn_40_2", "student": "wrn_16_2"}])
    plan = dict(comparison_runs(cfg))
    assert len(plan) == 2 * 3  # per pair: the student alone, kd and dkd with MGD off
    job = next(j for j in comparison_jobs(cfg) if j.folder == "wrn_40_2-wrn_16_2-s0-dkd-off")  # typed, never parsed
    assert (job.teacher, job.student, job.seed, job.baseline, job.mode) == ("wrn_40_2", "wrn_16_2", 0, "dkd", "off")
    dkd = plan["wrn_40_2-wrn_16_2-s0-dkd-off"]
    assert (dkd.teacher.arch, dkd.student.arch) == ("wrn_40_2", "wrn_16_2")
    assert resolve(dkd).distiller.options["beta"] == 6.0  # mdistiller's beta for this pair
    cfg = set_value(cfg, "comparison.teachers_dir", str(tmp_path))
    with pytest.raises(InputError, match="resnet56_vanilla/ckpt_epoch_240.pth is missing"):
        check_comparison(cfg)
    assert dict(comparison_runs(cfg))["resnet56-resnet20-s0-kd-off"].teacher.checkpoint == \
        str(tmp_path / "resnet56_vanilla" / "ckpt_epoch_240.pth")


def test_the_paper_table_preset_runs_the_papers_pairs_and_baselines():
    from engine.config import load_config
    from engine.paper import PAPER_PAIRS

    cfg = load_config("resources/presets/paper_table.yaml")
    assert [(p.teacher, p.student) for p in cfg.comparison.pairs] == list(PAPER_PAIRS)
    assert cfg.comparison.baselines == ["kd", "crd"] and cfg.comparison.modes == ["off", "granularity", "stable"]
    runs = comparison_runs(cfg)
    assert len(runs) == 7 * 3 * (1 + 2 * 3)
    assert cfg.speed.amp == "off" and cfg.teacher.keep == "best"  # the authors' numerics
    child = dict(runs)["resnet56-resnet20-s2-crd-granularity"]
    assert (child.teacher.arch, child.student.arch, child.seed) == ("resnet56", "resnet20", 2)
    assert child.student.schedule.epochs == 240 and resolve(child).teacher.schedule.milestones == [60, 120, 180]


def test_a_pair_and_seed_of_more_students_than_lockstep_takes_trains_in_groups_of_at_most_that(tmp_path):
    # mgd-train and the studio's queue group alike: at most MAX_STUDENTS students a group, in order
    from engine.comparison import Comparison
    from engine.jobs import MAX_STUDENTS

    cfg = tiny_config(**{"comparison.baselines": ["kd", "at", "fitnet", "sp", "pkt"], "comparison.seeds": [0],
                         "comparison.modes": ["off", "stable"], "comparison.student_alone": True})
    comparison = Comparison(cfg, tmp_path / "cmp")
    groups = comparison.groups()
    assert len(comparison.jobs) == 11 and [len(g) for g in groups] == [MAX_STUDENTS, 11 - MAX_STUDENTS]
    assert [j for g in groups for j in g] == comparison.jobs  # the order of the jobs, each once
    assert len({j.group for g in groups for j in g}) == 1  # one pair and seed, split only by the limit
