"""Comparison tables: baselines with MGD off and on, as in the paper's tables, made honest.

:func:`run_comparison` runs every (pair, seed, baseline, mode) of a config's ``comparison``
section in turn, one run folder each, training each teacher once per seed and reusing it
(or loading RepDistiller's published teachers from ``comparison.teachers_dir``).
:func:`comparison_table` turns any list of run summaries (those of a comparison, or the
runs a user selected in the studio) into a table, one row per (pair, baseline):

* each MGD mode's *final* test accuracy (the last epoch's, what a run delivers) and *best*
  (the best epoch's, what the paper's scripts report), mean ± standard deviation over seeds;
* each MGD mode's difference to MGD off, on its own, in final accuracy;
* a verdict from Welch's t-test on the final accuracies (p < 0.05), made only with three or
  more seeds per mode ("not enough seeds" below that), and never for a difference of less
  than one test image;
* the paper's reported accuracy beside the user's, where METHOD.md lists it.

Per student: its size, exported size, CPU latency and calibration error.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

from engine.config import ExperimentConfig, resolve, save_config, set_value
from engine.control import RunControl
from engine.errors import InputError
from engine.events import Log, Subscriber
from engine.paper import paper_accuracy, paper_teacher
from engine.stats import MIN_SEEDS, welch_test

MODES = ("off", "granularity", "stable")
SIGNIFICANCE = 0.05

#: how the table's figures were chosen, written under every table
METHOD_NOTE = (f"Figures: test top-1 accuracy (%), mean ± standard deviation over seeds; final = the last epoch, "
               f"best = the best epoch (the paper's scripts report the best). Differences are each MGD mode minus "
               f"MGD off, in final accuracy. Verdict: Welch's t-test on the final accuracies, significant when "
               f"p < {SIGNIFICANCE} (needs {MIN_SEEDS} or more seeds per mode), and never for a difference "
               f"smaller than one test image. Paper: the accuracy the MGD paper reports (CIFAR-100, best epoch), "
               f"where METHOD.md lists it; ours - paper compares the best-epoch means.")


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def _pair(summary: dict) -> tuple[str | None, str | None]:
    """The (teacher, student) pair a run belongs to (the configured pair, even for the student alone)."""
    pair = summary.get("pair") or {}
    teacher = pair.get("teacher", (summary.get("teacher") or {}).get("arch"))
    return teacher, pair.get("student", (summary.get("student") or {}).get("arch"))


def _stats(runs: list[dict], key: str) -> dict[str, Any]:
    values = [r["student"].get(key) for r in runs]
    mean, std, n = _mean_std(values)
    return {"mean": mean, "std": std, "n": n, "values": [v for v in values if v is not None]}


def comparison_table(summaries: Iterable[dict]) -> dict[str, Any]:
    """Group finished run summaries by (pair, baseline) and mode; see the module docstring."""
    groups: dict[tuple, list[dict]] = {}
    teachers: dict[tuple, list[float]] = {}
    resolution = 0.0  # one test image, in percent: no difference below it means anything
    dataset = ""
    for s in summaries:
        if s.get("status") != "finished" or not s.get("student"):
            continue
        pair = _pair(s)
        baseline = s.get("distiller", "?")
        # the student alone belongs to every pair with that student
        groups.setdefault((pair, baseline, s.get("mode", "?")), []).append(s)
        acc = (s.get("teacher") or {}).get("test_acc")
        if acc is not None:
            teachers.setdefault(pair, []).append(acc)
        data = s.get("data") or {}
        dataset = dataset or str(data.get("dataset") or "")
        if data.get("test_size"):
            resolution = max(resolution, 100.0 / data["test_size"])

    # a run written without its pair (older run folders) and without a teacher (the student alone)
    # joins the one pair with its student, if there is exactly one
    for key in [k for k in groups if k[0][0] is None]:
        (_, student), baseline, mode = key
        homes = {p for p, _, _ in groups if p[1] == student and p[0] is not None}
        if len(homes) == 1:
            groups.setdefault((homes.pop(), baseline, mode), []).extend(groups.pop(key))
    keys = sorted({(pair, b) for pair, b, _ in groups},
                  key=lambda k: (str(k[0][1]), str(k[0][0]), k[1] == "none", k[1]))
    rows = []
    for pair, baseline in keys:
        row: dict[str, Any] = {"pair": list(pair), "baseline": baseline}
        for mode in MODES:
            runs = groups.get((pair, baseline, mode), [])
            row[mode] = {"final": _stats(runs, "test_acc"), "best": _stats(runs, "best_acc"),
                         "paper": paper_accuracy(dataset, pair[0], pair[1], baseline, mode)}
            # the earlier table's keys, for readers of comparison.json written before
            row[mode].update(mean=row[mode]["best"]["mean"], std=row[mode]["best"]["std"], n=row[mode]["best"]["n"])
        off = row["off"]["final"]
        row["versus_off"] = {}
        for mode in ("granularity", "stable"):
            mgd = row[mode]["final"]
            if not (off["n"] and mgd["n"]):
                continue
            diff = mgd["mean"] - off["mean"]
            test = welch_test(off["values"], mgd["values"])
            if test is None:
                verdict, p = "not enough seeds", None
            else:
                p = test.p
                significant = p < SIGNIFICANCE and abs(diff) >= resolution - 1e-9
                verdict = ("better" if diff > 0 else "worse") if significant else "no significant difference"
            row["versus_off"][mode] = {"difference": diff, "p": p, "verdict": verdict,
                                       "seeds": min(off["n"], mgd["n"])}
        rows.append(row)

    students = []

    def order(key: tuple) -> tuple:  # as the rows: per pair, the student alone last, then MGD off, on
        pair, baseline, mode = key
        return (str(pair[1]), str(pair[0]), baseline == "none", baseline, MODES.index(mode) if mode in MODES else 9)

    for (pair, baseline, mode), runs in sorted(groups.items(), key=lambda item: order(item[0])):
        first = runs[0]
        sizes = [((r.get("export") or {}).get("bytes") or {}).get("weights") for r in runs]
        students.append({
            "pair": list(pair), "baseline": baseline, "mode": mode, "arch": first["student"].get("arch"),
            "params": first["student"].get("params"), "seeds": len(runs),
            "test_acc": _stats(runs, "test_acc")["mean"], "best_acc": _stats(runs, "best_acc")["mean"],
            "exported_kib": (sizes[0] / 1024) if sizes and sizes[0] else None,
            "cpu_latency_ms": _stats(runs, "cpu_latency_ms")["mean"], "ece": _stats(runs, "ece")["mean"],
            "output_noise": _stats(runs, "output_noise")["mean"],
        })
    teacher_rows = []
    for pair, accs in sorted(teachers.items(), key=lambda item: (str(item[0][1]), str(item[0][0]))):
        mean, std, n = _mean_std(accs)
        teacher_rows.append({"pair": list(pair), "mean": mean, "std": std, "n": n,
                             "paper": paper_teacher(dataset, *pair)})
    return {"rows": rows, "students": students, "teachers": teacher_rows, "dataset": dataset,
            "resolution": resolution, "method": METHOD_NOTE}


#: column titles of the two tables (Markdown and the studio's comparison view), with a tip each
BASELINE_COLUMNS = (
    ("pair", "Teacher -> student"),
    ("baseline", "The distiller; the student trained alone (no teacher) is the reference"),
    ("MGD off", "Final / best test accuracy (%) with MGD off: mean ± standard deviation over seeds"),
    ("+ MGD granularity", "Final / best test accuracy (%) with MGD granularity-wise"),
    ("+ MGD stable", "Final / best test accuracy (%) with MGD stable"),
    ("granularity - off", "Final accuracy, granularity minus off: the difference, and Welch's test"),
    ("stable - off", "Final accuracy, stable minus off: the difference, and Welch's test"),
    ("paper (off / MGD)", "The MGD paper's accuracy with MGD off and with the MGD mode it reports"),
    ("ours - paper", "Our best-epoch mean minus the paper's, for MGD off and the paper's MGD mode"),
)
BASELINE_HEADERS = tuple(h for h, _ in BASELINE_COLUMNS)
BASELINE_TIPS = tuple(t for _, t in BASELINE_COLUMNS)
#: which columns hold numbers (the studio right-aligns them)
BASELINE_NUMERIC = (False, False, True, True, True, True, True, True, True)
STUDENT_HEADERS = ("pair", "baseline", "mode", "student", "parameters", "exported (KiB)", "CPU ms / image",
                   "ECE (%)", "output noise")
STUDENT_ALONE = "student alone (no teacher)"


def baseline_label(name: str) -> str:
    """How a baseline is named in the tables (``none`` is the student trained alone)."""
    return STUDENT_ALONE if name == "none" else name


def pair_label(pair) -> str:
    teacher, student = pair
    return f"{teacher or '-'} -> {student or '-'}"


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def _mode_cell(entry: dict) -> str:
    final, best = entry["final"], entry["best"]
    if not best["n"]:
        return "-"
    return f"{_fmt(final['mean'], final['std'], final['n'])} / {_fmt(best['mean'], best['std'], best['n'])}"


def _versus_cell(v: dict | None) -> str:
    if v is None:
        return "-"
    if v["p"] is None:
        seeds = "one seed" if v["seeds"] == 1 else f"{v['seeds']} seeds"
        return f"{v['difference']:+.2f} ({v['verdict']}: {seeds}, {MIN_SEEDS} needed)"
    return f"{v['difference']:+.2f} (p = {v['p']:.3f}: {v['verdict']})"


def _paper_cells(row: dict) -> tuple[str, str]:
    off = row["off"]["paper"]
    mgd_mode = next((m for m in ("stable", "granularity") if row[m]["paper"] is not None), None)
    if off is None and mgd_mode is None:
        return "-", "-"
    mgd = row[mgd_mode]["paper"] if mgd_mode else None
    paper = f"{_num(off, '.2f')} / {_num(mgd, '.2f')}" + (f" ({mgd_mode})" if mgd_mode else "")

    def gap(ours: dict, theirs: float | None) -> str:
        return f"{ours['mean'] - theirs:+.2f}" if theirs is not None and ours["n"] else "-"
    ours = f"{gap(row['off']['best'], off)} / {gap(row[mgd_mode]['best'], mgd) if mgd_mode else '-'}"
    return paper, ours


def table_cells(table: dict[str, Any]) -> dict[str, Any]:
    """The table of :func:`comparison_table` as text cells: ``baselines`` and ``students``
    (lists of rows, columns as in :data:`BASELINE_HEADERS` and :data:`STUDENT_HEADERS`) and
    ``note`` (the teachers' accuracies and how the figures were chosen).

    :func:`to_markdown` and the studio's comparison view both show these cells."""
    baselines = []
    for row in table["rows"]:
        cells = [_mode_cell(row[m]) for m in MODES]
        versus = [_versus_cell(row["versus_off"].get(m)) for m in ("granularity", "stable")]
        baselines.append([pair_label(row["pair"]), baseline_label(row["baseline"]), *cells, *versus,
                          *_paper_cells(row)])
    students = []
    for s in table["students"]:
        kib = f"{s['exported_kib']:.0f}" if s["exported_kib"] else "-"
        students.append([pair_label(s["pair"]), baseline_label(s["baseline"]), s["mode"], str(s["arch"] or "-"),
                         _num(s["params"], ","), kib, _num(s["cpu_latency_ms"], ".2f"), _num(s["ece"], ".2f"),
                         _num(s["output_noise"], ".4f")])
    teachers = [f"{pair_label(t['pair'])}: teacher {_fmt(t['mean'], t['std'], t['n'])} %"
                + (f" (paper {t['paper']:.2f})" if t["paper"] is not None else "") for t in table.get("teachers", [])]
    note = ("; ".join(teachers) + ". " if teachers else "") + table.get("method", METHOD_NOTE)
    return {"baselines": baselines, "students": students, "note": note}


def to_markdown(table: dict[str, Any]) -> str:
    cells = table_cells(table)

    def md_table(headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
        return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] +
                ["| " + " | ".join(row) + " |" for row in rows])

    lines = md_table(BASELINE_HEADERS, cells["baselines"])
    lines.append("\n" + cells["note"])
    lines += [""] + md_table(STUDENT_HEADERS, cells["students"])
    return "\n".join(lines) + "\n"


