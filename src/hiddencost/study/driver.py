"""The study driver: expand a spec, bring the store up to date, execute what is missing.

:func:`run_study` does, in order:

1. expand the spec into runs (each keyed by the hash of its resolved configuration);
2. insert the runs missing from the store as pending, all in one transaction;
3. merge finished-but-unrecorded runs: an ``outcome.json`` in a run's artifact folder whose row
   is still pending or running (a driver killed between a run's end and its record, or Slurm
   jobs whose driver is gone);
4. reclaim stale running rows (owner gone, see :func:`hiddencost.study.store.owner_alive`);
5. with ``retry_failed``, reset this study's failed rows to pending;
6. hand the pending runs, in expansion order, to the executor, which claims each one (running)
   before it starts; the driver records every outcome (done with metrics, or failed with its
   error) in one transaction as it arrives.

So a study can be interrupted at any moment (Ctrl-C, SIGKILL, a lost node) and started again
with the same command: it finishes exactly the missing runs, none lost, none recorded twice.
Work is repeated only for runs that were executing when the driver died (Ray tasks and local
runs die with it). Slurm jobs outlive their driver: a restarted driver merges what they have
written and resubmits the rest, so cancel the old jobs (``scancel``) first to save compute; if
a run ends up executed twice, the first result recorded is kept.

Several drivers may share one store (claims are atomic; each skips runs another has claimed),
for instance one per machine on a common study; rows claimed on another host are reclaimed only
with ``reclaim_all`` (``--reclaim-all``), as their owner's liveness cannot be checked from here.

Layout of a study's output folder (default ``hiddencost-results/<name>``)::

    study.sqlite            the store (``--store`` elsewhere, e.g. on local disk)
    artifacts/<key>/        result.json, weights.safetensors, outcome.json (error.txt)
    slurm/                  submitit's job files and logs (Slurm executor)
    fidelity.json           upstream fidelity of each compressed backbone (see
    fidelity/               :mod:`hiddencost.study.fidelity`) and its cache

7. measure the upstream fidelity of every compressed backbone with a done run (top-1 agreement
   and KL against the dense backbone on the dataset's test images, no labels) into
   ``fidelity.json``; on by default for the standard runner, skipped for a custom ``runner``
   (its runs need not be backbone transfers) or with ``fidelity=False``.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from hiddencost.errors import HiddenCostError
from hiddencost.progress import make_progress
from hiddencost.study.executors import Executor, make_executor
from hiddencost.study.fidelity import (
    DEFAULT_FIDELITY_IMAGES,
    FIDELITY_FILE,
    record_study_fidelity,
)
from hiddencost.study.spec import PlannedRun, StudySpec, execution_config, expand
from hiddencost.study.store import Owner, SQLiteStore, open_store
from hiddencost.study.worker import OUTCOME_FILE, Task, read_outcome

DEFAULT_RESULTS = Path("hiddencost-results")
STORE_FILE = "study.sqlite"
#: Fault injection for tests: ``POINT:N`` SIGKILLs the driver the N-th time it reaches POINT
#: (inserted, claimed, executed, recorded).
FAULT_ENV = "HIDDENCOST_STUDY_FAULT"


@dataclass(frozen=True)
class StudyPaths:
    """Where a study keeps its store and artifacts."""

    root: Path
    store: str
    artifacts: Path

    @classmethod
    def resolve(cls, spec: StudySpec, out: str | Path | None = None,
                store: str | Path | None = None) -> StudyPaths:
        root = Path(out) if out is not None else DEFAULT_RESULTS / spec.name
        return cls(root, str(store) if store is not None else str(root / STORE_FILE),
                   root / "artifacts")

    def run_dir(self, key: str) -> Path:
        return self.artifacts / key


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
    executed: int = 0
    failed_now: list[str] = field(default_factory=list)
    wall_s: float = 0.0


class _Faults:
    def __init__(self) -> None:
        point, _, count = os.environ.get(FAULT_ENV, "").partition(":")
        self.point, self.remaining = point, int(count or 1)

    def reach(self, point: str) -> None:
        if point == self.point:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


class _Session:
    """The driver side of :class:`~hiddencost.study.executors.Hooks`."""

    def __init__(self, store: SQLiteStore, owner: Owner, paths: StudyPaths, console: Console,
                 progress: Any, faults: _Faults) -> None:
        self.store, self.owner, self.paths, self.console = store, owner, paths, console
        self.progress, self.faults = progress, faults
        self.executed = 0
        self.failed: list[str] = []
        self.labels: dict[str, str] = {}
        self.runs_bar = self.epochs_bar = None
        self.on_epoch: Callable[[dict], None] | None = None
        if progress is not None:
            self.runs_bar = progress.add_task("runs", total=None, status="")

    def claim(self, task: Task) -> bool:
        if not self.store.claim(task.key, self.owner):
            return False
        (Path(task.out_dir) / OUTCOME_FILE).unlink(missing_ok=True)
        self.labels[task.key] = task.label
        self.faults.reach("claimed")
        return True

    def started(self, task: Task) -> None:
        if self.progress is not None:
            label = task.label if len(task.label) <= 60 else task.label[:59] + "…"
            self.progress.update(self.runs_bar, status=label)
            if self.epochs_bar is not None:
                self.progress.reset(self.epochs_bar, total=task.config.get("epochs"))

    def record(self, outcome: dict[str, Any]) -> None:
        self.faults.reach("executed")
        self.store.record(outcome)
        self.faults.reach("recorded")
        self.executed += 1
        if outcome["status"] == "failed":
            self.failed.append(outcome["key"])
            label = self.labels.get(outcome["key"], outcome["key"])
            self.console.print(f"[red]failed[/] {label}: {outcome.get('error')}",
                               highlight=False, soft_wrap=True)
        if self.progress is not None:
            self.progress.update(self.runs_bar, advance=1)

    def release(self, keys: Sequence[str]) -> None:
        self.store.release(keys, self.owner)

    def enable_epochs(self) -> None:
        if self.progress is None:
            return
        self.epochs_bar = self.progress.add_task("epochs", total=None, status="")

        def on_epoch(rec: dict) -> None:
            loss = rec.get("loss")
            self.progress.update(self.epochs_bar, advance=1,
                                 status="" if loss is None else f"loss {loss:.3f}")

        self.on_epoch = on_epoch


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


def build_tasks(
    runs: Sequence[PlannedRun], paths: StudyPaths, environment: dict[str, Any],
    checkpoint_root: str | None, runner: str | None,
) -> list[Task]:
    """Executable tasks for ``runs`` (identity + environment, artifact folder, runner)."""
    return [
        Task(key=r.key, config=execution_config(r.identity, environment, checkpoint_root),
             out_dir=str(paths.run_dir(r.key).absolute()), runner=runner, label=r.label)
        for r in runs
    ]


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
) -> StudyReport:
    """Run every missing run of ``spec`` (see the module docstring) and report.

    Args:
        out: the study's output folder (default ``hiddencost-results/<name>``).
        store: the store file or URL (default ``<out>/study.sqlite``).
        executor: ``local``, ``ray``, ``slurm`` or an executor object.
        executor_options: keyword arguments of the executor (see
            :mod:`hiddencost.study.executors`); the Slurm folder defaults to ``<out>/slurm``.
        retry_failed: run failed runs again.
        reclaim_all: also reclaim running rows owned by drivers on other hosts (use when you
            know no other driver is running).
        environment: device / data_root / download for every run (not part of identity);
            overrides the spec's ``params``.
        checkpoint_root: where relative checkpoint paths live (overrides the spec's).
        max_runs: execute at most this many runs now.
        console: where to print; ``progress=False`` turns the progress bars off.
        fidelity: record upstream fidelity (step 7); None = when ``spec.runner`` is unset.
        fidelity_images: test images per dataset for fidelity.
    """
    start = time.perf_counter()
    console = console or Console()
    runs = expand(spec)
    keys = [r.key for r in runs]
    paths = StudyPaths.resolve(spec, out, store)
    env = {**spec.environment(), **{k: v for k, v in (environment or {}).items()
                                    if v is not None}}
    # workers (Ray, Slurm) may start in another directory: give them absolute paths
    if env.get("data_root"):
        env["data_root"] = str(Path(env["data_root"]).expanduser().absolute())
    checkpoint_root = checkpoint_root or spec.checkpoint_root
    if checkpoint_root:
        checkpoint_root = str(Path(checkpoint_root).expanduser().absolute())
    faults = _Faults()
    options = dict(executor_options or {})
    if isinstance(executor, str):
        if executor == "slurm":
            options.setdefault("folder", paths.root / "slurm")
        executor = make_executor(executor, **options)
    owner = Owner.current()
    report = StudyReport(spec.name, len(runs), Counter())
    with open_store(paths.store) as db:
        report.new = db.add_pending(spec.name, runs)
        faults.reach("inserted")
        report.merged = merge_outcomes(db, runs, paths)
        report.reclaimed = len(db.reclaim_stale(owner, include_foreign=reclaim_all))
        if retry_failed:
            retried = db.reset_failed(keys)
            for key in retried:
                (paths.run_dir(key) / OUTCOME_FILE).unlink(missing_ok=True)
            report.retried = len(retried)
        rows = db.rows(keys)
        todo = [r for r in runs if rows[r.key].status == "pending"]
        if max_runs is not None:
            todo = todo[:max_runs]
        before = db.counts(keys)
        console.print(
            f"study [bold]{spec.name}[/]: {len(runs)} runs · {before['done']} done · "
            f"{before['failed']} failed · {len(todo)} to run now (executor {executor.name}, "
            f"store {paths.store})", highlight=False, soft_wrap=True)
        tasks = build_tasks(todo, paths, env, checkpoint_root, spec.runner)
        bar = make_progress(console) if progress and tasks else None
        session = _Session(db, owner, paths, console, bar, faults)
        try:
            if bar is not None:
                bar.start()
                bar.update(session.runs_bar, total=len(tasks))
                if executor.name == "local":
                    session.enable_epochs()
            executor.execute(tasks, session)
        except KeyboardInterrupt:
            if bar is not None:
                bar.stop()
            counts = db.counts(keys)
            console.print(f"interrupted: {counts['done']} of {len(runs)} runs done; run the "
                          "same command again to finish the others", highlight=False)
            raise
        finally:
            if bar is not None:
                bar.stop()
        report.counts = db.counts(keys)
        rows = db.rows(keys)
    report.executed = session.executed
    report.failed_now = session.failed
    report.wall_s = time.perf_counter() - start
    c = report.counts
    console.print(f"study [bold]{spec.name}[/]: {c['done']} done · {c['failed']} failed · "
                  f"{c['pending'] + c['running']} not run · {report.executed} executed in "
                  f"{report.wall_s:.1f} s", highlight=False)
    if c["failed"]:
        console.print("rerun failed runs with --retry-failed; errors: "
                      "hiddencost study status --failed", highlight=False)
    done = [r for r in runs if rows[r.key].status == "done"]
    if (spec.runner is None if fidelity is None else fidelity) and done:
        _fidelity(spec, done, paths, env, checkpoint_root, fidelity_images, console, progress)
    return report


def _fidelity(spec: StudySpec, done: Sequence[PlannedRun], paths: StudyPaths,
              env: dict[str, Any], checkpoint_root: str | None, images: int, console: Console,
              progress: bool) -> list[dict[str, Any]]:
    entries = record_study_fidelity(
        spec, done, paths.root, images_per_dataset=images, checkpoint_root=checkpoint_root,
        device=env.get("device") or "auto", data_root=env.get("data_root"),
        download=bool(env.get("download")), console=console, progress=progress)
    if entries:
        ok = sum(e.get("error") is None for e in entries)
        console.print(f"fidelity: {ok} of {len(entries)} compressed backbone × dataset pairs "
                      f"measured → {paths.root / FIDELITY_FILE}", highlight=False,
                      soft_wrap=True)
    return entries


def done_runs(spec: StudySpec, paths: StudyPaths) -> list[PlannedRun]:
    """The runs of ``spec`` that the store holds as done, in expansion order."""
    runs = expand(spec)
    if not Path(paths.store).exists() and "://" not in paths.store:
        return []
    with open_store(paths.store) as db:
        rows = db.rows(r.key for r in runs)
    return [r for r in runs if r.key in rows and rows[r.key].status == "done"]


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
) -> list[dict[str, Any]]:
    """Step 7 of :func:`run_study` alone: record the fidelity of the compressed backbones of
    the study's done runs (e.g. on a GPU node, after ``run_study(..., fidelity=False)`` on a
    cluster's login node). Arguments as in :func:`run_study`; returns the entries."""
    paths = StudyPaths.resolve(spec, out, store)
    env = {**spec.environment(), **{k: v for k, v in (environment or {}).items()
                                    if v is not None}}
    done = done_runs(spec, paths)
    if not done:
        raise HiddenCostError(f"study {spec.name} has no done runs in {paths.store}: run it "
                              "first (hiddencost study run)")
    root = checkpoint_root or spec.checkpoint_root
    return _fidelity(spec, done, paths, env, root, images_per_dataset,
                     console or Console(), progress)


def load_records(spec: StudySpec, out: str | Path | None = None,
                 store: str | Path | None = None) -> list[dict[str, Any]]:
    """The ``result.json`` records of the study's done runs, in expansion order."""
    import json

    paths = StudyPaths.resolve(spec, out, store)
    records = []
    for run in done_runs(spec, paths):
        path = paths.run_dir(run.key) / "result.json"
        try:
            records.append(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise HiddenCostError(f"run {run.key} is done but {path} is unreadable: {exc}") \
                from None
    return records


def run_preset(
    name: str,
    out: str | Path,
    console: Console | None = None,
    params: dict[str, Any] | None = None,
    device: str | None = None,
    executor: str = "local",
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Run a preset through the study machinery (resumable) and return the result records of
    its done runs in expansion order. ``params`` overrides shared hyper-parameters (which
    changes the runs' identities, e.g. ``{"epochs": 2}``); ``device`` does not. Other keyword
    arguments go to :func:`run_study`."""
    from hiddencost.study.catalog import load_preset

    spec = load_preset(name)
    if params:
        spec = spec.with_params(**{k: v for k, v in params.items() if v is not None})
    run_study(spec, out=out, executor=executor, console=console,
              environment={"device": device}, **kwargs)
    return load_records(spec, out)
