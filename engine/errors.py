"""Exception types of the engine.

``InputError`` is the user's to fix (a bad config, a missing data folder, a checkpoint
for another architecture): ``mgd-train`` prints its message on one line and exits 2.
``TrainingError`` is a failure while training (a NaN loss, out of memory): exit 1.
"""

from __future__ import annotations


class MGDError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(MGDError):
    """Bad input: the message names the field, file or value and what is allowed.

    ``field`` is the dotted config path at fault when one is (the studio marks it there)."""

    field: str | None = None

    def at(self, field: str) -> "InputError":
        """This error, attributed to ``field`` unless it already names one."""
        if not self.field:
            self.field = field
        return self


class ConfigError(InputError):
    """A config field holds a value the schema does not allow."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}" if field else message)


class DataError(InputError):
    """A data set cannot be found or read."""


class CheckpointError(InputError):
    """A checkpoint is missing, unreadable, or for another architecture."""


class TrainingError(MGDError):
    """Training failed (a non-finite loss, out of memory, ...)."""

    def __init__(self, message: str, kind: str = "error"):
        self.kind = kind  # "nan", "oom", "error"
        super().__init__(message)


class ProcessFailed(TrainingError):
    """A run of several processes failed (:func:`engine.processes.run_processes`). ``rank`` is the
    process that failed first; ``message``, ``kind``, ``stage`` and ``details`` are its failure
    record's (or the launcher's words for a process that died without one, such as a killed one)."""

    def __init__(self, message: str, kind: str = "error", *, stage: str = "", details: str = "",
                 rank: int | None = None, run_dir: str = ""):
        super().__init__(message, kind)
        self.stage, self.details, self.rank, self.run_dir = stage, details, rank, run_dir


class ProcessRefused(InputError):
    """A process of a run of several processes refused its input (it exited 2): the message (and
    ``field``) are its failure record's; ``kind`` is ``"input"``."""

    kind = "input"

    def __init__(self, message: str, *, field: str | None = None, stage: str = "setup", details: str = "",
                 rank: int | None = None, run_dir: str = ""):
        super().__init__(message)
        self.field = field
        self.stage, self.details, self.rank, self.run_dir = stage, details, rank, run_dir


class StopRequested(MGDError):
    """Raised inside the training loop when the user asked to stop."""
