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
a profile file (``--profile``: JSON ``{"ARCH@SIZE": {"train_img_s": …, "eval_img_s": …}}``,
optionally ``"pack_speedup": F`` for the gain packing brings, e.g. from ``bench_gpu.py``).
Device time divided by ``--gpus`` is the wall time of perfect scheduling: a lower bound.
"""

from __future__ import annotations

import json
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


@dataclass(frozen=True)
class Throughput:
    """Images per second through one backbone at one input size."""

    train_img_s: float  # forward + backward to the input (a VP / xmr step)
    eval_img_s: float  # forward only, no gradients


@dataclass(frozen=True)
class RunCost:
    """What one run puts through the backbone."""

    throughput_key: str  # ARCH@SIZE (e.g. resnet50@224)
    train_images: int
    eval_images: int
    shared: tuple | None = None  # LP: its feature set, counted once
    packable: bool = False  # packing speeds it up (its method packs runs)


@dataclass
class Plan:
    """The plan's figures; ``rows`` per (model, dataset, method, N-shot)."""

    rows: list[dict[str, Any]]
    total_runs: int
    device_s: float
    packable_s: float  # of which VP runs, which packing speeds up
    packs: int
    pack_speedup: float
    gpus: int
    unknown: list[str] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        """Device time with packing's speed-up on the VP part, over ``gpus`` devices."""
        rest = self.device_s - self.packable_s
        return (rest + self.packable_s / self.pack_speedup) / self.gpus


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
                   packable=run.method.pack_key(run.settings) is not None)


def measure_throughput(key: str, device: str = "auto", steps: int = 2,
                       precision: str = "auto") -> Throughput:
    """Time ``steps`` training steps (input gradient) and forward passes of ``ARCH@SIZE``
    with random weights, prepared as runs prepare it, after one warm-up of each; training
    steps in ``precision`` as runs resolve it, forward passes in fp32 (as runs do them)."""
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
    model, _ = create_model(name, weights="random")
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

    return Throughput(timed(TRAIN_PROBE_BATCH, True), timed(EVAL_PROBE_BATCH, False))


def read_profile(path: str | Path) -> tuple[dict[str, Throughput], float]:
    """A profile file's throughputs by ``ARCH@SIZE`` and its pack speed-up (default 1)."""
    try:
        data = json.loads(Path(path).read_text())
        speedup = float(data.pop("pack_speedup", 1.0))
        return {k: Throughput(float(v["train_img_s"]), float(v["eval_img_s"]))
                for k, v in data.items()}, speedup
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise HiddenCostError(f"cannot read profile {path}: {exc}") from None


def make_plan(runs: Sequence[PlannedRun], packs: int, gpus: int = 1,
              throughputs: dict[str, Throughput] | None = None, pack_speedup: float = 1.0,
              measure: Callable[[str], Throughput] = measure_throughput) -> Plan:
    """The plan for ``runs`` (the pending ones) formed into ``packs`` packs; throughputs not in
    ``throughputs`` are measured with ``measure``."""
    if gpus < 1:
        raise HiddenCostError(f"--gpus must be at least 1, got {gpus}")
    known = dict(throughputs or {})
    groups: dict[tuple, dict[str, Any]] = defaultdict(
        lambda: {"runs": 0, "device_s": 0.0, "packable_s": 0.0})
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
        if cost.throughput_key not in known:
            known[cost.throughput_key] = measure(cost.throughput_key)
        tp = known[cost.throughput_key]
        seconds = cost.train_images / tp.train_img_s + cost.eval_images / tp.eval_img_s
        if cost.shared is None:
            groups[group]["device_s"] += seconds
            groups[group]["packable_s"] += seconds if cost.packable else 0.0
        else:  # computed once, shared evenly by the runs that read it
            sharing[cost.shared].append(group)
            shared_s[cost.shared] = seconds
    for features, members in sharing.items():
        for group in members:
            groups[group]["device_s"] += shared_s[features] / len(members)
    packable = sum(v.pop("packable_s") for v in groups.values())
    rows = [{"model": k[0], "dataset": k[1], "method": k[2],
             "n_shot": "full" if k[3] is None else k[3], **v} for k, v in groups.items()]
    return Plan(rows, len(runs), sum(r["device_s"] for r in rows), packable, packs,
                pack_speedup, gpus, [f"{d} ({n} runs)" for d, n in unknown.items()])
