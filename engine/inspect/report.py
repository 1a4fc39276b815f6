"""An inspection written to a folder: PNG figures and one self-contained HTML page
(``index.html``, every figure embedded as base64, a hover that shows each code's image),
so the analysis can be shared from a server."""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np

from engine.inspect import render
from engine.inspect.cam import TARGETS

PAGE = "index.html"
MAX_GAIN_IMAGES = 60  # images shown per "right here, wrong there" grid
MAX_HOVER_POINTS = 1500  # points per interactive code plot (a random subset of a large test set)
SVG_SIZE = 300


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


def _short(text: str, n: int = 10) -> str:
    return text if len(text) <= n else text[:n - 1] + "…"


def _images(n: int) -> str:
    return f"{n} image{'' if n == 1 else 's'}"


def _pct(value) -> str:
    return f"{value:.1f}%" if isinstance(value, (int, float)) else "–"


# ----------------------------------------------------------------------------- figures


def cam_cells(inspection, target: str) -> tuple[list[str], list[list[np.ndarray]], list[list]]:
    """(headers, rows of RGB cells, rows of captions) of the map grid for ``target``."""
    cams, test = inspection.cams, inspection.test
    classes = test.classes
    headers = ["image", *cams.columns]
    rows, captions = [], []
    for r, index in enumerate(cams.indices):
        image = test.image(index)
        label = cams.labels[r]
        cells = [render.image_rgb(image)]
        caps: list = [f"#{index} {_short(classes[label], 7)}"]
        for c in range(len(cams.columns)):
            cells.append(render.overlay(image, cams.maps[target][r, c]))
            pred = int(cams.predictions[r, c])
            text = f"{_short(classes[pred], 6)} {100 * cams.confidence[r, c]:.0f}%"
            caps.append((text, "#15803d" if pred == label else "#b91c1c"))
        rows.append(cells)
        captions.append(caps)
    return headers, rows, captions


def _gain_grid(inspection, gain, which: str, path: Path, title: str) -> Path | None:
    indices = gain.a_only if which == "a" else gain.b_only
    if not indices:
        return None
    classes, test = inspection.classes, inspection.test
    shown = indices[:MAX_GAIN_IMAGES]
    per_row = 10
    cells, caps = [], []
    for start in range(0, len(shown), per_row):
        chunk = shown[start:start + per_row]
        cells.append([render.image_rgb(test.image(i)) for i in chunk])
        wrong = gain.pred_b if which == "a" else gain.pred_a
        caps.append([(f"{_short(classes[int(gain.labels[i])], 5)}/{_short(classes[int(wrong[i])], 5)}", "#333333")
                     for i in chunk])
    more = f" (first {len(shown)} of {len(indices)})" if len(indices) > len(shown) else f" ({len(indices)})"
    return render.grid_png(cells, path, captions=caps, cell=56, title=title + more)


def write_figures(inspection, out_dir: Path) -> dict[str, Path]:
    """Every PNG of the report, keyed by a short name."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    if inspection.cams is not None:
        for target in TARGETS:
            headers, rows, captions = cam_cells(inspection, target)
            what = "each model's predicted class" if target == "predicted" else "the true class"
            files[f"maps_{target}"] = render.grid_png(
                rows, out_dir / f"maps_{target}.png", headers=headers, captions=captions,
                title=f"Grad-CAM, {what}; under each map the model's prediction (green right, red wrong)")
    by_granularity: dict[str, list] = {}
    for p in inspection.projections:
        by_granularity.setdefault(p.granularity, []).append(p)
    for i, (granularity, projections) in enumerate(by_granularity.items(), start=1):
        name = f"codes_{i}_{_slug(granularity)}"
        files[name] = render.scatter_png(projections, inspection.classes, out_dir / f"{name}.png",
                                         title=f"granularity {i}: {granularity}")
    for key, gain in (("gap", inspection.gap), ("gain", inspection.gain)):
        if gain is None:
            continue
        title = ("The run's teacher and student" if key == "gap" else "Where the student gained")
        files[f"{key}_per_class"] = render.per_class_png(gain, out_dir / f"{key}_per_class.png", title=title)
        for which, name in (("b", gain.names[1]), ("a", gain.names[0])):
            other = gain.names[0] if which == "b" else gain.names[1]
            path = _gain_grid(inspection, gain, which, out_dir / f"{key}_{which}_only.png",
                              f"right by {_short(name, 40)}, wrong by {_short(other, 40)} (true/wrong answer)")
            if path is not None:
                files[f"{key}_{which}_only"] = path
    return files


# ----------------------------------------------------------------------------- the page


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" data-file="{html.escape(path.name)}" '
            f'alt="{html.escape(alt)}">')


def _svg(projection, colours: list[str], keep: np.ndarray, classes: list[str]) -> str:
    pts = projection.points[keep]
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    xy = 8 + (pts - lo) / span * (SVG_SIZE - 16)
    parts = [f'<svg class="codes" viewBox="0 0 {SVG_SIZE} {SVG_SIZE}" width="{SVG_SIZE}" height="{SVG_SIZE}" '
             f'role="img" aria-label="{html.escape(projection.title)}">']
    for (x, y), i in zip(xy, keep):
        label = int(projection.labels[i])
        parts.append(f'<circle cx="{x:.1f}" cy="{SVG_SIZE - y:.1f}" r="2.6" fill="{colours[label]}" '
                     f'data-i="{int(i)}"><title>test image #{int(i)}: {html.escape(classes[label])}</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1200px;color:#1f2937;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #e5e7eb;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.meta{color:#4b5563;margin:2px 0}img{max-width:100%;image-rendering:pixelated}
table{border-collapse:collapse;margin:8px 0;font-size:13px}td,th{border:1px solid #e5e7eb;padding:3px 8px;text-align:right}
th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}.up{color:#15803d}.down{color:#b91c1c}
.notes{color:#92400e;font-size:13px}.codes{border:1px solid #e5e7eb;margin:4px 8px 4px 0;background:#fff}
.pair{display:flex;flex-wrap:wrap;gap:8px}.pair figure{margin:0}figcaption{font-size:12px;color:#4b5563;max-width:300px}
#hover{position:fixed;pointer-events:none;display:none;border:1px solid #111;background:#fff;width:96px;height:96px;
image-rendering:pixelated;z-index:10}footer{margin-top:40px;color:#6b7280;font-size:12px}
"""

