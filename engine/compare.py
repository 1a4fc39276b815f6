"""Comparison tables: baselines with MGD off and on, as in the paper's tables, made honest.

:class:`engine.comparison.Comparison` runs every (pair, seed, baseline, mode) of a config's
``comparison`` section; :func:`rebuild_table` rebuilds its table from its run folders whenever
one of its runs ends. :func:`comparison_table` turns any list of run summaries (those of a comparison, or the
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

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any, Iterable

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


def comparison_folders(folder: str | Path) -> list[Path]:
    """The run folders of a comparison folder, in the comparison's order: those its job list
    (``jobs.json``, written by :class:`engine.comparison.Comparison`) names, else every sub-folder
    with a job record (``job.json``)."""
    from engine.jobs import JOB_FILE

    folder = Path(folder)
    try:
        names = [str(j["folder"]) for j in json.loads((folder / JOBS_FILE).read_text(encoding="utf-8"))["jobs"]]
        return [folder / n for n in names if (folder / n).is_dir()]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and (p / JOB_FILE).is_file())
    except OSError:
        return []


#: the job list of a comparison folder
JOBS_FILE = "jobs.json"


def rebuild_table(folder: str | Path) -> dict[str, Any]:
    """Rebuild a comparison's table and summary (``comparison.md``, ``.csv``, ``.json``) from its run
    folders, whichever way their runs were started or resumed; returns the table."""
    from engine.runfolder import read_json

    folders = comparison_folders(folder)
    summaries = [read_json(p / "summary.json") for p in folders]
    table = comparison_table(summaries)
    table["runs"] = [{"folder": p.name, "status": s.get("status", "not begun"),
                      "best_acc": (s.get("student") or {}).get("best_acc")} for p, s in zip(folders, summaries)]
    paths = write_table(table, folder)
    table["files"] = {k: str(v) for k, v in paths.items()}
    return table
