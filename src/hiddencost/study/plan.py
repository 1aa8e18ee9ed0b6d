"""A cost plan for the runs a study still has to do, before a cluster is committed.

For each pending run the plan counts the images that go through the backbone, as its method
says (:meth:`~hiddencost.prompting.methods.TransferMethod.work`):

- VP (``ilm``, ``flm``, ``rlm``, ``fm``): E·n training images forward and backward, plus one
  forward of the subset per frequency mapping (``ilm``: every k-th epoch; ``flm``: once), plus
  the test split forward;
- ``lp``: one forward of the training pool and the test split per (model, compression,
  dataset) feature set, shared by its runs (the head itself costs nothing in comparison);
- ``xmr``: E·n (or max_steps × batch, if fewer) canvases forward and backward, plus the test
  split; CLIP's ``vp``/``ilm`` as VP (ILM-TP-VP maps every epoch), ``zero-shot`` the test split;

with n = N·K for N-shot runs (at most the training pool) and the pool for full data, from the
datasets' registered split sizes. Throughput comes from a few timed steps of each (model,
input size) with random weights on this machine's device (:func:`measure_throughput`), or from
a :class:`Profile` (``--profile``, written by ``benchmarks/bench_gpu.py`` on the GPU that will
run the study): images/s per batch size, train and eval, and the gain packing brings per
N-shot. A run's training images are timed at its own batch size (1-shot batches of 1–8 fill a
GPU far less than full data's 128), its forward passes at the largest measured batch, and the
packable part of its time is divided by its N-shot's packing gain. Device time divided by
``--gpus`` is the wall time of perfect scheduling: a lower bound.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiddencost.errors import HiddenCostError
from hiddencost.study.spec import PlannedRun

#: Batch sizes of the timed steps.
TRAIN_PROBE_BATCH, EVAL_PROBE_BATCH = 16, 64
#: Batch sizes a profile measures (the protocol's batch sizes: 1-shot to full data).
PROFILE_BATCHES: tuple[int, ...] = (8, 16, 32, 64, 128)
#: The batch of the runs' forward passes (mapping passes, the test split).
PREDICT_BATCH = 256
#: The format a profile file says it is in.
PROFILE_FORMAT = "hiddencost-profile/2"


@dataclass(frozen=True)
class Throughput:
    """Images per second through one backbone at one input size."""

    train_img_s: float  # forward + backward to the input (a VP / xmr step)
    eval_img_s: float  # forward only, no gradients


@dataclass(frozen=True)
class Profile:
    """Measured throughputs of a device: ``throughputs[ARCH@SIZE][batch]``, and ``pack_gain``
    by N-shot label (``"1"``, ``"10"``, ``"full"``; ``"*"`` for every other budget): how many
    times faster a pack trains than its runs one at a time. Written by
    ``benchmarks/bench_gpu.py`` (:func:`write_profile`), read by ``study plan --profile``."""

    throughputs: dict[str, dict[int, Throughput]]
    pack_gain: dict[str, float] = field(default_factory=dict)
    device: str | None = None
    precision: str | None = None

    def throughput(self, key: str, batch: int) -> Throughput | None:
        """At the largest measured batch ≤ ``batch`` (the smallest measured when all are
        larger); None when ``key`` was not measured."""
        by_batch = self.throughputs.get(key)
        if not by_batch:
            return None
        below = [b for b in by_batch if b <= batch]
        return by_batch[max(below) if below else min(by_batch)]

    def gain(self, n_shot: int | None) -> float:
        """The packing gain of an N-shot budget: its own, else that of the smallest measured
        budget above it (full data above every N; gains fall as batches grow, so this errs
        on the slow side), else ``"*"``, else 1."""
        label = "full" if n_shot is None else str(n_shot)
        if label in self.pack_gain:
            return self.pack_gain[label]
        n = math.inf if n_shot is None else n_shot
        above = [(math.inf if k == "full" else float(k), v) for k, v in self.pack_gain.items()
                 if k != "*" and (k == "full" or float(k) >= n)]
        return min(above)[1] if above else self.pack_gain.get("*", 1.0)


@dataclass(frozen=True)
class RunCost:
    """What one run puts through the backbone."""

    throughput_key: str  # ARCH@SIZE (e.g. resnet50@224)
    train_images: int
    eval_images: int
    shared: tuple | None = None  # LP: its feature set, counted once
    packable: bool = False  # packing speeds it up (its method packs runs)
    batch_size: int = TRAIN_PROBE_BATCH  # of its training steps
    n_shot: int | None = None  # its budget (the packing gain is per budget)


@dataclass
class Plan:
    """The plan's figures; ``rows`` per (model, dataset, method, N-shot)."""

    rows: list[dict[str, Any]]
    total_runs: int
    device_s: float
    packable_s: float  # of which VP runs, which packing speeds up
    packed_s: float  # that part once packed (divided by each budget's packing gain)
    packs: int
    gpus: int
    unknown: list[str] = field(default_factory=list)
    #: The throughputs (ARCH@SIZE) read from the profile, and those timed here instead (all of
    #: them without a profile; those a partial profile lacks).
    profiled: list[str] = field(default_factory=list)
    timed_here: list[str] = field(default_factory=list)

    @property
    def pack_speedup(self) -> float:
        """The overall gain of packing on the packable part (1 when nothing packs)."""
        return self.packable_s / self.packed_s if self.packed_s else 1.0

    @property
    def wall_s(self) -> float:
        """Device time with packing's gain on the VP part, over ``gpus`` devices."""
        return (self.device_s - self.packable_s + self.packed_s) / self.gpus


