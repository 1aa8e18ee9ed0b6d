"""Which classes pay for compression after transfer: per-class tests across seeds.

Per class of a cell (see :mod:`hiddencost.forgetting` for cells, PIEs and churn): recall
normalised by the run's overall accuracy (Hooker et al.'s convention, so that a uniform accuracy
drop hurts no class), dense seeds against compressed seeds by Welch's t-test, Holm-adjusted over
the classes; a class is *hurt* when its adjusted p < α and its normalised recall fell.
(Normalising lifts the other classes a little when one class pays — by the accuracy it costs —
so with few classes those may test as gains; only falls count as hurt.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hiddencost.report.stats import ALPHA, holm, welch_test


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
