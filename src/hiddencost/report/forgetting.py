"""What compression forgets after transfer, from the runs' per-example predictions.

Hooker et al. ("What do compressed deep neural networks forget?", 2019) look upstream; here the
same questions are asked of transferred models, per cell (model family, dataset, method,
N-shot), dense runs against compressed runs of the same cell, over seeds:

- **PIEs** (pruning-identified exemplars): the examples whose *modal* predicted label over the
  dense seeds differs from the modal label over the compressed seeds. The modal label is the
  most frequent prediction over seeds; on a tie the smallest class index wins (deterministic;
  with two seeds that disagree, that is the smaller of the two).
- **Churn**: examples the dense runs get right and the compressed runs get wrong (*lost*), and
  the reverse (*gained*), each judged on the modal prediction.
- **Classes that pay**: per class, recall normalised by the run's overall accuracy (Hooker's
  convention, so that a uniform accuracy drop hurts no class), dense seeds against compressed
  seeds by Welch's t-test, Holm-adjusted over the classes; a class is *hurt* when its adjusted
  p < α and its normalised recall fell. (Normalising lifts the other classes a little when
  one class pays — by the accuracy it costs — so with few classes those may test as gains;
  only falls count as hurt.)

Pure NumPy functions on arrays: (S, N) predictions of S seeds on N examples, (S, K) recalls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiddencost.report.stats import ALPHA, holm, welch_test


def modal_labels(predictions: np.ndarray) -> np.ndarray:
    """(S, N) predicted labels of S seeds → (N,) the most frequent label of each example (the
    smallest on ties)."""
    predictions = np.asarray(predictions)
    if predictions.ndim != 2 or not predictions.size:
        raise ValueError(f"(seeds, examples) predictions expected, got {predictions.shape}")
    classes = int(predictions.max()) + 1
    counts = np.zeros((predictions.shape[1], classes), dtype=np.int64)
    np.add.at(counts, (np.arange(predictions.shape[1])[None, :], predictions), 1)
    return counts.argmax(axis=1)  # argmax takes the first (smallest label) of equal counts


def disagreement(predictions: np.ndarray) -> np.ndarray:
    """(N,) bool: the examples whose predictions differ between seeds ((S, N) predictions).
    The dense runs' own disagreement is the baseline a PIE rate is read against: with few seeds
    and small budgets, seeds alone change many predictions."""
    predictions = np.asarray(predictions)
    return (predictions != predictions[:1]).any(axis=0)


def pies(dense: np.ndarray, compressed: np.ndarray) -> np.ndarray:
    """(N,) bool: the PIEs of a cell, from (S_d, N) dense and (S_c, N) compressed
    predictions (see the module docstring)."""
    return modal_labels(dense) != modal_labels(compressed)


@dataclass(frozen=True)
class Churn:
    """Examples right under dense and wrong under compressed (``lost``) and the reverse
    (``gained``), as (N,) masks, on the modal predictions."""

    lost: np.ndarray
    gained: np.ndarray

    @property
    def lost_rate(self) -> float:
        return float(self.lost.mean())

    @property
    def gained_rate(self) -> float:
        return float(self.gained.mean())


def churn(dense: np.ndarray, compressed: np.ndarray, labels: np.ndarray) -> Churn:
    """The churn of a cell from (S_d, N) and (S_c, N) predictions and the (N,) labels."""
    right_dense = modal_labels(dense) == labels
    right_compressed = modal_labels(compressed) == labels
    return Churn(right_dense & ~right_compressed, ~right_dense & right_compressed)


@dataclass(frozen=True)
class ClassTest:
    """One class, dense against compressed: the mean normalised recall of each side, Welch's
    raw p and the Holm-adjusted p over the cell's classes, and whether it is hurt."""

    cls: int
    dense: float
    compressed: float
    p: float
    p_holm: float
    hurt: bool


def class_tests(dense_recall: np.ndarray, dense_accuracy: np.ndarray,
                compressed_recall: np.ndarray, compressed_accuracy: np.ndarray,
                alpha: float = ALPHA) -> list[ClassTest]:
    """Per class of a cell: recall / overall accuracy of each run ((S, K) recalls, (S,)
    accuracies per side), dense seeds against compressed seeds (Welch), Holm over the K
    classes; ``hurt`` when the adjusted p < ``alpha`` and the compressed mean is lower. A class
    a side has no recall for (no test example) is untested (NaN)."""
    d = np.asarray(dense_recall, float) / np.asarray(dense_accuracy, float)[:, None]
    c = np.asarray(compressed_recall, float) / np.asarray(compressed_accuracy, float)[:, None]
    tests = [welch_test(d[:, k].tolist(), c[:, k].tolist()) for k in range(d.shape[1])]
    adjusted = holm([t.p for t in tests])
    return [ClassTest(k, float(np.nanmean(d[:, k])), float(np.nanmean(c[:, k])), t.p, a,
                      bool(a < alpha and t.diff > 0))
            for k, (t, a) in enumerate(zip(tests, adjusted, strict=True))]
