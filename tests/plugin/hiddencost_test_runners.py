"""A synthetic runner: exercises the study machinery without training a model.

Registered as the runner ``synthetic`` (this package's ``hiddencost.runners`` entry point, which
`make test` installs): put ``runner: synthetic`` in a study file (:data:`support.SYNTHETIC`) to
test resume and failure handling, a Ray cluster or a Slurm setup in seconds. The runner has
:func:`hiddencost.run.run_one`'s signature and contract: it computes deterministic
pseudo-metrics from the run's identity (so any executor gives identical numbers), does a little
real arithmetic, sleeps ``epochs × HIDDENCOST_SYNTHETIC_SLEEP`` seconds (default 0.01 s per
epoch), calls ``on_epoch`` once per epoch, writes ``result.json`` and returns the
:class:`~hiddencost.records.RunRecord` (fields a real run measures on the backbone, such as
``sparsity``, keep their defaults; the method card comes from the real registry). A learning
rate ≥ 1 raises :class:`~hiddencost.errors.TrainingDivergedError`, as a real run with a NaN
loss does, and a checkpoint path that is not a file raises
:class:`~hiddencost.errors.HiddenCostError`, as a missing checkpoint does. When
``HIDDENCOST_SYNTHETIC_LOG`` names a file, every start of a run appends ``<key> <pid>`` to it
(to count executions in tests).

Every process of a study finds it by name through the entry point; it imports only hiddencost.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hiddencost.backbones import resolve_backbone_name
from hiddencost.errors import HiddenCostError, TrainingDivergedError
from hiddencost.prompting.catalog import method_card
from hiddencost.records import EpochRecord, RunRecord
from hiddencost.study.identity import run_key

SLEEP_ENV = "HIDDENCOST_SYNTHETIC_SLEEP"
LOG_ENV = "HIDDENCOST_SYNTHETIC_LOG"


def _log_start(key: str) -> None:
    path = os.environ.get(LOG_ENV)
    if path:
        # one O_APPEND write per line: concurrent drivers never interleave their lines
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{key} {os.getpid()}\n".encode())
        finally:
            os.close(fd)


def _train(cfg: Any, accuracy: float, on_epoch: Callable[[EpochRecord], None] | None
           ) -> list[EpochRecord]:
    """The per-epoch history; diverges (as a NaN loss does) for a learning rate ≥ 1."""
    sleep = float(os.environ.get(SLEEP_ENV, "0.01"))
    history = []
    for epoch in range(1, cfg.epochs + 1):
        if cfg.lr >= 1.0:
            raise TrainingDivergedError(f"training loss became nan at epoch {epoch} "
                                        f"(synthetic runner: lr {cfg.lr} >= 1)")
        # a little real, deterministic arithmetic
        loss = sum(math.exp(-cfg.lr * i) for i in range(1, 2000)) / (2000 * epoch)
        history.append(EpochRecord(epoch=epoch, loss=loss, train_accuracy=accuracy, lr=cfg.lr,
                                   seconds=sleep))
        if on_epoch is not None:
            on_epoch(history[-1])
        time.sleep(sleep)
    return history


def synthetic_runner(
    cfg: Any,
    out_dir: str | Path | None = None,
    cache: Any = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunRecord:
    """A stand-in for :func:`hiddencost.run.run_one`; see the module docstring."""
    start = time.perf_counter()
    key = run_key(cfg)
    _log_start(key)
    if cfg.checkpoint is not None and not Path(cfg.checkpoint).is_file():
        raise HiddenCostError(f"checkpoint file {cfg.checkpoint} does not exist")
    digest = hashlib.sha256(key.encode()).digest()
    accuracy = int.from_bytes(digest[:4], "big") / 2**32
    history = _train(cfg, accuracy, on_epoch)
    family = resolve_backbone_name(cfg.model).family
    record = RunRecord(
        config=cfg.resolved().model_dump(mode="json"),
        accuracy=accuracy,
        ece=digest[4] / 255 / 4,
        nll=-math.log(max(accuracy, 1e-6)),
        compression={"method": cfg.compression.method, "label": cfg.compression.label},
        history=history,
        final_train_loss=history[-1].loss,
        wall_time_s=time.perf_counter() - start,
        method=method_card(cfg.method, family),
        network_family=family,
    )
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "result.json.tmp"
        tmp.write_text(json.dumps(record.to_json(), indent=1))
        tmp.replace(out / "result.json")
    return record