def run_cost(identity: dict[str, Any]) -> RunCost | None:
    """The backbone work of one run (see the module docstring); None when its dataset's
    split sizes are not known before loading it."""
    from hiddencost.data import dataset_info  # lazy: torch
    from hiddencost.run import RunConfig, resolve  # lazy: torch

    run = resolve(RunConfig.model_validate(identity))
    info = dataset_info(run.config.dataset)
    if info.split_sizes is None or info.num_classes is None:
        return None
    pool, test = info.split_sizes
    shot = run.config.n_shot
    n = pool if shot is None else min(shot * info.num_classes, pool)
    work = run.method.work(run.settings, n, pool, test)
    key = f"{run.backbone.arch}@{work.input_size}"  # throughput is the architecture's
    cfg = run.config
    shared = (cfg.model, cfg.weights, cfg.checkpoint, str(cfg.compression), cfg.dataset,
              work.input_size) if work.shared_forward else None
    return RunCost(key, work.train, work.forward, shared,
                   packable=run.method.pack_key(run.settings) is not None,
                   batch_size=run.settings.batch_size, n_shot=shot)


def measure_throughput(key: str, device: str = "auto", steps: int = 2,
                       precision: str = "auto") -> Throughput:
    """Images/s of ``ARCH@SIZE``: training steps at batch :data:`TRAIN_PROBE_BATCH`, forward
    passes at :data:`EVAL_PROBE_BATCH` (see :func:`measure_batches`)."""
    timed = _timer(key, device, steps, precision)
    return Throughput(timed(TRAIN_PROBE_BATCH, True), timed(EVAL_PROBE_BATCH, False))


def measure_batches(key: str, batches: Sequence[int], device: str = "auto", steps: int = 2,
                    precision: str = "auto") -> dict[int, Throughput]:
    """Images/s of ``ARCH@SIZE`` at each batch size, training steps and forward passes."""
    timed = _timer(key, device, steps, precision)
    return {b: Throughput(timed(b, True), timed(b, False)) for b in batches}


