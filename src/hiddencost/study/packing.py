"""Packs: a study's pending runs grouped so that each group trains through one backbone pass.

Runs pack together when they share a :func:`hiddencost.run.pack_signature` (backbone, weights,
compression, dataset, device and the method's schedule: for VP the epochs, batch size, canvas
and inner size), e.g. the three VP mappings × three seeds of one (model, compression, dataset,
N-shot) cell of a paper grid. LP, cross-modal runs, runs with activation quantizers (they
calibrate on their own subset) and runs of a custom runner stay alone.

Default size (``--pack`` unset): 1 where the runs execute on a CPU, where packing gains
nothing (1.01–1.02× with a backbone call per run, 0.73–0.86× fused;
``benchmarks/bench_packing.py``), and :data:`GPU_PACK` where they execute on CUDA (the
executor says where: :meth:`~hiddencost.study.executors.ExecutorBase.runs_on_gpu`, e.g. a Ray
task's GPU, not the driver's), where small few-shot batches leave the device idle. Full-data
runs stay alone unless ``--pack`` is given: their batches of 128 already fill a GPU, so a pack
would only multiply their memory. A pack that does not fit in device memory is cut down before
training and halved on an out-of-memory error (:func:`hiddencost.study.worker.execute_pack`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hiddencost.errors import HiddenCostError
from hiddencost.study.worker import Task

#: Runs per pack on a GPU by default: one paper cell's 3 VP mappings × 3 seeds.
GPU_PACK = 9


def default_pack_size(on_gpu: bool) -> int:
    """:data:`GPU_PACK` for runs that execute on a CUDA GPU, else 1."""
    return GPU_PACK if on_gpu else 1


def local_gpu(device: str | None) -> bool:
    """Whether runs of ``device`` (``auto``, ``cpu``, ``cuda[:i]``) executing in this process
    train on a CUDA GPU."""
    import torch  # lazy: the worker side of a study imports no torch at start-up

    if device in (None, "auto"):
        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def form_packs(tasks: Sequence[Task], pack_size: int,
               pack_full_data: bool = False) -> list[list[Task]]:
    """``tasks`` grouped by pack signature into packs of at most ``pack_size``, each pack at
    the position of its first task (so the expansion order, which keeps runs that share data
    adjacent, is kept); runs that cannot pack are packs of one, and so are full-data runs
    unless ``pack_full_data`` (see the module docstring)."""
    if pack_size < 1:
        raise HiddenCostError(f"--pack must be at least 1, got {pack_size}")
    if pack_size == 1:
        return [[t] for t in tasks]
    from hiddencost.run import RunConfig, pack_signature  # lazy: torch

    open_packs: dict[str, list[Task]] = {}
    packs: list[list[Task]] = []
    for task in tasks:
        alone = task.runner is not None or (task.config.get("n_shot") is None
                                             and not pack_full_data)
        signature = None if alone else _signature(task, RunConfig, pack_signature)
        pack = open_packs.get(signature) if signature is not None else None
        if pack is None or len(pack) >= pack_size:
            pack = []
            packs.append(pack)
            if signature is not None:
                open_packs[signature] = pack
        pack.append(task)
    return packs


def _signature(task: Task, config_type: type, signature_of: Callable[..., str | None]
               ) -> str | None:
    try:
        return signature_of(config_type.model_validate(task.config))
    except Exception:  # an invalid run fails on its own, with its own error, when it executes
        return None
