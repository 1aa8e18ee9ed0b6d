"""A run's per-example test predictions, kept beside its ``result.json``.

``predictions.safetensors`` holds ``logits`` (N, K) float32, the mapped test logits every metric
of the record is computed from (softmax for accuracy, ECE, NLL, Brier; raw for the paper's ECE),
``labels`` (N,) int64 and ``indices`` (N,) int64, the examples' positions in the task's test
split, so later analyses (which examples compression forgets, per-class tests, recalibration)
need no rerun. float32 logits, not fp16 probabilities: the record's metrics are recomputed from
them exactly (tested), and at ≤ 101 classes a test split costs at most a few hundred kB.

NumPy only (``safetensors.numpy``): the report reads it without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiddencost.errors import HiddenCostError

#: The file's name in a run's folder.
PREDICTIONS_FILE = "predictions.safetensors"


@dataclass(frozen=True)
class Predictions:
    """One run's test predictions (see the module docstring)."""

    logits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    @property
    def predicted(self) -> np.ndarray:
        """(N,) the top-1 class of each example (the first on ties, as ``argmax``)."""
        return self.logits.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """(N,) bool: the top-1 class is the label."""
        return self.predicted == self.labels


def write_predictions(folder: str | Path, logits: np.ndarray, labels: np.ndarray,
                      indices: np.ndarray | None = None) -> Path:
    """Write ``folder/predictions.safetensors`` (``indices`` default 0..N-1: the whole split
    in order)."""
    from safetensors.numpy import save_file  # the writer side of runs only

    logits = np.ascontiguousarray(logits, dtype=np.float32)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if logits.ndim != 2 or labels.shape != (len(logits),):
        raise ValueError(f"logits (N, K) and labels (N,) expected, got {logits.shape} and "
                         f"{labels.shape}")
    indices = (np.arange(len(labels), dtype=np.int64) if indices is None
               else np.ascontiguousarray(indices, dtype=np.int64))
    path = Path(folder) / PREDICTIONS_FILE
    save_file({"logits": logits, "labels": labels, "indices": indices}, str(path))
    return path


def read_predictions(folder: str | Path) -> Predictions | None:
    """A run folder's predictions; None when it has none (runs of hiddencost before December
    2026). A file that is not one is a one-line error naming it."""
    path = Path(folder) / PREDICTIONS_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    try:
        data = load_file(str(path))
        predictions = Predictions(data["logits"], data["labels"], data["indices"])
    except Exception as exc:  # torn, foreign or incomplete file
        raise HiddenCostError(f"cannot read predictions {path}: {exc}") from None
    n = len(predictions.labels)
    if predictions.logits.ndim != 2 or len(predictions.logits) != n or \
            predictions.indices.shape != (n,):
        raise HiddenCostError(f"cannot read predictions {path}: shapes "
                              f"{predictions.logits.shape}, {predictions.labels.shape}, "
                              f"{predictions.indices.shape} do not agree")
    return predictions
