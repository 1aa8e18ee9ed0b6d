"""What runs on a worker: one task in, one outcome out (and a result file beside the artifacts).

A :class:`Task` is everything a worker needs to execute one run, as plain picklable data. The
worker (the driver itself, a Ray task or a Slurm job) calls the runner (default
:func:`hiddencost.run.run_one`), which writes ``result.json`` and the weights into
``<artifacts>/<key>/``, checks what the runner returned against the result-record schema
(:class:`hiddencost.records.RunRecord`: custom runners are held to the same schema as real
runs), and then writes ``outcome.json`` there: the outcome the driver records (status, the
record's scalar metrics or the one-line error, timings, host). ``outcome.json`` is written
last and atomically, so its presence means the run finished; a driver that was killed before
recording it merges it on its next start, and the Slurm driver reads these files instead of
sharing the database with its jobs. A failure also leaves ``error.txt`` (the traceback). A
run that a full disk stopped is the machine's failure, not the run's: its outcome is pending
(:func:`~hiddencost.study.outcome.disk_full`), no ``outcome.json`` is written, and the driver
leaves it to run again.

This module imports neither torch nor the store, so that workers start quickly.
"""

from __future__ import annotations

import gc
import importlib.metadata
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hiddencost.errors import HiddenCostError
from hiddencost.records import EpochRecord, RunRecord, as_record
from hiddencost.study.outcome import (  # noqa: F401 (re-exported: the worker's outcome API)
    OUTCOME_FILE,
    RunOutcome,
    disk_full,
    outcome_path,
    read_outcome,
)

ERROR_FILE = "error.txt"
#: How many loaded datasets / LP feature sets a worker keeps between runs.
CACHE_ENTRIES = 2

#: A runner returns a :class:`~hiddencost.records.RunRecord` or its JSON dict.
Runner = Callable[..., RunRecord | dict[str, Any]]
#: The entry-point group through which packages register study runners by name.
RUNNER_GROUP = "hiddencost.runners"
#: The runner of every study that names none: :func:`hiddencost.run.run_one`.
DEFAULT_RUNNER = "run_one"
_RUNNERS: dict[str, Runner] = {}
_PROCESS_CACHE: list[Any] = []


@dataclass(frozen=True)
class Task:
    """One run to execute: its key, RunConfig keyword arguments (identity plus environment),
    the artifact folder, the runner's name (None = ``run_one``) and a display label."""

    key: str
    config: dict[str, Any]
    out_dir: str
    runner: str | None = None
    label: str = ""


def register_runner(name: str, runner: Runner) -> Runner:
    """Make ``runner`` (with :func:`hiddencost.run.run_one`'s signature) the study runner
    ``name`` in this process; a package registers runners for every process of a study
    through the :data:`RUNNER_GROUP` entry-point group instead."""
    if name == DEFAULT_RUNNER or not callable(runner):
        raise HiddenCostError(f"cannot register runner {name!r}: a callable under a new name")
    _RUNNERS[name] = runner
    return runner


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=RUNNER_GROUP)}


def runner_names() -> list[str]:
    """``run_one`` and every runner registered here or by an installed package."""
    return list(dict.fromkeys([DEFAULT_RUNNER, *_RUNNERS, *sorted(_entry_points())]))


def resolve_runner(name: str | None) -> Runner:
    """The runner called ``name`` (None: ``run_one``, :func:`hiddencost.run.run_one`): one
    registered in this process, or an installed package's :data:`RUNNER_GROUP` entry point;
    an unknown name is a one-line error listing the known ones."""
    name = name or DEFAULT_RUNNER
    if name in _RUNNERS:
        return _RUNNERS[name]
    if name == DEFAULT_RUNNER:
        from hiddencost.run import run_one  # lazy: keeps torch out of the worker's start-up

        return run_one
    point = _entry_points().get(name)
    if point is None:
        raise HiddenCostError(f"unknown runner {name!r}; known: {', '.join(runner_names())}")
    try:
        runner = point.load()
    except (ImportError, AttributeError) as exc:
        raise HiddenCostError(f"cannot load runner {name!r} ({point.value}): {exc}") from None
    if not callable(runner):
        raise HiddenCostError(f"runner {name!r} ({point.value}) is not callable")
    _RUNNERS[name] = runner
    return runner


