"""Comparison tables: baselines with MGD off and on, as in the paper's tables, made honest.

:func:`run_comparison` runs every (seed, baseline, mode) of a config's ``comparison``
section in turn, one run folder each, training the teacher once per seed and reusing it.
:func:`comparison_table` turns any list of run summaries (those of a comparison, or the
runs a user selected in the studio) into a table: per baseline the accuracy with MGD off,
granularity-wise and stable, mean ± standard deviation over seeds, the difference, and
whether that difference exceeds the seed-to-seed spread; the student trained alone as the
reference; and per student its size, exported size, CPU latency and calibration error.
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

MODES = ("off", "granularity", "stable")


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return math.nan, math.nan, 0
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0), len(vals)


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"


def comparison_table(summaries: Iterable[dict]) -> dict[str, Any]:
    """Group finished run summaries by baseline and mode; see the module docstring."""
    groups: dict[tuple[str, str], list[dict]] = {}
    teachers: list[float] = []
    resolution = 0.0  # one test image, in percent: no difference below it means anything
    for s in summaries:
        if s.get("status") != "finished" or not s.get("student"):
            continue
        groups.setdefault((s.get("distiller", "?"), s.get("mode", "?")), []).append(s)
        acc = (s.get("teacher") or {}).get("test_acc")
        if acc is not None:
            teachers.append(acc)
        test_size = (s.get("data") or {}).get("test_size")
        if test_size:
            resolution = max(resolution, 100.0 / test_size)

    def stat(runs: list[dict], key: str) -> tuple[float, float, int]:
        return _mean_std([r["student"].get(key) for r in runs])

    rows = []
    for baseline in sorted({b for b, _ in groups}, key=lambda b: (b == "none", b)):
        row: dict[str, Any] = {"baseline": baseline}
        for mode in MODES:
            mean, std, n = stat(groups.get((baseline, mode), []), "best_acc")
            row[mode] = {"mean": mean, "std": std, "n": n}
        off = row["off"]
        mgd = [row[m] for m in ("granularity", "stable") if row[m]["n"]]
        if off["n"] and mgd:
            best = max(mgd, key=lambda r: r["mean"])
            diff = best["mean"] - off["mean"]
            # two seeds that happen to agree give a deviation of 0; never claim more
            # precision than the test set has (one image)
            spread = max(math.sqrt(off["std"] ** 2 + best["std"] ** 2), resolution)
            row["difference"] = diff
            row["spread"] = spread
            # with one seed there is no spread to compare with: say so rather than guess
            row["beyond_spread"] = (abs(diff) > spread + 1e-9) if min(off["n"], best["n"]) > 1 else None
        rows.append(row)

    students = []
    def order(key: tuple[str, str]) -> tuple:  # as the rows: the student alone last, then MGD off, on
        baseline, mode = key
        return (baseline == "none", baseline, MODES.index(mode) if mode in MODES else len(MODES), mode)

    for (baseline, mode), runs in sorted(groups.items(), key=lambda item: order(item[0])):
        first = runs[0]
        sizes = [((r.get("export") or {}).get("bytes") or {}).get("weights") for r in runs]
        students.append({
            "baseline": baseline, "mode": mode, "arch": first["student"].get("arch"),
            "params": first["student"].get("params"), "seeds": len(runs),
            "best_acc": stat(runs, "best_acc")[0],
            "exported_kib": (sizes[0] / 1024) if sizes and sizes[0] else None,
            "cpu_latency_ms": stat(runs, "cpu_latency_ms")[0],
            "ece": stat(runs, "ece")[0],
            "output_noise": stat(runs, "output_noise")[0],
        })
    t_mean, t_std, t_n = _mean_std(teachers)
    return {"rows": rows, "students": students, "teacher": {"mean": t_mean, "std": t_std, "n": t_n}}


#: column titles of the two tables (Markdown and the studio's comparison view)
BASELINE_HEADERS = ("baseline", "MGD off", "+ MGD granularity", "+ MGD stable", "difference", "beyond seed spread")
STUDENT_HEADERS = ("baseline", "mode", "student", "parameters", "exported (KiB)", "CPU ms / image", "ECE (%)",
                   "output noise")
STUDENT_ALONE = "student alone (no teacher)"


def baseline_label(name: str) -> str:
    """How a baseline is named in the tables (``none`` is the student trained alone)."""
    return STUDENT_ALONE if name == "none" else name


def _num(value: Any, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def table_cells(table: dict[str, Any]) -> dict[str, Any]:
    """The table of :func:`comparison_table` as text cells: ``baselines`` and ``students``
    (lists of rows, columns as in :data:`BASELINE_HEADERS` and :data:`STUDENT_HEADERS`) and
    ``note`` (the teacher's accuracy and how to read the table; empty without a teacher).

    :func:`to_markdown` and the studio's comparison view both show these cells."""
    baselines = []
    for row in table["rows"]:
        cells = [_fmt(row[m]["mean"], row[m]["std"], row[m]["n"]) for m in MODES]
        diff = f"{row['difference']:+.2f}" if "difference" in row else "-"
        beyond = {True: "yes", False: "no", None: "- (one seed)"}.get(row.get("beyond_spread"), "-") \
            if "difference" in row else "-"
        baselines.append([baseline_label(row["baseline"]), *cells, diff, beyond])
    students = []
    for s in table["students"]:
        kib = f"{s['exported_kib']:.0f}" if s["exported_kib"] else "-"
        students.append([baseline_label(s["baseline"]), s["mode"], str(s["arch"] or "-"), _num(s["params"], ","),
                         kib, _num(s["cpu_latency_ms"], ".2f"), _num(s["ece"], ".2f"),
                         _num(s["output_noise"], ".4f")])
    t = table["teacher"]
    note = ""
    if t["n"]:
        note = (f"Teacher: {_fmt(t['mean'], t['std'], t['n'])} %. Accuracies are the best test top-1 "
                "in percent, mean ± standard deviation over seeds; the difference is the better MGD mode "
                "minus MGD off, and it exceeds the spread when larger than the two deviations combined "
                "(and than one test image).")
    return {"baselines": baselines, "students": students, "note": note}


def to_markdown(table: dict[str, Any]) -> str:
    cells = table_cells(table)

    def md_table(headers: tuple[str, ...], rows: list[list[str]]) -> list[str]:
        return (["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)] +
                ["| " + " | ".join(row) + " |" for row in rows])

    lines = md_table(BASELINE_HEADERS, cells["baselines"])
    if cells["note"]:
        lines.append("\n" + cells["note"])
    lines += [""] + md_table(STUDENT_HEADERS, cells["students"])
    return "\n".join(lines) + "\n"


def to_csv(table: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["baseline", *(f"{m}_{k}" for m in MODES for k in ("mean", "std", "n")), "difference",
                "beyond_spread"])
    for row in table["rows"]:
        w.writerow([row["baseline"], *(row[m][k] for m in MODES for k in ("mean", "std", "n")),
                    row.get("difference", ""), row.get("beyond_spread", "")])
    w.writerow([])
    keys = ["baseline", "mode", "arch", "params", "seeds", "best_acc", "exported_kib", "cpu_latency_ms", "ece",
            "output_noise"]
    w.writerow(keys)
    for s in table["students"]:
        w.writerow([s[k] for k in keys])
    return buf.getvalue()


def write_table(table: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "comparison.md", "csv": out / "comparison.csv", "json": out / "comparison.json"}
    paths["markdown"].write_text(to_markdown(table), encoding="utf-8")
    paths["csv"].write_text(to_csv(table), encoding="utf-8", newline="")
    paths["json"].write_text(json.dumps(table, indent=2), encoding="utf-8")
    return paths


def comparison_runs(cfg: ExperimentConfig) -> list[tuple[str, ExperimentConfig]]:
    """(folder name, config) of every run of a comparison, the student-alone reference first."""
    c = cfg.comparison
    plan: list[tuple[str, ExperimentConfig]] = []
    for seed in c.seeds:
        jobs = [("none", "off")] if c.student_alone else []
        jobs += [(b, m) for b in c.baselines for m in c.modes if b != "none"]
        for baseline, mode in jobs:
            child = copy.deepcopy(cfg)
            child.comparison = type(cfg.comparison)(baselines=[])
            child.seed = seed
            if baseline != cfg.distiller.name:  # each baseline with its own defaults
                child.distiller = type(cfg.distiller)(name=baseline, temperature=cfg.distiller.temperature)
            child.granularity.mode = mode
            child.name = f"{cfg.name}-{baseline}-{mode}-s{seed}"
            plan.append((f"s{seed}-{baseline}-{mode}", child))
    return plan


def run_comparison(cfg: ExperimentConfig, out_dir: str | Path, *, subscribers: Iterable[Subscriber] = (),
                   control: RunControl | None = None) -> dict[str, Any]:
    """Run every job of the comparison (resuming finished or interrupted ones) and write the table."""
    from engine.run import run_experiment
    from engine.runfolder import CONFIG_FILE, SUMMARY_FILE, checkpoint_path

    subscribers = list(subscribers)
    control = control or RunControl()
    if not cfg.comparison.baselines:
        raise InputError("comparison.baselines: list at least one baseline to compare")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / CONFIG_FILE)
    summaries: list[dict] = []
    teachers: dict[int, str] = {}
    plan = comparison_runs(cfg)
    for i, (folder, child) in enumerate(plan):
        run_dir = out / folder
        for fn in subscribers:
            fn(Log(f"comparison run {i + 1}/{len(plan)}: {folder}"))
        if child.teacher.checkpoint is None and child.seed in teachers:
            child = set_value(child, "teacher.checkpoint", teachers[child.seed])
        summary_path = run_dir / SUMMARY_FILE
        if summary_path.exists() and json.loads(summary_path.read_text()).get("status") == "finished":
            summary = json.loads(summary_path.read_text())
        elif (run_dir / CONFIG_FILE).exists():
            summary = run_experiment(None, run_dir=run_dir, subscribers=subscribers, control=control, resume=True)
        else:
            summary = run_experiment(resolve(child), run_dir=run_dir, subscribers=subscribers, control=control)
        summaries.append(summary)
        teacher_file = checkpoint_path(run_dir, "teacher")
        if teacher_file.exists() and child.seed not in teachers and child.teacher.checkpoint is None:
            teachers[child.seed] = str(teacher_file)
        if summary.get("status") != "finished":
            break
    table = comparison_table(summaries)
    paths = write_table(table, out)
    table["files"] = {k: str(v) for k, v in paths.items()}
    table["complete"] = len(summaries) == len(plan) and all(s.get("status") == "finished" for s in summaries)
    return table