def _timer(key: str, device: str, steps: int, precision: str) -> Callable[[int, bool], float]:
    """``timed(batch, train)``: images/s of ``ARCH@SIZE`` (random weights, prepared as runs
    prepare it), the best of ``steps`` after one warm-up: training steps (forward and the
    gradient to the input, in ``precision`` as runs resolve it) or forward passes (fp32, as
    runs do them)."""
    import torch  # lazy: torch and the models load only when something is timed

    from hiddencost.backbones import create_model  # lazy: as above
    from hiddencost.device import resolve_device  # lazy: as above
    from hiddencost.frozen import prepare_frozen  # lazy: as above
    from hiddencost.precision import (  # lazy: as above
        exact,
        resolve_precision,
        training,
        training_dtype,
    )

    name, size = key.rsplit("@", 1)
    dev = resolve_device(device)
    dtype = training_dtype(resolve_precision(precision, dev))
    model, _ = create_model(name, weights="random", seed=0)
    backbone = prepare_frozen(model, dev, int(size))

    def timed(batch: int, train: bool) -> float:
        x = torch.rand(batch, 3, int(size), int(size), device=dev)
        x = x.contiguous(memory_format=torch.channels_last)
        best = float("inf")
        for i in range(steps + 1):
            start = time.perf_counter()
            if train:
                xi = x.clone().requires_grad_(True)
                with training(dev, dtype):
                    out = backbone(xi)
                out.float().logsumexp(1).sum().backward()
            else:
                with torch.inference_mode(), exact(dev):
                    backbone(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:  # the first is the warm-up
                best = min(best, time.perf_counter() - start)
        return batch / best

    return timed


def measure_profile(keys: Sequence[str], device: str = "auto", precision: str = "auto",
                    batches: Sequence[int] = PROFILE_BATCHES, steps: int = 2,
                    pack_gain: dict[str, float] | None = None) -> Profile:
    """A :class:`Profile` of ``keys`` (``ARCH@SIZE``) measured here at ``batches``, with the
    packing gains measured elsewhere (``benchmarks/bench_gpu.py`` times packs)."""
    from hiddencost.device import resolve_device  # lazy: torch
    from hiddencost.precision import resolve_precision  # lazy: torch

    dev = resolve_device(device)
    name = dev.type
    if dev.type == "cuda":
        import torch  # lazy: as above

        name = torch.cuda.get_device_name(dev)
    return Profile({k: measure_batches(k, batches, device, steps, precision) for k in keys},
                   dict(pack_gain or {}), name, resolve_precision(precision, dev))


def write_profile(profile: Profile, path: str | Path) -> Path:
    """Write ``profile`` as JSON (:data:`PROFILE_FORMAT`) for ``study plan --profile``."""
    data = {"format": PROFILE_FORMAT, "device": profile.device, "precision": profile.precision,
            "throughput": {k: {"train": {str(b): t.train_img_s for b, t in by.items()},
                               "eval": {str(b): t.eval_img_s for b, t in by.items()}}
                           for k, by in profile.throughputs.items()},
            "pack_gain": profile.pack_gain}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n")
    return path


def read_profile(path: str | Path) -> Profile:
    """A profile file: :data:`PROFILE_FORMAT` (what :func:`write_profile` writes), or the
    first format (``{"ARCH@SIZE": {"train_img_s": …, "eval_img_s": …}, "pack_speedup": F}``,
    read as measured at :data:`TRAIN_PROBE_BATCH` with gain F for every budget)."""
    try:
        data = json.loads(Path(path).read_text())
        if data.get("format") == PROFILE_FORMAT:
            throughputs = {
                k: {_batch(b, f"throughput {k}"): Throughput(
                    _rate(v["train"][b], f"throughput {k} train batch {b}"),
                    _rate(v["eval"][b], f"throughput {k} eval batch {b}")) for b in v["train"]}
                for k, v in data["throughput"].items()}
            gain = {str(k): _rate(g, f"pack_gain {k}")
                    for k, g in data.get("pack_gain", {}).items()}
            return Profile(throughputs, gain, data.get("device"), data.get("precision"))
        speedup = _rate(data.pop("pack_speedup", 1.0), "pack_speedup")
        return Profile({k: {TRAIN_PROBE_BATCH: Throughput(
            _rate(v["train_img_s"], f"{k} train_img_s"),
            _rate(v["eval_img_s"], f"{k} eval_img_s"))} for k, v in data.items()},
            {"*": speedup})
    except KeyError as exc:
        raise HiddenCostError(f"cannot read profile {path}: no entry {exc}") from None
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise HiddenCostError(f"cannot read profile {path}: {exc}") from None


def _rate(value: Any, entry: str) -> float:
    """A throughput or packing gain: a finite number > 0 (a ValueError naming ``entry``
    otherwise: a negative or NaN figure would print negative or unknown times)."""
    try:
        rate = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        rate = math.nan
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"{entry}: throughputs and packing gains must be finite and > 0, "
                         f"got {value!r}")
    return rate