def process_cache() -> Any:
    """The :class:`hiddencost.run.RunCache` of this worker process (created on first use)."""
    if not _PROCESS_CACHE:
        from hiddencost.run import RunCache  # lazy: keeps torch out of the worker's start-up

        _PROCESS_CACHE.append(RunCache())
    return _PROCESS_CACHE[0]


def trim_cache(cache: Any, keep: int = CACHE_ENTRIES) -> None:
    """Drop the oldest datasets and LP features beyond ``keep`` of each (bounded memory in
    long-lived workers; runs are ordered so that those sharing data are adjacent)."""
    for name in ("datasets", "features"):
        entries = getattr(cache, name, None)
        while isinstance(entries, dict) and len(entries) > keep:
            entries.pop(next(iter(entries)))


def checked_record(data: Any, source: str) -> RunRecord:
    """``data`` (a :class:`~hiddencost.records.RunRecord` or its JSON dict) validated against
    the record schema; otherwise a one-line HiddenCostError naming ``source``."""
    try:
        return as_record(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "record"
        raise HiddenCostError(f"{source} is not a valid result record: {where}: "
                              f"{err['msg']}") from None


def one_line_error(exc: BaseException, limit: int = 500) -> str:
    """``Type: first line of the message``, at most ``limit`` characters."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename: readers see all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def failed_outcome(task: Task, error: str, started_at: float | None = None,
                   cause: BaseException | None = None) -> RunOutcome:
    """An outcome for a run that ended without producing one (crashed worker, lost job):
    failed, or pending when ``cause`` is a full disk (:func:`disk_full`)."""
    return RunOutcome(key=task.key, status="pending" if disk_full(cause) else "failed",
                      error=error, started_at=started_at, finished_at=time.time())


def _finish(task: Task, record: RunRecord | None, error: str | None, started_at: float,
            t0: float, pack_size: int | None = None, full: bool = False) -> RunOutcome:
    """The run's outcome (done with ``record``'s scalar metrics and precision, else failed with
    ``error``, or pending when the disk was ``full``; where and when it ran), written as its
    ``outcome.json`` when the run finished."""
    status = "done" if record is not None else "pending" if full else "failed"
    outcome = RunOutcome(key=task.key, status=status,
                         metrics=None if record is None else record.scalar_metrics(),
                         precision=None if record is None else record.precision, error=error,
                         host=socket.gethostname(), pid=os.getpid(), started_at=started_at,
                         finished_at=time.time(), wall_time_s=time.perf_counter() - t0,
                         pack_size=pack_size)
    if status == "pending":
        return outcome
    try:
        write_json_atomic(outcome_path(task.out_dir), outcome.model_dump(exclude_none=True))
    except OSError as exc:
        outcome = outcome.model_copy(update={"warning": f"could not write {OUTCOME_FILE}: {exc}"})
    return outcome


def execute_task(
    task: Task, cache: Any = None, on_epoch: Callable[[EpochRecord], None] | None = None
) -> RunOutcome:
    """Run one task and return its outcome; never raises for a failing run (only for
    KeyboardInterrupt and other BaseExceptions, and when its folder cannot be made), so one
    failure cannot stop a study. A run stopped by a full disk is pending, not failed."""
    out_dir = Path(task.out_dir)
    # an output folder that cannot be written is the study's problem, not this run's: it
    # raises (the driver stops with one line) instead of failing every remaining run
    out_dir.mkdir(parents=True, exist_ok=True)
    started_at = time.time()
    t0 = time.perf_counter()
    try:
        runner = resolve_runner(task.runner)
        from hiddencost.run import RunConfig  # lazy: keeps torch out of the worker's start-up

        cfg = RunConfig.model_validate(task.config)
        record: RunRecord | None = checked_record(
            runner(cfg, out_dir=out_dir, cache=cache, on_epoch=on_epoch),
            f"what runner {task.runner or 'run_one'} returned")
        error, full = None, False
    except Exception as exc:  # a failing run is data, not a crash
        record, error, full = None, one_line_error(exc), disk_full(exc)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / ERROR_FILE).write_text(traceback.format_exc())
        except OSError:
            pass
    finally:
        if cache is not None:
            trim_cache(cache)
    return _finish(task, record, error, started_at, t0, full=full)


def execute_pack(
    tasks: Sequence[Task], cache: Any = None, on_epoch: Callable[[EpochRecord], None] | None = None
) -> list[RunOutcome]:
    """Run the tasks of a pack together (:func:`hiddencost.run.run_pack`) and return one
    outcome per task, each written to its own folder. A pack of one, or of a custom runner, is
    :func:`execute_task`. When the pack fails as a whole (out of device memory, one run
    diverging), each half is executed again as a smaller pack, down to single runs, so every
    run ends with its own outcome and a failing run fails alone; a full disk is not the pack's
    fault: its runs are all pending at once."""
    if len(tasks) == 1 or any(t.runner is not None for t in tasks):
        return [execute_task(t, cache, on_epoch if i == 0 else None)
                for i, t in enumerate(tasks)]
    for task in tasks:
        Path(task.out_dir).mkdir(parents=True, exist_ok=True)
    started_at, t0 = time.time(), time.perf_counter()
    checked: list[RunRecord] | None = None
    full: str | None = None
    try:
        from hiddencost.run import RunConfig, run_pack  # lazy: torch

        records = run_pack([RunConfig.model_validate(t.config) for t in tasks],
                           [t.out_dir for t in tasks], cache=cache, on_epoch=on_epoch)
        checked = [checked_record(r, "what run_pack returned") for r in records]
    except Exception as exc:  # smaller packs, below: see the docstring
        full = one_line_error(exc) if disk_full(exc) else None
    finally:
        if cache is not None:
            trim_cache(cache)
    if full is not None:
        return [_finish(task, None, full, started_at, t0, full=True) for task in tasks]
    if checked is None:
        # out of the except block, so the failed pack's traceback (and the tensors its frames
        # hold) is gone before the halves allocate theirs
        release_device_memory()
        half = len(tasks) // 2
        return [*execute_pack(tasks[:half], cache, on_epoch),
                *execute_pack(tasks[half:], cache, None)]
    return [_finish(task, r, None, started_at, t0, pack_size=len(tasks))
            for task, r in zip(tasks, checked, strict=True)]


def release_device_memory() -> None:
    """Free what a failed pack left: collect its garbage and, on CUDA, return the caching
    allocator's unused blocks (an out-of-memory retry otherwise sees the same full device)."""
    gc.collect()
    torch = sys.modules.get("torch")  # never imported here for it: a worker may not use torch
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def execute_pack_in_process_cache(tasks: Sequence[Task]) -> list[RunOutcome]:
    """:func:`execute_pack` with this process's cache (the Ray task body)."""
    return execute_pack(tasks, cache=process_cache())


