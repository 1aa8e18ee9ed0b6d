"""Executors: how the pending runs of a study get executed.

Every executor receives packs of :class:`~hiddencost.study.worker.Task` objects (runs that
train together through one backbone pass, see :func:`hiddencost.run.run_pack`; most packs hold
one run) and a :class:`Hooks` object from the driver. It must ``claim_pack`` a pack (the driver
marks its runs running, in one transaction) before it starts, hand every run's outcome to
``record`` (the driver writes the store: workers never do) and ``release`` the runs it claimed
but could not finish when interrupted.

- :class:`LocalExecutor`: in-process and sequential, one :class:`~hiddencost.run.RunCache`.
- :class:`RayExecutor`: Ray Core tasks (not Ray Tune, far too slow for thousands of short
  runs), one task per pack, at most ``max_in_flight`` submitted at once, ``num_gpus`` per
  task may be a fraction (``0.25`` puts four tasks on a GPU; by default one for runs meant for
  CUDA, :meth:`RayExecutor.task_gpus`); outcomes are recorded as they arrive. Local Ray by
  default, a cluster with ``address`` or ``RAY_ADDRESS``. Needs ``pip install
  'hiddencost[ray]'``.
- :class:`SlurmExecutor`: a submitit job array (``map_array``), whole packs adding up to
  about ``runs_per_job`` runs per array job. Jobs write one ``outcome.json`` per run on the
  shared filesystem and the driver merges them into its store, so the store can stay on local
  disk when the cluster filesystem is NFS (where SQLite is unsafe). A job pre-empted or out of
  time is requeued and resumes its runs; its time limit comes from a GPU profile's estimate.
  submitit's ``local`` and ``debug`` clusters run the same path on one machine. Needs
  ``pip install 'hiddencost[slurm]'``.

Executors register themselves by name (:func:`register_executor`) in :data:`EXECUTORS`, the one
table that ``--executor``, :func:`make_executor` and the driver read; an executor class says
itself what it defaults to for a study (:meth:`ExecutorBase.defaults`, e.g. the Slurm folder
``<out>/slurm``) and which options it takes (the keyword arguments of its constructor).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Protocol, TypeVar

from hiddencost.errors import HiddenCostError
from hiddencost.records import EpochRecord
from hiddencost.registry import Registry
from hiddencost.study.outcome import RunOutcome, read_outcome
from hiddencost.study.packing import local_gpu
from hiddencost.study.worker import (
    ResumableChunk,
    Task,
    execute_pack,
    execute_pack_in_process_cache,
    failed_outcome,
    one_line_error,
)

log = logging.getLogger(__name__)
#: A Slurm job's time limit without ``timeout_min`` or a profile to estimate it from (minutes).
DEFAULT_TIMEOUT_MIN = 60
#: The estimated time of a job's runs is multiplied by this, plus this many minutes (start-up,
#: data loading, a slower node), for its time limit.
TIME_MARGIN, TIME_EXTRA_MIN = 1.5, 10


class Hooks(Protocol):
    """What an executor calls back into the driver."""

    on_epoch: Callable[[EpochRecord], None] | None

    def claim_pack(self, pack: Sequence[Task]) -> list[Task]:
        """Mark the pack's runs running (one transaction); returns those still pending, the
        others are skipped."""
        ...

    def started(self, pack: Sequence[Task]) -> None:
        """The pack is about to execute (for progress display)."""
        ...

    def record(self, outcome: RunOutcome) -> None:
        """Store a finished run's outcome."""
        ...

    def release(self, keys: Sequence[str]) -> None:
        """Return claimed but unfinished runs to pending."""
        ...


class Executor(Protocol):
    """Executes tasks through the driver's :class:`Hooks`."""

    name: str
    #: Runs execute in the driver's process, so per-epoch progress can be shown.
    in_process: bool

    def execute(self, packs: Sequence[Sequence[Task]], hooks: Hooks) -> None: ...


class ExecutorBase:
    """What registered executors share: a name, and the class-level facts the driver and the
    command line read before an executor exists."""

    name: ClassVar[str]
    in_process: ClassVar[bool] = False

    @classmethod
    def defaults(cls, study_root: Path) -> dict[str, Any]:
        """Option defaults for a study whose output folder is ``study_root``."""
        return {}

    def runs_on_gpu(self, device: str | None) -> bool:
        """Whether runs of ``device`` (``auto``, ``cpu``, ``cuda[:i]``) execute on a CUDA GPU
        here; what sizes packs by default (:func:`~hiddencost.study.packing.default_pack_size`),
        decided where the runs execute, not on the driver. The base: this process."""
        return local_gpu(device)

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        """The options this executor takes: its constructor's keyword arguments."""
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)