def to_csv(table: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["teacher", "student", "baseline",
                *(f"{m}_{which}_{k}" for m in MODES for which in ("final", "best") for k in ("mean", "std", "n")),
                *(f"{m}_paper" for m in MODES),
                *(f"{m}_minus_off_{k}" for m in ("granularity", "stable") for k in ("difference", "p", "verdict"))])
    for row in table["rows"]:
        versus = [row["versus_off"].get(m, {}).get(k, "") for m in ("granularity", "stable")
                  for k in ("difference", "p", "verdict")]
        w.writerow([*row["pair"], row["baseline"],
                    *(row[m][which][k] for m in MODES for which in ("final", "best") for k in ("mean", "std", "n")),
                    *(row[m]["paper"] if row[m]["paper"] is not None else "" for m in MODES), *versus])
    w.writerow([])
    keys = ["baseline", "mode", "arch", "params", "seeds", "test_acc", "best_acc", "exported_kib", "cpu_latency_ms",
            "ece", "output_noise"]
    w.writerow(["teacher", "student", *keys])
    for s in table["students"]:
        w.writerow([*s["pair"], *(s[k] for k in keys)])
    return buf.getvalue()


def write_table(table: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "comparison.md", "csv": out / "comparison.csv", "json": out / "comparison.json"}
    paths["markdown"].write_text(to_markdown(table), encoding="utf-8")
    paths["csv"].write_text(to_csv(table), encoding="utf-8", newline="")
    paths["json"].write_text(json.dumps(table, indent=2), encoding="utf-8")
    return paths