def execute_chunk(packs: Sequence[Sequence[Task]]) -> list[RunOutcome]:
    """Several packs in one process, sharing a cache (the body of one Slurm array job). A run
    whose ``outcome.json`` is already there (this job ran it before it was requeued: the
    driver deletes a run's outcome when it claims the run) is not run again. Once a run finds
    the disk full, the job's later runs are not started: they are pending too."""
    outcomes: dict[str, RunOutcome] = {}
    full: str | None = None
    for pack in packs:
        finished = {t.key: o for t in pack if (o := read_outcome(t.out_dir, t.key)) is not None}
        todo = [t for t in pack if t.key not in finished]
        if full is not None:
            ran = [RunOutcome(key=t.key, status="pending", error=full) for t in todo]
        else:
            ran = execute_pack(todo, cache=process_cache()) if todo else []
            full = next((o.error for o in ran if o.status == "pending"), None)
        outcomes.update(finished)
        outcomes.update((o.key, o) for o in ran)
    return [outcomes[t.key] for pack in packs for t in pack]


class ResumableChunk:
    """The body of a Slurm array job (:func:`execute_chunk`) that submitit can requeue.

    When the job is pre-empted or reaches its time limit, submitit calls :meth:`checkpoint`
    (Slurm's USR2 signal, shortly before the kill) and requeues the job with what it returns:
    this callable and the same packs. The requeued job skips the runs that finished, and the
    others resume from their last epoch (each VP run's ``state.pt``, see
    :mod:`hiddencost.prompting.run_state`), so a time limit cuts a chunk short, never its
    work. (submitit's ``Checkpointable`` is this protocol; written out here so that the worker
    imports no submitit until a job is checkpointed.)"""

    def __call__(self, packs: Sequence[Sequence[Task]]) -> list[RunOutcome]:
        return execute_chunk(packs)

    def checkpoint(self, packs: Sequence[Sequence[Task]]) -> Any:
        """What submitit requeues: ``self(packs)`` again."""
        from submitit.helpers import DelayedSubmission  # lazy: only Slurm jobs come here

        return DelayedSubmission(self, packs)