_E = TypeVar("_E", bound=type[ExecutorBase])
#: The executors by name, in registration order (local, ray, slurm).
EXECUTORS: Registry[type[ExecutorBase]] = Registry("executor")


def register_executor(cls: _E) -> _E:
    """Class decorator: make an executor available by its ``name``."""
    EXECUTORS.add(cls.name, cls)
    return cls


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or explain in one line how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise HiddenCostError(f"the {extra} executor needs {module}, which is not installed: "
                              f"pip install 'hiddencost[{extra}]'") from None


@register_executor
class LocalExecutor(ExecutorBase):
    """Runs packs one after the other in this process, sharing one RunCache."""

    name = "local"
    in_process = True

    def __init__(self) -> None:
        self.cache: Any = None  # a RunCache, made on first use

    def execute(self, packs: Sequence[Sequence[Task]], hooks: Hooks) -> None:
        if self.cache is None:
            from hiddencost.run import RunCache  # lazy: torch, only when runs execute here

            self.cache = RunCache()
        for pack in packs:
            claimed = hooks.claim_pack(pack)
            if not claimed:
                continue
            hooks.started(claimed)
            try:
                outcomes = execute_pack(claimed, cache=self.cache, on_epoch=hooks.on_epoch)
            except BaseException:
                hooks.release([t.key for t in claimed])
                raise
            for outcome in outcomes:
                hooks.record(outcome)