SCRIPT = """
(function(){const thumbs=JSON.parse(document.getElementById('thumbs').textContent);
const hover=document.getElementById('hover');
document.querySelectorAll('svg.codes circle').forEach(function(c){
c.addEventListener('mouseenter',function(e){const t=thumbs[c.dataset.i];if(!t)return;hover.src=t;hover.style.display='block';});
c.addEventListener('mousemove',function(e){hover.style.left=(e.clientX+14)+'px';hover.style.top=(e.clientY+14)+'px';});
c.addEventListener('mouseleave',function(){hover.style.display='none';});});})();
"""


def _gain_section(gain, files: dict[str, Path], key: str, intro: str) -> list[str]:
    a, b = gain.names
    out = [f"<p>{intro}</p>",
           f'<p class="meta">{html.escape(a)}: {_pct(gain.accuracy[0])} · {html.escape(b)}: {_pct(gain.accuracy[1])}'
           f" · right only by {html.escape(b)}: {_images(len(gain.b_only))} · right only by {html.escape(a)}: "
           f"{_images(len(gain.a_only))}</p>"]
    if f"{key}_per_class" in files:
        out.append(_img(files[f"{key}_per_class"], f"per-class accuracy, {a} and {b}"))
    out.append(f"<table><tr><th>class</th><th>images</th><th>{html.escape(a)}</th><th>{html.escape(b)}</th>"
               "<th>difference</th></tr>")
    for row in gain.per_class:
        diff = (row["b"] - row["a"]) if row["a"] is not None and row["b"] is not None else None
        cls = "" if not diff else (' class="up"' if diff > 0 else ' class="down"')
        diff_text = f"{diff:+.1f}" if diff is not None else "–"
        out.append(f"<tr><td>{html.escape(row['class'])}</td><td>{row['images']}</td><td>{_pct(row['a'])}</td>"
                   f"<td>{_pct(row['b'])}</td><td{cls}>{diff_text}</td></tr>")
    out.append("</table>")
    for which in ("b", "a"):
        name = f"{key}_{which}_only"
        if name in files:
            right, wrong = (b, a) if which == "b" else (a, b)
            out.append(f"<h3>Right by {html.escape(right)}, wrong by {html.escape(wrong)}</h3>")
            out.append(_img(files[name], f"test images right by {right} and wrong by {wrong}"))
    return out


