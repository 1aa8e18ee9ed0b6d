"""The study driver: expand a spec, bring the store up to date, execute what is missing.

:func:`run_study` does, in order:

1. expand the spec into runs (each keyed by the hash of its resolved configuration); a store
   written with an older identity version is re-keyed first (:mod:`hiddencost.study.migrate`:
   its finished runs are kept);
2. insert the runs missing from the store as pending, all in one transaction;
3. merge finished-but-unrecorded runs: an ``outcome.json`` in a run's artifact folder whose row
   is still pending or running (a driver killed between a run's end and its record, or Slurm
   jobs whose driver is gone);
4. reclaim stale running rows (owner gone, see :func:`hiddencost.study.store.owner_alive`);
5. with ``retry_failed``, reset this study's failed rows to pending;
6. group the pending runs into packs (``pack`` runs that train through one backbone pass, see
   :mod:`hiddencost.study.packing`; packs of one by default on CPU) and hand them, in expansion
   order, to the executor, which claims a pack's runs together (running, one transaction)
   before it starts; the driver records every run's outcome (done with metrics, or failed with
   its error) in one transaction as it arrives; a run that a full disk stopped stays pending,
   and the study stops there with one line (free space, run the same command again);
7. measure the upstream fidelity of every compressed backbone with a done run (top-1 agreement
   and KL against the dense backbone on the dataset's test images, no labels) into
   ``fidelity.json``; on by default for the standard runner, skipped for a custom ``runner``
   (its runs need not be backbone transfers) or with ``fidelity=False``.

So a study can be interrupted at any moment (Ctrl-C, SIGKILL, a lost node) and started again
with the same command: it finishes exactly the missing runs, none lost, none recorded twice.
Work is repeated only for runs that were executing when the driver died (Ray tasks and local
runs die with it). Slurm jobs outlive their driver: a restarted driver merges what they have
written and resubmits the rest, so cancel the old jobs (``scancel``) first to save compute; if
a run ends up executed twice, the first result recorded is kept.

Several drivers may share one store (claims are atomic; each skips runs another has claimed),
for instance one per machine on a common study; rows claimed on another host are reclaimed only
with ``reclaim_all`` (``--reclaim-all``), as their owner's liveness cannot be checked from here.

``on_event`` (monitoring) is called at each of the driver's durable steps, :data:`EVENTS`:
``("inserted", None)`` once the pending rows are in the store, then per run ``("claimed",
key)``, ``("executed", key)`` (the outcome arrived, not yet recorded) and ``("recorded",
key)``. The store is consistent at each of them, which is also what makes them the points where
the kill-safety tests SIGKILL a driver.

The output folder's layout is described in :mod:`hiddencost.study.layout`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress

from hiddencost.config import IDENTITY_VERSION, Environment
from hiddencost.errors import HiddenCostError, validation_message
from hiddencost.progress import make_progress
from hiddencost.records import EpochRecord, RunRecord
from hiddencost.study.catalog import load_preset
from hiddencost.study.executors import Executor, make_executor
from hiddencost.study.fidelity_file import DEFAULT_FIDELITY_IMAGES, FIDELITY_FILE, FidelityEntry
from hiddencost.study.layout import RESULT_FILE, StudyPaths
from hiddencost.study.migrate import rekey_store
from hiddencost.study.outcome import OUTCOME_FILE, RunOutcome, read_outcome
from hiddencost.study.packing import default_pack_size, form_packs
from hiddencost.study.results import StudyRuns, load_records, read_study
from hiddencost.study.spec import (
    PlannedRun,
    StudySpec,
    execution_config,
    expand,
    spec_fingerprint,
)
from hiddencost.study.store import Owner, SQLiteStore
from hiddencost.study.worker import Task

#: The steps reported to ``on_event``, in the order a run passes them (see the module docstring).
EVENTS: tuple[str, ...] = ("inserted", "claimed", "executed", "recorded")
#: ``on_event(step, key)``: ``key`` is the run's key, None for ``inserted``.
EventHook = Callable[[str, str | None], None]


def _no_event(step: str, key: str | None) -> None:
    """The default ``on_event``: nobody is listening."""


@dataclass
class StudyReport:
    """What one ``run_study`` call found and did."""

    name: str
    total: int
    counts: Counter[str]
    new: int = 0
    merged: int = 0
    reclaimed: int = 0
    retried: int = 0
    missing: int = 0  # done runs with no result.json (verify: none that reads back)
    verified: int = 0  # of those, reset to pending by verify
    executed: int = 0
    failed_now: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def resolve_environment(spec: StudySpec, environment: dict[str, Any] | None = None,
                        checkpoint_root: str | None = None) -> Environment:
    """The spec's environment (``params`` fields, ``checkpoint_root``) overridden by the given
    values (None = not given), with ``data_root`` and ``checkpoint_root`` made absolute:
    workers (Ray, Slurm) may start in another directory."""
    fields = {**spec.environment(),
              **{k: v for k, v in (environment or {}).items() if v is not None}}
    if fields.get("data_root"):
        fields["data_root"] = str(Path(fields["data_root"]).expanduser().absolute())
    root = checkpoint_root or spec.checkpoint_root
    try:
        return Environment(**fields,
                           checkpoint_root=str(Path(root).expanduser().absolute()) if root
                           else None)
    except ValidationError as exc:
        raise HiddenCostError(f"invalid environment: {validation_message(exc)}") from None


class _Session:
    """The driver side of :class:`~hiddencost.study.executors.Hooks`."""

    def __init__(self, store: SQLiteStore, owner: Owner, console: Console,
                 on_event: EventHook) -> None:
        self.store, self.owner, self.console, self.emit = store, owner, console, on_event
        self.executed = 0
        self.failed: list[str] = []
        self.disk_full: str | None = None  # the error of a run a full disk stopped
        self.labels: dict[str, str] = {}
        self.progress: Progress | None = None
        self.runs_bar = self.epochs_bar = None
        self.on_epoch: Callable[[EpochRecord], None] | None = None

    def show(self, progress: Progress | None, total: int, epochs: bool) -> None:
        """Display a runs bar of ``total`` on ``progress`` and, with ``epochs``, an epochs bar
        fed by ``on_epoch`` (only in-process executors call it)."""
        self.progress = progress
        if progress is None:
            return
        self.runs_bar = progress.add_task("runs", total=total, status="")
        if epochs:
            self.epochs_bar = progress.add_task("epochs", total=None, status="")
            self.on_epoch = self._epoch

    def _epoch(self, rec: EpochRecord) -> None:
        self.progress.update(self.epochs_bar, advance=1, status=f"loss {rec.loss:.3f}")

    def stop_if_disk_full(self) -> None:
        """One line, once a run found the disk full: every later run would too."""
        if self.disk_full is not None:
            raise HiddenCostError(f"the disk is full ({self.disk_full}): the study stopped and "
                                  "its unfinished runs stay pending (none is recorded as "
                                  "failed); free some space and run the same command again")

    def claim_pack(self, pack: Sequence[Task]) -> list[Task]:
        self.stop_if_disk_full()
        keys = set(self.store.claim_many([t.key for t in pack], self.owner))
        claimed = [t for t in pack if t.key in keys]
        for task in claimed:
            (Path(task.out_dir) / OUTCOME_FILE).unlink(missing_ok=True)
            self.labels[task.key] = task.label
            self.emit("claimed", task.key)
        return claimed

    def started(self, pack: Sequence[Task]) -> None:
        if self.progress is not None:
            task = pack[0]
            label = task.label if len(task.label) <= 60 else task.label[:59] + "…"
            if len(pack) > 1:
                label = f"{label} (+{len(pack) - 1} packed)"
            self.progress.update(self.runs_bar, status=label)
            if self.epochs_bar is not None:
                self.progress.reset(self.epochs_bar, total=task.config.get("epochs"))

    def record(self, outcome: RunOutcome) -> None:
        self.emit("executed", outcome.key)
        self.store.record(outcome)
        self.emit("recorded", outcome.key)
        if outcome.status == "pending":  # not run to its end (a full disk): left to run
            self.disk_full = self.disk_full or outcome.error
            return
        self.executed += 1
        if outcome.status == "failed":
            self.failed.append(outcome.key)
            label = self.labels.get(outcome.key, outcome.key)
            self.console.print(f"[red]failed[/] {label}: {outcome.error}",
                               highlight=False, soft_wrap=True)
        if self.progress is not None:
            self.progress.update(self.runs_bar, advance=1)

    def release(self, keys: Sequence[str]) -> None:
        self.store.release(keys, self.owner)


def merge_outcomes(store: SQLiteStore, runs: Sequence[PlannedRun], paths: StudyPaths) -> int:
    """Record outcome files of runs that finished but were never recorded; return how many."""
    rows = store.rows(r.key for r in runs)
    merged = 0
    for run in runs:
        row = rows.get(run.key)
        if row is None or row.status not in ("pending", "running"):
            continue
        outcome = read_outcome(paths.run_dir(run.key), run.key)
        if outcome is not None and store.record(outcome):
            merged += 1
    return merged


def build_tasks(runs: Sequence[PlannedRun], paths: StudyPaths, environment: Environment,
                runner: str | None) -> list[Task]:
    """Executable tasks for ``runs`` (identity + environment, artifact folder, runner)."""
    return [
        Task(key=r.key,
             config=execution_config(r.identity, environment.run_fields(),
                                     environment.checkpoint_root),
             out_dir=str(paths.run_dir(r.key).absolute()), runner=runner, label=r.label)
        for r in runs
    ]


def _rekey(db: SQLiteStore, paths: StudyPaths, console: Console) -> None:
    """Step 0: a store of older run keys is re-keyed once (its finished runs are kept)."""
    if not db.needs_rekey:
        return
    done = rekey_store(db, paths.artifacts)
    console.print(f"store {paths.store}: {done.moved} runs re-keyed to identity version "
                  f"{IDENTITY_VERSION} (nothing re-run)"
                  + (f", {done.merged} duplicates merged" if done.merged else "")
                  + (f"; {len(done.kept)} left as they were (e.g. {next(iter(done.kept.values()))})"
                     if done.kept else ""), highlight=False, soft_wrap=True)


def _sync_store(db: SQLiteStore, spec: StudySpec, runs: Sequence[PlannedRun],
                paths: StudyPaths, owner: Owner, report: StudyReport, *, reclaim_all: bool,
                retry_failed: bool, emit: EventHook) -> None:
    """Steps 2–5: insert the missing runs, merge unrecorded outcomes, reclaim stale rows and
    (with ``retry_failed``) reset failed ones; the counts go into ``report``."""
    report.new = db.add_pending(spec.name, runs)
    db.record_expansion(spec.name, spec_fingerprint(spec), runs)
    emit("inserted", None)
    report.merged = merge_outcomes(db, runs, paths)
    report.reclaimed = len(db.reclaim_stale(owner, include_foreign=reclaim_all))
    if retry_failed:
        retried = db.reset_failed(r.key for r in runs)
        for key in retried:
            (paths.run_dir(key) / OUTCOME_FILE).unlink(missing_ok=True)
        report.retried = len(retried)


def _check_results(db: SQLiteStore, runs: Sequence[PlannedRun], paths: StudyPaths,
                   report: StudyReport, verify: bool) -> None:
    """Done runs without a ``result.json`` are counted (a look at each, not a read); with
    ``verify`` every one is read as the report reads it
    (:meth:`~hiddencost.study.results.StudyRuns.missing_results`), and those that are gone or
    do not read back as a record (garbled, not a record, a symbolic link) are reset to
    pending, their outcome and broken result file removed (a link, not what it points to), so
    this call runs them again."""
    study = StudyRuns(paths, list(runs), db.rows(r.key for r in runs), True)
    missing = study.missing_results(read=verify)
    report.missing = len(missing)
    if verify and missing:
        for key in missing:
            for name in (OUTCOME_FILE, RESULT_FILE):
                path = paths.run_dir(key) / name
                if path.is_symlink() or not path.is_dir():  # a folder there fails the run
                    path.unlink(missing_ok=True)
        report.verified = len(db.reset(missing, "done"))


def check_max_runs(max_runs: int | None) -> None:
    """Refuse a ``max_runs`` below 1 (``-1`` would slice off the last run, 0 run nothing and
    exit 0), before anything is read or written."""
    if max_runs is not None and max_runs < 1:
        raise HiddenCostError(f"--max-runs must be at least 1, got {max_runs} (--dry-run shows "
                              "what would run without running it)")


def _pending(db: SQLiteStore, runs: Sequence[PlannedRun], max_runs: int | None
             ) -> list[PlannedRun]:
    """The pending runs in expansion order, at most ``max_runs``."""
    rows = db.rows(r.key for r in runs)
    todo = [r for r in runs if rows[r.key].status == "pending"]
    return todo if max_runs is None else todo[:max_runs]


def _execute(executor: Executor, packs: Sequence[Sequence[Task]], session: _Session,
             keys: Sequence[str], console: Console, progress: bool) -> None:
    """Step 6 behind progress bars; on Ctrl-C say how far the study got, then re-raise."""
    total = sum(len(p) for p in packs)
    bar = make_progress(console) if progress and total else None
    session.show(bar, total, epochs=executor.in_process)
    try:
        if bar is not None:
            bar.start()
        executor.execute(packs, session)
    except KeyboardInterrupt:
        if bar is not None:
            bar.stop()
        done = session.store.counts(keys)["done"]
        console.print(f"interrupted: {done} of {len(keys)} runs done; run the same command "
                      "again to finish the others", highlight=False)
        raise
    finally:
        if bar is not None:
            bar.stop()


def _print_plan(console: Console, spec: StudySpec, counts: Counter[str], todo: int,
                packs: int, executor: Executor, paths: StudyPaths, report: StudyReport) -> None:
    if report.missing and not report.verified:
        console.print(f"[yellow]warning:[/] {report.missing} done runs have no "
                      f"{RESULT_FILE} under {paths.artifacts}; run them again with --verify",
                      highlight=False, soft_wrap=True)
    console.print(
        f"study [bold]{spec.name}[/]: {sum(counts.values())} runs · {counts['done']} done · "
        f"{counts['failed']} failed · {todo} to run now"
        f"{f' in {packs} packs' if packs < todo else ''} (executor {executor.name}, "
        f"store {paths.store})", highlight=False, soft_wrap=True)


def _print_summary(console: Console, report: StudyReport) -> None:
    c = report.counts
    console.print(f"study [bold]{report.name}[/]: {c['done']} done · {c['failed']} failed · "
                  f"{c['pending'] + c['running']} not run · {report.executed} executed in "
                  f"{report.wall_s:.1f} s", highlight=False)
    if c["failed"]:
        console.print("rerun failed runs with --retry-failed; errors: "
                      "hiddencost study status --failed", highlight=False)


def run_study(
    spec: StudySpec,
    *,
    out: str | Path | None = None,
    store: str | Path | None = None,
    executor: str | Executor = "local",
    executor_options: dict[str, Any] | None = None,
    retry_failed: bool = False,
    reclaim_all: bool = False,
    environment: dict[str, Any] | None = None,
    checkpoint_root: str | None = None,
    max_runs: int | None = None,
    console: Console | None = None,
    progress: bool = True,
    fidelity: bool | None = None,
    fidelity_images: int = DEFAULT_FIDELITY_IMAGES,
    on_event: EventHook | None = None,
    verify: bool = False,
    pack: int | None = None,
) -> StudyReport:
    """Run every missing run of ``spec`` (see the module docstring) and report.

    Args:
        out: the study's output folder (default ``hiddencost-results/<name>``).
        store: the store file or URL (default ``<out>/study.sqlite``).
        executor: a registered executor's name (``local``, ``ray``, ``slurm``, see
            :data:`hiddencost.study.executors.EXECUTORS`) or an executor object.
        executor_options: keyword arguments of a named executor, over its defaults for this
            study (e.g. the Slurm folder ``<out>/slurm``).
        retry_failed: run failed runs again.
        reclaim_all: also reclaim running rows owned by drivers on other hosts (use when you
            know no other driver is running).
        environment: device / data_root / download for every run (not part of identity);
            overrides the spec's ``params``.
        checkpoint_root: where relative checkpoint paths live (overrides the spec's).
        max_runs: execute at most this many runs now (at least 1).
        console: where to print the plan, progress bars and summary (None: nothing is
            printed; the returned report says what happened); ``progress=False`` turns the
            progress bars off.
        fidelity: record upstream fidelity (step 7); None = when ``spec.runner`` is unset.
        fidelity_images: test images per dataset for fidelity.
        on_event: called as ``on_event(step, key)`` at each step of :data:`EVENTS`.
        verify: read every done run's ``result.json`` as the report reads it, and run again
            those that are missing or do not read back as a record (without it, the done runs
            with no ``result.json`` file are only counted, and a warning names how many).
        pack: at most this many runs train together through one backbone pass (see
            :mod:`hiddencost.study.packing`); None: 1 where the executor runs them on a CPU,
            several on a GPU, full-data runs alone.
    """
    check_max_runs(max_runs)
    start = time.perf_counter()
    console = console or Console(quiet=True)  # a library call prints nothing unless given one
    runs = expand(spec)
    keys = [r.key for r in runs]
    paths = StudyPaths.resolve(spec, out, store)
    env = resolve_environment(spec, environment, checkpoint_root)
    if isinstance(executor, str):
        executor = make_executor(executor, paths.root, **(executor_options or {}))
    # where the runs execute sizes their packs; a device the executor cannot give them (cuda
    # with no GPU per task) is refused here, before the store is touched
    on_gpu = executor.runs_on_gpu(env.device)
    report = StudyReport(spec.name, len(runs), Counter())
    owner = Owner.current()  # one per session: its claims, and what it may reclaim
    emit = on_event or _no_event
    with paths.writable(), paths.location.open() as db:
        _rekey(db, paths, console)
        _sync_store(db, spec, runs, paths, owner, report, reclaim_all=reclaim_all,
                    retry_failed=retry_failed, emit=emit)
        _check_results(db, runs, paths, report, verify)
        todo = _pending(db, runs, max_runs)
        if todo and executor.name == "local":
            _check_precision(db.precision, env, paths)
        size = pack if pack is not None else default_pack_size(on_gpu)
        packs = form_packs(build_tasks(todo, paths, env, spec.runner), size,
                           pack_full_data=pack is not None)
        _print_plan(console, spec, db.counts(keys), len(todo), len(packs), executor, paths,
                    report)
        session = _Session(db, owner, console, emit)
        _execute(executor, packs, session, keys, console, progress)
        session.stop_if_disk_full()
        report.counts = db.counts(keys)
        rows = db.rows(keys)
    report.executed, report.failed_now = session.executed, session.failed
    report.wall_s = time.perf_counter() - start
    _print_summary(console, report)
    done = [r for r in runs if rows[r.key].status == "done"]
    if (spec.runner is None if fidelity is None else fidelity) and done:
        with paths.writable():
            _fidelity(spec, done, paths, env, fidelity_images, console, progress)
    return report


def _check_precision(held: str | None, env: Environment, paths: StudyPaths) -> None:
    """Refuse, before anything runs here, a precision other than the one the store holds
    (remote executors resolve ``auto`` on their own devices: the store refuses their runs one
    by one instead, see :meth:`~hiddencost.study.store.SQLiteStore.record`)."""
    if held is None:
        return
    from hiddencost.device import resolve_device  # lazy: torch
    from hiddencost.precision import resolve_precision  # lazy: torch

    here = resolve_precision(env.precision, resolve_device(env.device))
    if here != held:
        raise HiddenCostError(f"{paths.store} holds {held} results but these runs would train "
                              f"in {here} (--precision {env.precision}, device {env.device}): "
                              f"run with --precision {held}, or in another --out")


def _fidelity(spec: StudySpec, done: Sequence[PlannedRun], paths: StudyPaths, env: Environment,
              images: int, console: Console, progress: bool) -> list[FidelityEntry]:
    from hiddencost.study.fidelity import record_study_fidelity  # lazy: measuring loads torch

    entries = record_study_fidelity(
        spec, done, paths.root, images_per_dataset=images, checkpoint_root=env.checkpoint_root,
        device=env.device, data_root=env.data_root, download=env.download, console=console,
        progress=progress)
    if entries:
        ok = sum(e.error is None for e in entries)
        console.print(f"fidelity: {ok} of {len(entries)} compressed backbone × dataset pairs "
                      f"measured → {paths.root / FIDELITY_FILE}", highlight=False,
                      soft_wrap=True)
    return entries


def study_fidelity(
    spec: StudySpec,
    *,
    out: str | Path | None = None,
    store: str | Path | None = None,
    environment: dict[str, Any] | None = None,
    checkpoint_root: str | None = None,
    images_per_dataset: int = DEFAULT_FIDELITY_IMAGES,
    console: Console | None = None,
    progress: bool = True,
) -> list[FidelityEntry]:
    """Step 7 of :func:`run_study` alone: record the fidelity of the compressed backbones of
    the study's done runs (e.g. on a GPU node, after ``run_study(..., fidelity=False)`` on a
    cluster's login node). Arguments as in :func:`run_study`; returns the entries."""
    study = read_study(spec, out, store)
    done = [run for run, _ in study.done()]
    if not done:
        raise HiddenCostError(f"study {spec.name} has no done runs in {study.paths.store}: run "
                              "it first (hiddencost study run)")
    with study.paths.writable():
        return _fidelity(spec, done, study.paths,
                         resolve_environment(spec, environment, checkpoint_root),
                         images_per_dataset, console or Console(quiet=True), progress)


def run_preset(
    name: str,
    out: str | Path,
    console: Console | None = None,
    params: dict[str, Any] | None = None,
    device: str | None = None,
    executor: str = "local",
    **kwargs: Any,
) -> list[RunRecord]:
    """Run a preset through the study machinery (resumable) and return the result records of
    its done runs in expansion order. ``params`` overrides shared hyper-parameters (which
    changes the runs' identities, e.g. ``{"epochs": 2}``); ``device`` does not. Other keyword
    arguments go to :func:`run_study`."""
    spec = load_preset(name)
    if params:
        spec = spec.with_params(**{k: v for k, v in params.items() if v is not None})
    run_study(spec, out=out, executor=executor, console=console,
              environment={"device": device}, **kwargs)
    return load_records(spec, out)
