"""One line of text for an engine event, for logs: the studio's log panel describes a live run
and a run reopened from its ``metrics.jsonl`` with the same function, so both read the same.

Events are taken as dicts (``event.to_dict()`` or one line of ``metrics.jsonl``). Per-step
events (``StepLosses``, ``StageProgress``, ``CheckpointWritten``) are not described: they
are for progress bars and plots, not for reading.
"""

from __future__ import annotations

from typing import Any

from engine.plan import format_duration


def _pct(value: Any) -> str:
    return f"{value:.2f}%" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def finished_text(summary: dict, stopped: bool = False) -> str:
    """How a run ended, from its summary: ``Finished: student resnet8 71.23% (best, epoch 12)``."""
    if stopped or summary.get("status") == "stopped":
        return f"Stopped in the {summary.get('stopped_in', '?')} stage; resume it from the Runs panel"
    student = summary.get("student") or {}
    acc = student.get("best_acc")
    if isinstance(acc, (int, float)):
        return f"Finished: student {student.get('arch')} {acc:.2f}% (best, epoch {student.get('best_epoch')})"
    return "Finished"


def describe_event(e: dict) -> tuple[str, str] | None:
    """``(level, text)`` for an event worth a line in a log (level ``info``, ``warning`` or
    ``error``), or None for the events a log leaves out."""
    kind = e.get("event")
    if kind == "PlanReady":
        stages = (e.get("plan") or {}).get("stages") or []
        return "info", "Plan: " + " → ".join(
            s.get("name", "?") + (f" ({s.get('epochs')} epochs)" if s.get("action") == "train" else "")
            + (" [done]" if s.get("done") else "") for s in stages)
    if kind == "RunStarted":
        verb = "Resumed" if e.get("resumed") else "Started"
        return "info", f"{verb} in {e.get('run_dir')} on {e.get('device') or 'the default device'}"
    if kind == "DatasetInfo":
        shape = "×".join(str(v) for v in e.get("input_shape") or [])
        return "info", (f"data: {e.get('name')}, {len(e.get('classes') or [])} classes, "
                        f"{e.get('train_size', 0):,} training / {e.get('test_size', 0):,} test images of {shape}")
    if kind == "StageStarted":
        if e.get("parameters"):
            start = f", from epoch {e['start_epoch'] + 1}" if e.get("start_epoch") else ""
            return "info", (f"{e['stage']}: {e.get('epochs')} epochs × {e.get('steps_per_epoch')} steps, "
                            f"{e['parameters']:,} trainable parameters{start}")
        return "info", f"{e['stage']} started"
    if kind == "EpochEnd":
        loss = (e.get("losses") or {}).get("total", 0.0)
        return "info", (f"{e['stage']} epoch {e['epoch']}/{e['epochs']}: loss {loss:.4f}, "
                        f"train {e.get('train_acc', 0):.2f}%, test {e.get('test_acc', 0):.2f}% "
                        f"({e.get('seconds', 0):.1f} s)")
    if kind == "HeadAccuracies":
        heads = ", ".join(f"d={h.get('dim')} T={h.get('temperature', 0):g}: {_pct(h.get('test_acc'))}"
                          for h in e.get("heads") or [])
        return "info", f"heads (best test accuracy): {heads}; teacher {_pct(e.get('teacher_acc'))}"
    if kind == "Evaluation" and e.get("stage") == "evaluate":
        return "info", f"{e.get('model')} evaluated: {_pct(e.get('accuracy'))} (epoch {e.get('epoch')})"
    if kind == "NoiseCurve":
        points = ", ".join(f"{lv:g}: {acc:.1f}%" for lv, acc in zip(e.get("levels") or [], e.get("accuracies") or []))
        return "info", f"{e.get('model')} noise robustness: {points}"
    if kind == "StageFinished":
        return "info", f"{e['stage']} stage finished in {format_duration(e.get('seconds') or 0)}"
    if kind == "Log":
        return str(e.get("level") or "info"), str(e.get("message", ""))
    if kind == "Paused":
        return "warning", f"Paused in the {e.get('stage') or '?'} stage"
    if kind == "Resumed":
        return "info", f"Resumed the {e.get('stage') or '?'} stage"
    if kind == "Exported":
        return "info", "exported: " + ", ".join(f"{k} {v}" for k, v in (e.get("files") or {}).items())
    if kind == "RunFinished":
        return "info", finished_text(e.get("summary") or {}, bool(e.get("stopped")))
    if kind == "RunFailed":
        return "error", (f"Run failed ({e.get('kind')}, {e.get('stage')} stage): {e.get('message')}")
    return None


__all__ = ["describe_event", "finished_text"]
