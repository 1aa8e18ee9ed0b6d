"""What compression forgets after transfer, per example: PIEs and churn from stored predictions.

Hooker et al. ("What do compressed deep neural networks forget?", 2019) look upstream; here the
same questions are asked of transferred models, per cell (model, dataset, method, N-shot and
settings), dense runs against compressed runs of the same cell, over seeds:

- **PIEs** (pruning-identified exemplars): the examples whose *modal* predicted label over the
  dense seeds differs from the modal label over the compressed seeds. The modal label is the
  most frequent prediction over seeds; on a tie the smallest class index wins (deterministic;
  with two seeds that disagree, that is the smaller of the two).
- **Churn**: examples the dense runs get right and the compressed runs get wrong (*lost*), and
  the reverse (*gained*), each judged on the modal prediction.

Pure NumPy functions on (S, N) predictions of S seeds on N examples: a leaf, so that
:func:`hiddencost.study.results.load_results` and the report compute them the same way. The
per-class tests are in :mod:`hiddencost.report.forgetting`.
"""


from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hiddencost.predictions import Predictions


def stack_predictions(found: Sequence[Predictions | None]
                      ) -> tuple[np.ndarray, np.ndarray] | None:
    """The runs' (S, N) predicted labels and their (N,) labels; None when there are no runs, a
    run has no predictions, or the runs saw different test examples."""
    if not found or any(f is None for f in found):
        return None
    labels = found[0].labels  # type: ignore[union-attr]
    if any(not np.array_equal(f.labels, labels) for f in found):  # type: ignore[union-attr]
        return None
    return np.stack([f.predicted for f in found]), labels  # type: ignore[union-attr]


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


def forgetting_rates(dense: np.ndarray, compressed: np.ndarray, labels: np.ndarray
                     ) -> dict[str, float]:
    """A cell's rates in % of its N test examples, from (S_d, N) dense and (S_c, N) compressed
    predictions and the (N,) labels: ``pie_rate``, ``dense_disagreement`` (the dense seeds'
    own, the baseline), ``lost_rate`` and ``gained_rate``."""
    moved = churn(dense, compressed, labels)
    return {"pie_rate": 100.0 * float(pies(dense, compressed).mean()),
            "dense_disagreement": 100.0 * float(disagreement(dense).mean()),
            "lost_rate": 100.0 * moved.lost_rate, "gained_rate": 100.0 * moved.gained_rate}


def _modal_share(predictions: np.ndarray) -> np.ndarray:
    """(N,) the share of seeds that predict each example's modal label."""
    return (predictions == modal_labels(predictions)[None, :]).mean(axis=0)


def top_pies(dense: np.ndarray, compressed: np.ndarray, labels: np.ndarray, k: int
             ) -> np.ndarray:
    """The positions of a cell's ``k`` most telling PIEs: lost examples first (right under
    dense, wrong under compressed), then by how firmly each side holds its modal label (the
    share of dense seeds plus the share of compressed seeds that predict it), then by position.
    """
    mask = pies(dense, compressed)
    lost = churn(dense, compressed, labels).lost
    firm = _modal_share(dense) + _modal_share(compressed)
    where = np.flatnonzero(mask)
    order = np.lexsort((where, -firm[where], ~lost[where]))  # last key sorts first
    return where[order][:k]