def _batch(value: Any, entry: str) -> int:
    """A measured batch size: an integer ≥ 1 (a ValueError naming ``entry`` otherwise)."""
    try:
        batch = int(value)
    except (TypeError, ValueError):
        batch = 0
    if batch < 1:
        raise ValueError(f"{entry}: batch sizes must be integers ≥ 1, got {value!r}")
    return batch


def make_plan(runs: Sequence[PlannedRun], packs: int, gpus: int = 1,
              profile: Profile | None = None,
              measure: Callable[[str], Throughput] = measure_throughput) -> Plan:
    """The plan for ``runs`` (the pending ones) formed into ``packs`` packs; throughputs
    ``profile`` lacks are measured with ``measure`` (one batch size; no packing gain), and the
    plan says which (:attr:`Plan.timed_here`, the others :attr:`Plan.profiled`)."""
    if gpus < 1:
        raise HiddenCostError(f"--gpus must be at least 1, got {gpus}")
    profile = profile or Profile({})
    measured: dict[str, Throughput] = {}  # timed here, by ARCH@SIZE
    used: set[str] = set()  # every ARCH@SIZE the runs need
    groups: dict[tuple, dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "device_s": 0.0, "packable_s": 0.0, "packed_s": 0.0})
    sharing: dict[tuple, list[tuple]] = defaultdict(list)  # LP feature set → its runs' groups
    shared_s: dict[tuple, float] = {}
    unknown: Counter[str] = Counter()
    for run in runs:
        c = run.identity
        group = (c["model"], c["dataset"], c["method"], c["n_shot"])
        groups[group]["runs"] += 1
        cost = run_cost(c)
        if cost is None:
            unknown[c["dataset"]] += 1
            continue
        used.add(cost.throughput_key)
        train, forward = _throughputs(cost, profile, measured, measure)
        seconds = cost.train_images / train.train_img_s + cost.eval_images / forward.eval_img_s
        if cost.shared is None:
            groups[group]["device_s"] += seconds
            if cost.packable:
                groups[group]["packable_s"] += seconds
                groups[group]["packed_s"] += seconds / profile.gain(cost.n_shot)
        else:  # computed once, shared evenly by the runs that read it
            sharing[cost.shared].append(group)
            shared_s[cost.shared] = seconds
    for features, members in sharing.items():
        for group in members:
            groups[group]["device_s"] += shared_s[features] / len(members)
    packable = sum(v.pop("packable_s") for v in groups.values())
    packed = sum(v.pop("packed_s") for v in groups.values())
    rows = [{"model": k[0], "dataset": k[1], "method": k[2],
             "n_shot": "full" if k[3] is None else k[3], **v} for k, v in groups.items()]
    return Plan(rows, len(runs), sum(r["device_s"] for r in rows), packable, packed, packs,
                gpus, [f"{d} ({n} runs)" for d, n in unknown.items()],
                profiled=sorted(used - measured.keys()), timed_here=sorted(measured))


def _throughputs(cost: RunCost, profile: Profile, measured: dict[str, Throughput],
                 measure: Callable[[str], Throughput]) -> tuple[Throughput, Throughput]:
    """The throughputs of a run's training steps and of its forward passes: the profile's,
    else timed here with ``measure``, once per ARCH@SIZE, into ``measured``."""
    key = cost.throughput_key
    train = profile.throughput(key, cost.batch_size)
    forward = profile.throughput(key, PREDICT_BATCH)
    if train is None or forward is None:
        if key not in measured:
            measured[key] = measure(key)
        train = forward = measured[key]
    return train, forward


class _Unmeasured(Exception):
    """A throughput the profile lacks (:func:`estimate_s` measures nothing)."""


def _unmeasured(key: str) -> Throughput:
    raise _Unmeasured(key)


def estimate_s(configs: Sequence[dict[str, Any]], profile: Profile) -> float | None:
    """Device seconds of running ``configs`` (RunConfig keyword arguments, e.g. one Slurm
    job's runs) one after the other on ``profile``'s device, packable runs at their N-shot's
    packing gain (:attr:`Plan.wall_s` on one device); None when the profile lacks a
    throughput they need or a dataset's split sizes are unknown before loading it."""
    runs = [PlannedRun(str(i), dict(c)) for i, c in enumerate(configs)]
    try:
        plan = make_plan(runs, len(runs), 1, profile, measure=_unmeasured)
    except _Unmeasured:
        return None
    return None if plan.unknown else plan.wall_s
