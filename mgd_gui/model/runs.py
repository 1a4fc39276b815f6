"""The runs the window shows, without Qt: the runs being trained (one, or a queued group by job
id) and the records of finished runs read back from their folders (cached until their
``metrics.jsonl`` changes)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mgd_gui.run.record import RunRecord

ENDED = ("finished", "stopped", "failed")


class RunsModel:
    def __init__(self) -> None:
        self.live: RunRecord | None = None  # the run being trained (the first of a group)
        self.group: dict[str, RunRecord] = {}  # a queued group's runs, by job id
        self._cache: dict[Path, tuple[float, RunRecord]] = {}

    # -- the runs being trained ----------------------------------------------------------------
    def begin(self, record: RunRecord) -> None:
        self.live, self.group = record, {}

    def begin_group(self, records: dict[str, RunRecord]) -> None:
        self.group = dict(records)
        self.live = next(iter(self.group.values()), None)

    def live_list(self) -> list[RunRecord]:
        """The records of the runs being trained: a queued group's, or the one run's."""
        if self.group:
            return list(self.group.values())
        return [self.live] if self.live is not None else []

    def record_of(self, tag: str | None) -> RunRecord | None:
        """The record an engine event is for (a group's events carry their job's id)."""
        return self.group.get(tag) if tag is not None else self.live

    def is_live(self, record: RunRecord) -> bool:
        return any(record is r for r in self.live_list())

    def active_dirs(self, status: str) -> dict[Path, str]:
        """The folders of the runs still training, each with ``status`` ("running", "paused")."""
        return {r.run_dir: status for r in self.live_list() if r.run_dir is not None and r.status not in ENDED}

    def fail_unended(self, info: dict) -> None:
        for record in self.live_list():
            if record.status not in ENDED:
                record.status, record.failure = "failed", info

    def ended(self) -> None:
        """The runs being trained ended: their folders are read afresh when next shown."""
        for record in self.live_list():
            if record.run_dir:
                self._cache.pop(record.run_dir, None)

    # -- finished runs ------------------------------------------------------------------------
    def record_for(self, path: Path, *, training: bool, label: Callable[[Path], str],
                   status: Callable[[Path], str]) -> RunRecord:
        """The record of the run in ``path``: the live one while it trains, else read from its folder
        (``label`` and ``status`` name it as the runs panel does)."""
        from engine.runs import read_metrics

        path = Path(path)
        if training:
            for record in self.live_list():
                if record.run_dir == path:
                    return record
        metrics = path / "metrics.jsonl"
        mtime = metrics.stat().st_mtime if metrics.exists() else 0.0
        cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        record = RunRecord.from_events(read_metrics(path), path, label(path))
        record.status = status(path)
        self._cache[path] = (mtime, record)
        return record

    def forget_missing(self) -> None:
        for path in [p for p in self._cache if not p.exists()]:
            self._cache.pop(path, None)