@register_executor
class RayExecutor(ExecutorBase):
    """Ray Core tasks with a bounded number in flight; see the module docstring."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: float = 1.0,
        num_gpus: float | None = None,
        max_in_flight: int | None = None,
        max_retries: int = 1,
    ) -> None:
        if num_cpus <= 0 or (num_gpus is not None and num_gpus < 0):
            raise HiddenCostError("--num-cpus must be > 0 and --num-gpus >= 0 (fractions allowed)")
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.max_in_flight = max_in_flight
        self.max_retries = max_retries
        self._started_here = False

    def _connect(self) -> ModuleType:
        """Ray, initialised (a local Ray, or ``address``) unless it already is."""
        ray = require("ray", "ray")
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
            self._started_here = True
        return ray

    def task_gpus(self, device: str | None) -> float:
        """GPUs per task for runs of ``device``: ``num_gpus`` when given, else 0 for ``cpu``, 1
        for ``cuda`` and, for ``auto``, 1 when the cluster has GPUs (a task without one would
        see none and train on its CPU). ``cuda`` with ``num_gpus`` 0 is a one-line error."""
        device = str(device or "auto")
        if self.num_gpus is not None:
            if device.startswith("cuda") and not self.num_gpus:
                raise HiddenCostError(f"--device {device} with --num-gpus 0: Ray would give the "
                                      "runs no GPU; give --num-gpus (e.g. 1, or 0.25 to share)")
            return self.num_gpus
        if device == "cpu":
            return 0.0
        if device.startswith("cuda"):
            return 1.0
        return 1.0 if self._connect().cluster_resources().get("GPU", 0.0) else 0.0

    def runs_on_gpu(self, device: str | None) -> bool:
        return self.task_gpus(device) > 0

    def _slots(self, ray: ModuleType, num_gpus: float) -> int:
        resources = ray.cluster_resources()
        slots = resources.get("CPU", 1.0) / self.num_cpus
        if num_gpus:
            gpus = resources.get("GPU", 0.0)
            if not gpus:
                raise HiddenCostError(f"--num-gpus {num_gpus} per run, but the Ray cluster "
                                      "has no GPU")
            slots = min(slots, gpus / num_gpus)
        return max(1, int(slots))

    def execute(self, packs: Sequence[Sequence[Task]], hooks: Hooks) -> None:
        ray = self._connect()
        try:
            if packs:
                self._run(ray, packs, hooks, self.task_gpus(packs[0][0].config.get("device")))
        finally:
            if self._started_here:
                ray.shutdown()
                self._started_here = False

    def _run(self, ray: ModuleType, packs: Sequence[Sequence[Task]], hooks: Hooks,
             num_gpus: float) -> None:
        remote = ray.remote(execute_pack_in_process_cache).options(
            num_cpus=self.num_cpus, num_gpus=num_gpus, max_retries=self.max_retries)
        limit = self.max_in_flight or 2 * self._slots(ray, num_gpus)
        queue = deque(packs)
        in_flight: dict[Any, list[Task]] = {}
        try:
            while queue or in_flight:
                while queue and len(in_flight) < limit:
                    claimed = hooks.claim_pack(queue.popleft())
                    if claimed:
                        hooks.started(claimed)
                        in_flight[remote.remote(claimed)] = claimed
                if not in_flight:
                    break
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    for outcome in self._outcomes(ray, ref, in_flight.pop(ref)):
                        hooks.record(outcome)
        except BaseException:
            for ref in in_flight:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
            hooks.release([t.key for pack in in_flight.values() for t in pack])
            raise

    @staticmethod
    def _outcomes(ray: ModuleType, ref: Any, pack: list[Task]) -> list[RunOutcome]:
        """The outcomes a finished Ray task returned, or a failure for each of its runs."""
        try:
            return ray.get(ref)
        except Exception as exc:  # the worker died: its runs failed, not the study
            return [failed_outcome(t, f"ray: {one_line_error(exc)}", cause=exc) for t in pack]


@register_executor
class SlurmExecutor(ExecutorBase):
    """A submitit job array; see the module docstring.

    ``cluster``: None (detect; Slurm on a Slurm login node), ``"slurm"``, ``"local"`` (one
    subprocess per job on this machine) or ``"debug"`` (in this process, for tests).
    ``folder`` (submitit's job files and logs) defaults to ``<out>/slurm`` in a study.

    Jobs are requeued when pre-empted or out of time, up to ``max_requeues`` times, and their
    runs resume from their last epoch (:class:`~hiddencost.study.worker.ResumableChunk`).
    ``timeout_min`` (None): the longest job's estimated time from ``profile`` (a GPU profile,
    see :mod:`hiddencost.study.plan`) × :data:`TIME_MARGIN` + :data:`TIME_EXTRA_MIN` minutes,
    else :data:`DEFAULT_TIMEOUT_MIN` with a notice. ``gpus_per_node`` (None): 1 for runs of
    ``--device cuda``, else 0; ``cuda`` with 0 is a one-line error.
    """

    name = "slurm"

    @classmethod
    def defaults(cls, study_root: Path) -> dict[str, Any]:
        return {"folder": study_root / "slurm"}

    def __init__(
        self,
        folder: str | Path,
        cluster: str | None = None,
        partition: str | None = None,
        timeout_min: int | None = None,
        gpus_per_node: int | None = None,
        cpus_per_task: int | None = None,
        mem_gb: float | None = None,
        array_parallelism: int = 256,
        runs_per_job: int = 1,
        poll_s: float = 5.0,
        profile: str | Path | None = None,
        max_requeues: int = 10,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if runs_per_job < 1:
            raise HiddenCostError("--runs-per-job must be at least 1")
        self.folder = Path(folder)
        self.cluster = cluster
        self.timeout_min = timeout_min
        self.gpus_per_node = gpus_per_node
        self.profile = profile
        self.max_requeues = max_requeues
        self.parameters: dict[str, Any] = {
            "name": "hiddencost", "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
            "slurm_partition": partition, "slurm_array_parallelism": array_parallelism,
            **(extra or {}),
        }
        self.runs_per_job = runs_per_job
        self.poll_s = poll_s

    def job_gpus(self, device: str | None) -> int:
        """GPUs per array job for runs of ``device`` (see the class docstring)."""
        device = str(device or "auto")
        if self.gpus_per_node is None:
            return 1 if device.startswith("cuda") else 0
        if device.startswith("cuda") and not self.gpus_per_node:
            raise HiddenCostError(f"--device {device} with --gpus-per-node 0: the jobs would "
                                  "have no GPU; give --gpus-per-node")
        return self.gpus_per_node

    def runs_on_gpu(self, device: str | None) -> bool:
        return self.job_gpus(device) > 0

    def time_limit(self, chunks: Sequence[Sequence[Sequence[Task]]]) -> int:
        """Minutes per array job: ``timeout_min``, else from ``profile`` (see the class
        docstring)."""
        if self.timeout_min is not None:
            return self.timeout_min
        estimate = None
        if self.profile is not None:
            from hiddencost.study.plan import estimate_s, read_profile  # lazy: torch

            profile = read_profile(self.profile)
            seconds = [estimate_s([t.config for pack in chunk for t in pack], profile)
                       for chunk in chunks]
            if None not in seconds:
                estimate = max(s for s in seconds if s is not None)
        if estimate is None:
            log.warning("slurm: %d min per job (%s); a job out of time is requeued and its "
                        "runs resume", DEFAULT_TIMEOUT_MIN,
                        "no --profile to estimate it from" if self.profile is None
                        else f"{self.profile} lacks a model or dataset of these runs")
            return DEFAULT_TIMEOUT_MIN
        return math.ceil(estimate * TIME_MARGIN / 60) + TIME_EXTRA_MIN

    def execute(self, packs: Sequence[Sequence[Task]], hooks: Hooks) -> None:
        submitit = require("submitit", "slurm")
        claimed_packs = [c for c in (hooks.claim_pack(p) for p in packs) if c]
        claimed = [t for pack in claimed_packs for t in pack]
        if not claimed:
            return
        chunks = _chunks(claimed_packs, self.runs_per_job)
        outstanding = {t.key: t for t in claimed}
        jobs: list[tuple[Any, list[Task]]] = []
        try:
            executor = submitit.AutoExecutor(folder=self.folder, cluster=self.cluster,
                                             slurm_max_num_timeout=self.max_requeues)
            device = claimed[0].config.get("device")
            if self.gpus_per_node is None and not self.runs_on_gpu(device):
                log.warning("slurm: jobs without a GPU (--device %s, no --gpus-per-node)",
                            device or "auto")
            executor.update_parameters(
                timeout_min=self.time_limit(chunks), gpus_per_node=self.job_gpus(device),
                **{k: v for k, v in self.parameters.items() if v is not None})
            jobs = list(zip(executor.map_array(ResumableChunk(), chunks),
                            [[t for pack in chunk for t in pack] for chunk in chunks],
                            strict=True))
            for pack in claimed_packs:
                hooks.started(pack)
            while outstanding:
                self._collect(outstanding, hooks)
                jobs = [(job, chunk) for job, chunk in jobs
                        if not self._finish(job, chunk, outstanding, hooks)]
                if outstanding:
                    time.sleep(self.poll_s)
        except BaseException:
            for job, _ in jobs:
                try:
                    job.cancel(check=False)
                except Exception:  # already finished or gone
                    pass
            hooks.release(list(outstanding))
            raise

    @staticmethod
    def _collect(outstanding: dict[str, Task], hooks: Hooks) -> None:
        for key, task in list(outstanding.items()):
            outcome = read_outcome(task.out_dir, key)
            if outcome is not None:
                del outstanding[key]
                hooks.record(outcome)

    @staticmethod
    def _finish(job: Any, chunk: list[Task], outstanding: dict[str, Task], hooks: Hooks) -> bool:
        """Record what a finished job left; False while it is still running."""
        if not job.done():
            return False
        results: dict[str, RunOutcome] = {}
        reason, cause = "no result", None
        try:
            results = {o.key: o for o in job.result()}
        except Exception as exc:  # the job crashed, timed out or was cancelled
            reason, cause = one_line_error(exc), exc
        for task in chunk:
            if task.key not in outstanding:
                continue
            outcome = read_outcome(task.out_dir, task.key) or results.get(task.key)
            if outcome is None:
                outcome = failed_outcome(
                    task, f"slurm job {job.job_id} ended without a result: {reason}",
                    cause=cause)
            del outstanding[task.key]
            hooks.record(outcome)
        return True


def _chunks(packs: Sequence[list[Task]], runs_per_job: int) -> list[list[list[Task]]]:
    """Whole packs grouped into chunks of at least ``runs_per_job`` runs (the last may hold
    fewer), in order: one chunk per array job."""
    chunks: list[list[list[Task]]] = []
    size = runs_per_job
    for pack in packs:
        if size >= runs_per_job:
            chunks.append([])
            size = 0
        chunks[-1].append(pack)
        size += len(pack)
    return chunks


def executor_class(name: str) -> type[ExecutorBase]:
    """The registered executor called ``name``; unknown names are a one-line error."""
    return EXECUTORS.get(name)


def executor_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``given`` that executor ``name`` takes (e.g. from every executor option
    of the command line, those of the chosen executor)."""
    accepted = executor_class(name).option_names()
    return {k: v for k, v in given.items() if k in accepted}


def make_executor(name: str, study_root: str | Path | None = None, **options: Any) -> Executor:
    """An executor by name with its options, over its defaults for a study whose output folder
    is ``study_root`` (when given); an option it does not take is a one-line error."""
    cls = executor_class(name)
    unknown = sorted(set(options) - set(cls.option_names()))
    if unknown:
        raise HiddenCostError(f"the {name} executor takes no option {unknown[0]!r}; options: "
                              f"{', '.join(cls.option_names()) or 'none'}")
    defaults = cls.defaults(Path(study_root)) if study_root is not None else {}
    return cls(**{**defaults, **options})
