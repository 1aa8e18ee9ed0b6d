"""What a worker reports for one run: :class:`RunOutcome`, passed from the worker through the
executors to the driver and the store, and written beside the run as ``outcome.json`` (so a
driver that died before recording it, or Slurm jobs whose driver is gone, lose nothing)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

OUTCOME_FILE = "outcome.json"


#: errno values of a full disk or an exceeded quota: the machine's problem, not the run's.
DISK_FULL = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e)


def disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from or while handling, says the disk is
    full (or a quota exceeded): an OSError of :data:`DISK_FULL`, or any error whose message
    carries their text (safetensors, for one, reports a write error as text)."""
    texts = [os.strerror(e) for e in DISK_FULL]
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if (isinstance(exc, OSError) and exc.errno in DISK_FULL) or \
                any(t in str(exc) for t in texts):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class RunOutcome(BaseModel):
    """How one run ended: ``done`` with the record's scalar ``metrics``, ``failed`` with a
    one-line ``error``, or ``pending`` when the machine, not the run, stopped it (a full disk,
    :func:`disk_full`: ``error`` says so, and the run stays to run again; such an outcome is
    never written as ``outcome.json``, which means a finished run); where (``host``, ``pid``)
    and when (epoch seconds ``started_at`` / ``finished_at``, ``wall_time_s``) it ran;
    ``precision`` (``fp32``/``bf16``, the record's) when done; ``pack_size`` when it trained
    in a pack; ``warning`` when its ``outcome.json`` could not be written."""

    model_config = ConfigDict(extra="forbid")

    key: str
    status: Literal["done", "failed", "pending"]
    metrics: dict[str, Any] | None = None
    error: str | None = None
    host: str | None = None
    pid: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    wall_time_s: float | None = None
    precision: str | None = None
    pack_size: int | None = None
    warning: str | None = None


def outcome_path(out_dir: str | Path) -> Path:
    """Where a run's outcome is written: ``<run folder>/outcome.json``."""
    return Path(out_dir) / OUTCOME_FILE


def read_outcome(out_dir: str | Path, key: str) -> RunOutcome | None:
    """The outcome written for run ``key`` in ``out_dir``, or None (absent, unreadable, not an
    outcome, another run's, or not a finished run's)."""
    try:
        outcome = RunOutcome.model_validate(json.loads(outcome_path(out_dir).read_text()))
    except (OSError, ValueError, ValidationError):
        return None
    return outcome if outcome.key == key and outcome.status != "pending" else None