def write_html(inspection, files: dict[str, Path], out_dir: Path) -> Path:
    """The self-contained page: every figure of ``files`` embedded, nothing fetched from elsewhere."""
    m, test = inspection.models, inspection.test
    cfg = m.config
    classes = test.classes
    outputs = inspection.outputs
    acc = {name: outputs.accuracy(name) for name in outputs.predictions}
    e = html.escape
    body = [f"<h1>Inspect: {e(m.name)}</h1>",
            f'<p class="meta">Run folder <code>{e(str(m.run_dir))}</code> · data {e(test.name)} '
            f"({len(test)} test images, {len(classes)} classes, {test.image_size[0]}x{test.image_size[1]})</p>",
            f'<p class="meta">{e(cfg.distiller.name)}, MGD {e(cfg.granularity.mode)} · '
            + (f"teacher {e(m.teacher_arch)} {_pct(acc.get('teacher'))} · " if m.teacher is not None else "")
            + "".join(f"head {e(g)} {_pct(acc.get(g))} · " for g in outputs.granularities if g in acc)
            + f"student {e(m.student_arch)} {_pct(acc.get('student'))} (best epoch {m.student_best_epoch})</p>"]
    if inspection.notes:
        body.append('<ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in inspection.notes) + "</ul>")

    body.append("<h2>1. Class-activation maps</h2>")
    if inspection.cams is not None:
        cams = inspection.cams
        layers = "; ".join(f"{e(k)}: {e(v)}" for k, v in cams.layers.items())
        body.append("<p>Grad-CAM (computed by the torchcam library) of the teacher, of each granularity head "
                    "(through its decoded logits on the teacher's features) and of the student, upsampled to the "
                    f"image's size. Feature maps: {layers}.</p>")
        for target in TARGETS:
            key = f"maps_{target}"
            if key in files:
                what = "each model's predicted class" if target == "predicted" else "the true class"
                body.append(f"<h3>For {what}</h3>")
                body.append(_img(files[key], f"class-activation maps for {what}"))

    body.append("<h2>2. Granularity codes in two dimensions</h2>")
    thumbs: dict[str, str] = {}
    if inspection.projections:
        body.append("<p>Each granularity's codes of the test set, centred per image (the code loss compares "
                    "softmax(code / T), which ignores a constant shift), projected to two dimensions and coloured "
                    "by class. The separation is the leave-one-out 5-nearest-neighbour accuracy in the plane. "
                    "In the plots under each figure, hover a point to see its image.</p>")
        body.append("<table><tr><th>granularity</th><th>model</th><th>method</th><th>variance kept</th>"
                    "<th>5-NN in 2-D</th><th>chance</th></tr>")
        for p in inspection.projections:
            share = _pct(100 * p.variance_share) if p.variance_share is not None else "–"
            body.append(f"<tr><td>{e(p.granularity)}</td><td>{e(p.role)}</td><td>{p.method.upper()}</td>"
                        f"<td>{share}</td><td>{_pct(p.separation)}</td><td>{_pct(p.chance)}</td></tr>")
        body.append("</table>")
        n = len(outputs.labels)
        keep = np.arange(n) if n <= MAX_HOVER_POINTS else \
            np.sort(np.random.default_rng(0).choice(n, MAX_HOVER_POINTS, replace=False))
        colours = render.class_colours(len(classes))
        for i in keep:
            thumbs[str(int(i))] = "data:image/png;base64," + base64.b64encode(
                render.thumbnail_png(test.image(int(i)), size=max(8, test.image_size[0]))).decode("ascii")
        by_granularity: dict[str, list] = {}
        for p in inspection.projections:
            by_granularity.setdefault(p.granularity, []).append(p)
        for i, (granularity, projections) in enumerate(by_granularity.items(), start=1):
            body.append(f"<h3>Granularity {i}: {e(granularity)}</h3>")
            key = f"codes_{i}_{_slug(granularity)}"
            if key in files:
                body.append(_img(files[key], f"codes of granularity {granularity}"))
            body.append('<div class="pair">')
            for p in projections:
                subset = "" if len(keep) == n else f" ({len(keep)} of {n} images)"
                body.append(f"<figure>{_svg(p, colours, keep, classes)}<figcaption>{e(p.title)}{subset}"
                            "</figcaption></figure>")
            body.append("</div>")
    else:
        body.append("<p>No granularity codes: this run has no granularity heads.</p>")

    body.append("<h2>3. Where the student gained</h2>")
    if inspection.gain is not None:
        body += _gain_section(inspection.gain, files, "gain", "This run's student against the other run's, "
                              "on the same test images.")
    else:
        body.append("<p>Run <code>mgd-train inspect RUN_DIR --compare OTHER_RUN_DIR</code> to compare this run's "
                    "student with another run's (for example KD against KD + MGD of the same seed).</p>")
    if inspection.gap is not None:
        body.append("<h3>This run's teacher and student</h3>")
        body += _gain_section(inspection.gap, files, "gap", "What the student has and has not taken from its "
                              "teacher, class by class.")

    stamp = datetime.now().isoformat(timespec="seconds")
    body.append(f"<footer>Written by <code>mgd-train inspect</code> (MGD Studio) on {stamp}. "
                f"{len(files)} figures, also saved as PNG files beside this page.</footer>")
    thumbs_json = json.dumps(thumbs).replace("</", "<\\/")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Inspect: {e(m.name)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body)
            + '\n<img id="hover" alt="">'
            + f'\n<script type="application/json" id="thumbs">{thumbs_json}</script>'
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
    path = out_dir / PAGE
    path.write_text(page, encoding="utf-8")
    return path


def write_report(inspection, out_dir: str | Path) -> dict[str, Path]:
    """Write the figures and ``index.html`` to ``out_dir``; returns ``{name: path}`` (the page as ``"html"``)."""
    out_dir = Path(out_dir)
    files = write_figures(inspection, out_dir)
    files["html"] = write_html(inspection, files, out_dir)
    return files