#: where RepDistiller's fetch_pretrained_teachers.sh puts each teacher (save/models/<arch>_vanilla/...)
REPDISTILLER_TEACHER = "{arch}_vanilla/ckpt_epoch_240.pth"


def comparison_pairs(cfg: ExperimentConfig) -> list[tuple[str, str]]:
    return [(p.teacher, p.student) for p in cfg.comparison.pairs] or [(cfg.teacher.arch, cfg.student.arch)]


def comparison_runs(cfg: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """(folder name, config) of every run of a comparison: per pair and seed, the student-alone
    reference first, then each baseline in each mode. With several pairs the folder names start
    with the pair (``resnet56-resnet20-s0-kd-off``)."""
    c = cfg.comparison
    plan: list[tuple[str, ExperimentConfig]] = []
    pairs = comparison_pairs(cfg)
    for teacher, student in pairs:
        prefix = f"{teacher}-{student}-" if c.pairs else ""
        for seed in c.seeds:
            jobs = [("none", "off")] if c.student_alone else []
            jobs += [(b, m) for b in c.baselines for m in c.modes if b != "none"]
            for baseline, mode in jobs:
                child = copy.deepcopy(cfg)
                child.comparison = type(cfg.comparison)(baselines=[])
                child.seed = seed
                if (teacher, student) != (cfg.teacher.arch, cfg.student.arch):  # another pair: its own defaults
                    child.teacher.arch, child.student.arch = teacher, student
                    child.teacher.checkpoint = None
                    child.student.schedule.lr = None  # resolved for this student (METHOD.md)
                if c.teachers_dir:
                    child.teacher.checkpoint = str(Path(c.teachers_dir).expanduser()
                                                   / REPDISTILLER_TEACHER.format(arch=teacher))
                if baseline != cfg.distiller.name:  # each baseline with its own defaults
                    child.distiller = type(cfg.distiller)(name=baseline, temperature=cfg.distiller.temperature)
                child.granularity.mode = mode
                child.name = f"{cfg.name}-{prefix}{baseline}-{mode}-s{seed}"
                plan.append((f"{prefix}s{seed}-{baseline}-{mode}", child))
    return plan


def check_comparison(cfg: ExperimentConfig) -> None:
    """Refuse, before any run, what would make a later run of the comparison fail: a missing
    teacher file of ``teachers_dir``, a config a run would refuse."""
    from engine.config import validate

    if not cfg.comparison.baselines:
        raise InputError("comparison.baselines: list at least one baseline to compare")
    for folder, child in comparison_runs(cfg):
        validate(resolve(child))
        path = child.teacher.checkpoint
        if path and not Path(path).expanduser().is_file():
            raise InputError(f"comparison.teachers_dir: {path} is missing (RepDistiller's published teacher for "
                             f"{child.teacher.arch}; its scripts/fetch_pretrained_teachers.sh downloads them)")


def lockstep_group(child: ExperimentConfig) -> tuple[str, str, int]:
    """The runs of a comparison that train together (their students in lockstep): one pair, one seed."""
    return child.teacher.arch, child.student.arch, child.seed


class TeacherReuse:
    """What a comparison trains once per (teacher architecture, seed) and its later runs load:
    the teacher (``checkpoints/teacher.pt`` of the first run that trained it) and the
    granularity heads trained on that teacher (``checkpoints/heads.pt``). Used by
    :func:`run_comparison` and by the studio's queue; ``before_open`` and ``after_open``
    plug into :func:`engine.lockstep.run_lockstep`."""

    def __init__(self) -> None:
        self.teachers: dict[tuple[str, int], str] = {}
        self.heads: dict[tuple[str, int], str] = {}

    def apply(self, child: ExperimentConfig) -> ExperimentConfig:
        """``child`` with the teacher and heads trained before for its teacher and seed (when it
        would otherwise train them itself)."""
        key = (child.teacher.arch, child.seed)
        if child.teacher.checkpoint is None and key in self.teachers:
            child = set_value(child, "teacher.checkpoint", self.teachers[key])
        if child.granularity.mode != "off" and child.granularity.checkpoint is None and key in self.heads:
            child = set_value(child, "granularity.checkpoint", self.heads[key])
        return child

    def remember(self, child: ExperimentConfig, run_dir: str | Path) -> None:
        """Note what the run in ``run_dir`` (run with config ``child``) trained itself."""
        from engine.runfolder import checkpoint_path

        key = (child.teacher.arch, child.seed)
        if key not in self.teachers and child.teacher.checkpoint is None and \
                checkpoint_path(run_dir, "teacher").exists():
            self.teachers[key] = str(checkpoint_path(run_dir, "teacher"))
        if key not in self.heads and child.granularity.checkpoint is None and \
                checkpoint_path(run_dir, "heads").exists():
            self.heads[key] = str(checkpoint_path(run_dir, "heads"))

    def before_open(self, job: tuple, previous: list) -> ExperimentConfig:
        """run_lockstep's hook: the job's config with what earlier runs trained."""
        return resolve(self.apply(job[0]))

    def after_open(self, job: tuple, run) -> None:
        """run_lockstep's hook: remember the teacher and heads the run trained (its stages before the
        student's are done)."""
        self.remember(run.cfg, run.run_dir)


def run_comparison(cfg: ExperimentConfig, out_dir: str | Path, *, subscribers: Iterable[Subscriber] = (),
                   control: RunControl | None = None, lockstep: bool = True) -> dict[str, Any]:
    """Run every job of the comparison (resuming finished or interrupted ones) and write the table.

    Each teacher, and its granularity heads, is trained once per seed and loaded by the later
    runs of that seed. With ``lockstep`` the runs of one pair and seed train their students
    together, one teacher pass per batch feeding them all (:mod:`engine.lockstep`); each ends as
    it would alone. A run that fails stops alone; a stop request ends the comparison (the same
    command continues it)."""
    from engine.lockstep import run_lockstep
    from engine.runfolder import CONFIG_FILE, SUMMARY_FILE, read_summary

    subscribers = list(subscribers)
    control = control or RunControl()
    check_comparison(cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)
    reuse = TeacherReuse()
    plan = comparison_runs(cfg)
    groups: dict[tuple, list] = {}
    for folder, child in plan:
        groups.setdefault(lockstep_group(child), []).append((folder, child))

    done: dict[str, dict] = {}
    count = 0
    for jobs in groups.values():
        if control.stop_requested:
            break
        pending = []
        for folder, child in jobs:
            count += 1
            run_dir = out / folder
            summary = read_summary(run_dir) if (run_dir / SUMMARY_FILE).exists() else {}
            if summary.get("status") == "finished":
                done[folder] = summary
                reuse.remember(reuse.apply(child), run_dir)
                continue
            resume = (run_dir / CONFIG_FILE).exists()
            for fn in subscribers:
                fn(Log(f"comparison run {count}/{len(plan)}: {folder}" + (" (resumed)" if resume else "")))
            pending.append((folder, child, run_dir, resume))
        if not pending:
            continue
        batch = [(None, run_dir, True) if resume else (child, run_dir, False) for _, child, run_dir, resume in pending]
        if lockstep:
            summaries = run_lockstep(batch, subscribers_for=lambda job: subscribers, control=control,
                                     before_open=reuse.before_open, after_open=reuse.after_open)
        else:
            summaries = []
            for job in batch:
                summaries += run_lockstep([job], subscribers_for=lambda job: subscribers, control=control,
                                          before_open=reuse.before_open, after_open=reuse.after_open)
        for (folder, *_), summary in zip(pending, summaries):
            done[folder] = summary
    summaries = [done[folder] for folder, _ in plan if folder in done]
    table = comparison_table(summaries)
    paths = write_table(table, out)
    table["files"] = {k: str(v) for k, v in paths.items()}
    table["complete"] = len(summaries) == len(plan) and all(s.get("status") == "finished" for s in summaries)
    return table
