"""Accuracy and calibration metrics on softmax probabilities (README "What is implemented, and
the conventions": Guo et al. 2017 top-label ECE).

Every function is pure: it takes ``probs`` (an ``N×K`` float tensor whose rows are probability
vectors, e.g. the softmax over the ``K`` mapped logits of the whole test set) and ``labels`` (an
``N`` integer tensor of true classes) and returns plain Python values. Computation happens in
float64 on the CPU, whatever the input dtype and device.

Shared conventions
------------------
* **Prediction.** ``ŷ_i = argmax_k p_ik``; ties go to the lowest class index (this is what
  ``torch.argmax`` does). A sample is *correct* when ``ŷ_i = y_i``.
* **Confidence.** ``c_i = max_k p_ik`` (the top-label probability).
* **Bins.** ``n_bins`` equal-width bins over ``[0, 1]`` with edges ``e_b = b / n_bins``. Bin ``b``
  (0-based) holds the samples with ``e_b < c_i ≤ e_{b+1}``: half-open ``(lo, hi]`` as in Guo et
  al. 2017, so a confidence of exactly 1.0 lands in the last bin and one exactly on an inner edge
  (say 0.2 with 5 bins) lands in the bin *below* it. A confidence of exactly 0 cannot come from a
  softmax, but if it appears it is put into the first bin.
* **Undefined values.** A mean over an empty set (an empty bin, a class without samples, no
  correct or no misclassified samples) is NaN, never 0; :func:`calibration_summary` and
  :meth:`ReliabilityBins.to_dict` turn NaN into ``None`` so their output is JSON-safe.

Bad input (wrong shapes, empty input, labels out of range, values that are not probabilities)
raises :class:`hiddencost.errors.HiddenCostError` with a one-line message.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from hiddencost.errors import HiddenCostError

__all__ = [
    "ReliabilityBins",
    "accuracy",
    "brier_score",
    "calibration_summary",
    "expected_calibration_error",
    "kl_to_uniform_incorrect",
    "maximum_calibration_error",
    "mean_confidence_correct",
    "negative_log_likelihood",
    "paper_ece",
    "paper_kl_uniform_incorrect",
    "per_class_accuracy",
    "reliability_bins",
]

DEFAULT_N_BINS = 15
"""Number of equal-width confidence bins for ECE / MCE / reliability diagrams (Guo et al. 2017)."""

PAPER_ECE_N_BINS = 15
"""Default bin count of the earlier research code's ECE (``calibration.get_ece``'s default)."""

_RANGE_TOL = 1e-6  # slack for probabilities a rounding step pushed just outside [0, 1]
_ROW_SUM_TOL = 1e-2  # loose on purpose: only meant to catch logits or unnormalised scores
_PAPER_KL_EPS = 1e-12  # log p of an underflowed softmax entry stays finite


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach()
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise HiddenCostError(f"{name} must be a torch tensor, got {type(value).__name__}") from exc


def _check_scores_and_labels(
    scores: Any, labels: Any, scores_name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape/dtype/range checks shared by every metric; returns float64 scores, int64 labels."""
    scores_t = _as_tensor(scores, scores_name)
    labels_t = _as_tensor(labels, "labels")
    if scores_t.dim() != 2:
        raise HiddenCostError(
            f"{scores_name} must be a 2-D (N, K) tensor, got shape {tuple(scores_t.shape)}"
        )
    if labels_t.dim() != 1:
        raise HiddenCostError(
            f"labels must be a 1-D (N,) tensor, got shape {tuple(labels_t.shape)}"
        )
    n, k = scores_t.shape
    if labels_t.shape[0] != n:
        raise HiddenCostError(
            f"{scores_name} has {n} rows but labels has {labels_t.shape[0]} entries"
        )
    if n == 0:
        raise HiddenCostError(f"{scores_name} and labels are empty; need at least one sample")
    if k == 0:
        raise HiddenCostError(f"{scores_name} has zero columns; need at least one class")
    if not scores_t.is_floating_point():
        raise HiddenCostError(
            f"{scores_name} must be a floating-point tensor, got {scores_t.dtype}"
        )
    if labels_t.dtype == torch.bool or labels_t.is_floating_point() or labels_t.is_complex():
        raise HiddenCostError(f"labels must be an integer tensor, got {labels_t.dtype}")
    scores64 = scores_t.to(device="cpu", dtype=torch.float64)
    labels64 = labels_t.to(device="cpu", dtype=torch.int64)
    if not bool(torch.isfinite(scores64).all()):
        raise HiddenCostError(f"{scores_name} contains NaN or infinite values")
    lo, hi = int(labels64.min()), int(labels64.max())
    if lo < 0 or hi >= k:
        raise HiddenCostError(
            f"labels must lie in [0, {k - 1}] for {k} classes, got values in [{lo}, {hi}]"
        )
    return scores64, labels64


def _check_inputs(probs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``probs``/``labels``; also check that rows look like probability vectors."""
    p, y = _check_scores_and_labels(probs, labels, "probs")
    p_min, p_max = float(p.min()), float(p.max())
    if p_min < -_RANGE_TOL or p_max > 1.0 + _RANGE_TOL:
        raise HiddenCostError(
            f"probs must lie in [0, 1] (got values in [{p_min:.4g}, {p_max:.4g}]); "
            "apply softmax to logits first"
        )
    row_err = float((p.sum(dim=1) - 1.0).abs().max())
    if row_err > _ROW_SUM_TOL:
        raise HiddenCostError(
            f"rows of probs must sum to 1 (largest deviation {row_err:.3g}); "
            "apply softmax to logits first"
        )
    return p.clamp(0.0, 1.0), y


def _check_n_bins(n_bins: Any) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise HiddenCostError(f"n_bins must be a positive integer, got {n_bins!r}")
    return n_bins


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``values[mask]``; NaN when the mask selects nothing."""
    count = int(mask.sum())
    if count == 0:
        return math.nan
    return float(values[mask].sum() / count)


def _on_checked_inputs(
    checked: Callable[[torch.Tensor, torch.Tensor], float],
) -> Callable[[Callable[..., float]], Callable[[Any, Any], float]]:
    """Make a documented signature the public metric: validate ``(probs, labels)`` once
    (:func:`_check_inputs`), then compute with ``checked`` (as torchmetrics separates
    ``validate_args`` from the computation)."""

    def decorate(documented: Callable[..., float]) -> Callable[[Any, Any], float]:
        @functools.wraps(documented)
        def metric(probs: Any, labels: Any) -> float:
            p, y = _check_inputs(probs, labels)
            return checked(p, y)

        return metric

    return decorate


def _upper_edges(n_bins: int) -> torch.Tensor:
    """``[1/n, 2/n, ..., n/n]`` with each edge the correctly rounded float64 of ``b/n``."""
    return torch.arange(1, n_bins + 1, dtype=torch.float64) / n_bins


def _bin_index(values: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Index ``b`` with ``b/n < v ≤ (b+1)/n``; ``v ≤ 1/n`` (also ``v ≤ 0``) → 0, ``v > 1`` → n−1."""
    # searchsorted with right=False counts the upper edges strictly below v: v on an edge goes to
    # the bin below it, which is exactly the (lo, hi] convention.
    idx = torch.searchsorted(_upper_edges(n_bins), values, right=False)
    return idx.clamp_(max=n_bins - 1)


# --------------------------------------------------------------------------------------------
# Accuracy
# --------------------------------------------------------------------------------------------


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy.

    ``acc = (1/N) Σ_i 1[argmax_k p_ik = y_i]``, with argmax ties going to the lowest index.

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    p, y = _check_inputs(probs, labels)
    return float((p.argmax(dim=1) == y).to(torch.float64).mean())


def per_class_accuracy(
    probs: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
) -> list[float]:
    """Accuracy per true class (recall of each class).

    ``acc_c = |{i : y_i = c, ŷ_i = c}| / |{i : y_i = c}|`` with ``ŷ_i = argmax_k p_ik`` (ties →
    lowest index). A class with no samples gets NaN (an undefined ratio, not 0).

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        num_classes: length of the result; defaults to ``K``. It must exceed every label.

    Returns:
        A list of ``num_classes`` floats.
    """
    p, y = _check_inputs(probs, labels)
    if num_classes is None:
        num_classes = p.shape[1]
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise HiddenCostError(f"num_classes must be a positive integer, got {num_classes!r}")
    if int(y.max()) >= num_classes:
        raise HiddenCostError(f"num_classes={num_classes} is too small for label {int(y.max())}")
    correct = (p.argmax(dim=1) == y).to(torch.float64)
    totals = torch.bincount(y, minlength=num_classes).to(torch.float64)
    hits = torch.zeros(num_classes, dtype=torch.float64).index_add_(0, y, correct)
    return [float(h / t) if t > 0 else math.nan for h, t in zip(hits, totals, strict=True)]


# --------------------------------------------------------------------------------------------
# Binned calibration: reliability bins, ECE, MCE
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics of the top-label confidence (the data of a reliability diagram).

    Attributes:
        edges: ``n_bins + 1`` bin edges ``[0, 1/n, ..., 1]``; bin ``b`` is ``(edges[b],
            edges[b+1]]`` (the first bin also takes a confidence of exactly 0).
        counts: number of samples per bin, ``|B_b|``.
        accuracy: fraction of correct samples per bin, ``acc(B_b)``; NaN for an empty bin.
        confidence: mean top-label confidence per bin, ``conf(B_b)``; NaN for an empty bin.
    """

    edges: list[float]
    counts: list[int]
    accuracy: list[float]
    confidence: list[float]

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return len(self.counts)

    @property
    def total(self) -> int:
        """Number of samples, ``N = Σ_b |B_b|``."""
        return sum(self.counts)

    def gaps(self) -> list[float]:
        """``|acc(B_b) − conf(B_b)|`` per bin; NaN for an empty bin."""
        return [abs(a - c) for a, c in zip(self.accuracy, self.confidence, strict=True)]

    def ece(self) -> float:
        """``ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|`` over the non-empty bins."""
        n = self.total
        return float(
            sum(cnt / n * gap for cnt, gap in zip(self.counts, self.gaps(), strict=True) if cnt)
        )

    def mce(self) -> float:
        """``MCE = max_b |acc(B_b) − conf(B_b)|`` over the non-empty bins."""
        return float(max(gap for cnt, gap in zip(self.counts, self.gaps(), strict=True) if cnt))

    def to_dict(self) -> dict[str, list[float] | list[int] | list[float | None]]:
        """JSON-safe dict of the four lists; NaN (empty bins) becomes ``None``."""
        return {
            "edges": list(self.edges),
            "counts": list(self.counts),
            "accuracy": [_nan_to_none(v) for v in self.accuracy],
            "confidence": [_nan_to_none(v) for v in self.confidence],
        }


def _reliability_from_checked(p: torch.Tensor, y: torch.Tensor, n_bins: int) -> ReliabilityBins:
    pred = p.argmax(dim=1)  # ties -> lowest index
    conf = p.gather(1, pred.unsqueeze(1)).squeeze(1)
    correct = (pred == y).to(torch.float64)
    idx = _bin_index(conf, n_bins)
    counts = torch.bincount(idx, minlength=n_bins)
    correct_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
    acc_list: list[float] = []
    conf_list: list[float] = []
    for cnt, acc_s, conf_s in zip(counts.tolist(), correct_sum, conf_sum, strict=True):
        acc_list.append(float(acc_s / cnt) if cnt else math.nan)
        conf_list.append(float(conf_s / cnt) if cnt else math.nan)
    edges = [0.0] + _upper_edges(n_bins).tolist()
    return ReliabilityBins(
        edges=edges, counts=counts.tolist(), accuracy=acc_list, confidence=conf_list
    )


def reliability_bins(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS
) -> ReliabilityBins:
    """Bin samples by top-label confidence into ``n_bins`` equal-width ``(lo, hi]`` bins.

    For bin ``B_b = {i : b/n < c_i ≤ (b+1)/n}`` (a confidence of exactly 0, impossible for a
    softmax, is put into ``B_0``), with ``c_i = max_k p_ik`` and ``ŷ_i = argmax_k p_ik`` (ties →
    lowest index):

    * ``counts[b] = |B_b|``
    * ``accuracy[b] = acc(B_b) = (1/|B_b|) Σ_{i∈B_b} 1[ŷ_i = y_i]``  (NaN if ``B_b`` is empty)
    * ``confidence[b] = conf(B_b) = (1/|B_b|) Σ_{i∈B_b} c_i``  (NaN if ``B_b`` is empty)

    This is the single binning used by :func:`expected_calibration_error` and
    :func:`maximum_calibration_error`, so the three can never disagree.

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        n_bins: number of equal-width bins (default 15).
    """
    n_bins = _check_n_bins(n_bins)
    p, y = _check_inputs(probs, labels)
    return _reliability_from_checked(p, y, n_bins)


def expected_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS
) -> float:
    """Top-label expected calibration error (Guo et al. 2017).

    ``ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|`` over ``n_bins`` equal-width bins of the
    max probability, bins ``(lo, hi]`` (confidence 1.0 in the last bin, an inner edge such as 0.2
    in the bin below it); argmax ties go to the lowest index. Empty bins contribute nothing.
    Computed from :func:`reliability_bins`.

    Args:
        probs: ``(N, K)`` probabilities (softmax over the whole test set, not raw logits).
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        n_bins: number of equal-width bins (default 15).

    Returns:
        ECE in ``[0, 1]``.
    """
    return reliability_bins(probs, labels, n_bins).ece()


def maximum_calibration_error(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS
) -> float:
    """Top-label maximum calibration error.

    ``MCE = max_{b : |B_b| > 0} |acc(B_b) − conf(B_b)|`` with the same bins as
    :func:`expected_calibration_error` (computed from :func:`reliability_bins`).

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        n_bins: number of equal-width bins (default 15).

    Returns:
        MCE in ``[0, 1]``.
    """
    return reliability_bins(probs, labels, n_bins).mce()


# --------------------------------------------------------------------------------------------
# Proper scoring rules and confidence statistics
# --------------------------------------------------------------------------------------------


def _nll_checked(p: torch.Tensor, y: torch.Tensor, eps: float) -> float:
    p_true = p.gather(1, y.unsqueeze(1)).squeeze(1)
    return float((-torch.log(p_true.clamp(min=eps))).mean())


def negative_log_likelihood(probs: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class.

    ``NLL = −(1/N) Σ_i log max(p_{i,y_i}, eps)``; the clamp at ``eps`` keeps a zero probability
    from giving ``+inf`` (with the default, one such sample adds at most ``−log 1e-12 ≈ 27.6``).

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        eps: lower clamp of the true-class probability; must be positive.
    """
    if not eps > 0:
        raise HiddenCostError(f"eps must be positive, got {eps!r}")
    p, y = _check_inputs(probs, labels)
    return _nll_checked(p, y, eps)


def _brier_checked(p: torch.Tensor, y: torch.Tensor) -> float:
    onehot = torch.zeros_like(p).scatter_(1, y.unsqueeze(1), 1.0)
    return float(((p - onehot) ** 2).sum(dim=1).mean())


@_on_checked_inputs(_brier_checked)
def brier_score(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Multiclass Brier score.

    ``BS = (1/N) Σ_i Σ_k (p_ik − 1[k = y_i])²``: summed over classes, averaged over samples, so
    it lies in ``[0, 2]`` (0 for a confident correct prediction, 2 for a confident wrong one).

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
    """


def _mean_conf_correct_checked(p: torch.Tensor, y: torch.Tensor) -> float:
    correct = p.argmax(dim=1) == y
    p_true = p.gather(1, y.unsqueeze(1)).squeeze(1)
    return _masked_mean(p_true, correct)


@_on_checked_inputs(_mean_conf_correct_checked)
def mean_confidence_correct(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean probability of the true class over the correctly classified samples.

    ``(1/|C|) Σ_{i∈C} p_{i,y_i}`` with ``C = {i : argmax_k p_ik = y_i}`` (ties → lowest index);
    for ``i ∈ C`` this equals the top-label confidence. NaN when no sample is correct.

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
    """


def _kl_uniform_incorrect_checked(p: torch.Tensor, y: torch.Tensor) -> float:
    k = p.shape[1]
    wrong = p.argmax(dim=1) != y
    kl = torch.special.xlogy(p, p * k).sum(dim=1)  # xlogy(0, ·) = 0 gives 0·log 0 = 0
    return _masked_mean(kl, wrong)


@_on_checked_inputs(_kl_uniform_incorrect_checked)
def kl_to_uniform_incorrect(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean KL divergence from the prediction to the uniform distribution, over misclassified
    samples.

    ``(1/|W|) Σ_{i∈W} KL(p_i ‖ u)`` with ``KL(p ‖ u) = Σ_k p_k log(p_k · K)`` (natural log, so in
    nats, between 0 for a uniform prediction and ``log K`` for a one-hot one; ``0 · log 0 = 0``),
    ``u = (1/K, ..., 1/K)`` and ``W = {i : argmax_k p_ik ≠ y_i}`` (ties → lowest index). Low values
    mean the model is unsure when it is wrong. NaN when no sample is misclassified.

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
    """


def _paper_kl_uniform_incorrect_checked(p: torch.Tensor, y: torch.Tensor) -> float:
    k = p.shape[1]
    wrong = p.argmax(dim=1) != y
    # mean over the K classes of u_k (log u_k − log p_k): F.kl_div(log p, u)'s elementwise mean
    kl = (math.log(1.0 / k) - p.clamp_min(_PAPER_KL_EPS).log()).mean(dim=1) / k
    return _masked_mean(kl, wrong)


@_on_checked_inputs(_paper_kl_uniform_incorrect_checked)
def paper_kl_uniform_incorrect(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """The paper's "KL to uniform when wrong" (its Figures 11 and 13), beside ours.

    The reference's ``look_at_calibration.py`` computes ``F.kl_div(log p, u)`` over the
    misclassified samples: PyTorch's ``kl_div(input, target)`` is ``target · (log target −
    input)`` elementwise, averaged over all ``|W| · K`` elements, so the value is
    ``(1/|W|) Σ_{i∈W} (1/K) KL(u ‖ p_i)`` with ``KL(u ‖ p) = Σ_k (1/K) log(1 / (K p_k))`` —
    the *reverse* KL of :func:`kl_to_uniform_incorrect`, divided by ``K``. It is 0 for a uniform
    prediction and grows without bound as any class's probability goes to 0; ``p_k`` is clamped
    at ``1e-12`` so a softmax that underflowed gives a large finite value, not infinity.
    NaN when no sample is misclassified.

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
    """


# --------------------------------------------------------------------------------------------
# Everything at once
# --------------------------------------------------------------------------------------------


def calibration_summary(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int = DEFAULT_N_BINS
) -> dict[str, Any]:
    """All metrics of this module in one JSON-safe dict (inputs validated once).

    Keys: ``accuracy``, ``ece``, ``mce``, ``nll``, ``brier``, ``mean_confidence_correct``,
    ``kl_to_uniform_incorrect``, ``paper_kl_uniform_incorrect``, ``per_class_accuracy`` (list),
    ``reliability``
    (:meth:`ReliabilityBins.to_dict`). Each value follows the formula of the function of the same
    name; ECE and MCE use ``n_bins`` bins and NLL the default ``eps``. Any NaN (no correct or no
    misclassified sample, a class without samples, an empty bin) is returned as ``None``.

    Args:
        probs: ``(N, K)`` probabilities.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        n_bins: number of equal-width bins for ECE / MCE / reliability (default 15).
    """
    n_bins = _check_n_bins(n_bins)
    p, y = _check_inputs(probs, labels)
    bins = _reliability_from_checked(p, y, n_bins)
    correct = (p.argmax(dim=1) == y).to(torch.float64)
    k = p.shape[1]
    totals = torch.bincount(y, minlength=k).to(torch.float64)
    hits = torch.zeros(k, dtype=torch.float64).index_add_(0, y, correct)
    per_class = [float(h / t) if t > 0 else math.nan for h, t in zip(hits, totals, strict=True)]
    return {
        "accuracy": float(correct.mean()),
        "ece": bins.ece(),
        "mce": bins.mce(),
        "nll": _nll_checked(p, y, 1e-12),
        "brier": _brier_checked(p, y),
        "mean_confidence_correct": _nan_to_none(_mean_conf_correct_checked(p, y)),
        "kl_to_uniform_incorrect": _nan_to_none(_kl_uniform_incorrect_checked(p, y)),
        "paper_kl_uniform_incorrect": _nan_to_none(_paper_kl_uniform_incorrect_checked(p, y)),
        "per_class_accuracy": [_nan_to_none(v) for v in per_class],
        "reliability": bins.to_dict(),
    }


# --------------------------------------------------------------------------------------------
# Compatibility value of the earlier research code (not a calibration metric)
# --------------------------------------------------------------------------------------------


def paper_ece(
    logits: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    n_bins: int = PAPER_ECE_N_BINS,
) -> float:
    """The "ECE" number of the earlier research code, reproduced for comparison only.

    **Do not use this as a calibration metric**; use :func:`expected_calibration_error`. It is
    computed on RAW LOGITS (no softmax), per test batch, and the per-batch values are summed and
    divided by the number of samples: a mistake this library does not repeat.

    What the earlier code does. In landskape-ai/ILM-VP (``experiments/cnn/look_at_calibration.py``
    and the sibling training scripts), the test loop runs ``calibration_error +=
    cal.get_ece(fx.cpu().numpy(), y.cpu().numpy())`` for every batch, where ``fx`` are the
    label-mapped logits, and logs ``calibration_error / total_num`` as ``Test/ECE``. ``cal`` is
    ``import calibration as cal``, i.e. the ``uncertainty-calibration`` package of Kumar et al.
    (p-lambda/verified_calibration), whose ``get_ece(probs, labels, debias=False, num_bins=15,
    mode='top-label')`` is a plug-in top-label ECE over 15 equal-width bins. Its binning is
    ``np.searchsorted([1/n, ..., n/n], conf)`` followed by an ``np.split`` that merges every
    index ``≥ n−1`` into the last bin, and every sample is binned. So for raw logits:

    * the "confidence" of a sample is its largest logit ``c_i = max_k z_ik``; the prediction is
      ``argmax_k z_ik`` (ties → lowest index, as ``np.argmax`` and ``torch.argmax``);
    * bin ``b ∈ {0..n−1}`` takes ``b/n < c_i ≤ (b+1)/n``, except that bin 0 also takes every
      ``c_i ≤ 0`` and bin ``n−1`` every ``c_i > 1`` (nothing falls outside the bins);
    * per batch ``t`` of size ``n_t``: ``ECE_t = Σ_b (|B_b| / n_t) · |conf(B_b) − acc(B_b)|``;
    * result ``= (Σ_t ECE_t) / N``, batches being consecutive chunks of ``batch_size`` rows. The
      batch values are *not* weighted by batch size, so the result is roughly the mean batch
      ECE divided by ``batch_size`` and depends on ``batch_size`` and on the logit scale.

    This differs from the commonly copied ``ece_score(py, y_test, n_bins=10)`` helper (which
    drops confidences outside ``(0, 1]`` from every bin and normalises by the number of binned
    samples); that helper is not what the earlier code called. The original worked in float32
    numpy; this works in float64, so results can differ in the last few digits.

    Args:
        logits: ``(N, K)`` raw (label-mapped) logits, in test-loader order.
        labels: ``(N,)`` integer class labels in ``[0, K)``.
        batch_size: the test batch size the earlier code used (128 in its scripts).
        n_bins: number of bins (15, ``get_ece``'s default, which the earlier code used).

    Returns:
        The compatibility value (not bounded by 1 for large logits).
    """
    n_bins = _check_n_bins(n_bins)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HiddenCostError(f"batch_size must be a positive integer, got {batch_size!r}")
    z, y = _check_scores_and_labels(logits, labels, "logits")
    n = z.shape[0]
    total = 0.0
    for start in range(0, n, batch_size):
        zb, yb = z[start : start + batch_size], y[start : start + batch_size]
        pred = zb.argmax(dim=1)  # ties -> lowest index, as np.argmax in the original
        conf = zb.gather(1, pred.unsqueeze(1)).squeeze(1)
        correct = (pred == yb).to(torch.float64)
        idx = _bin_index(conf, n_bins)
        counts = torch.bincount(idx, minlength=n_bins).to(torch.float64)
        conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, conf)
        correct_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, idx, correct)
        filled = counts > 0
        gaps = (conf_sum[filled] - correct_sum[filled]).abs() / counts[filled]
        total += float((counts[filled] / zb.shape[0] * gaps).sum())
    return total / n


# --------------------------------------------------------------------------------------------
# Temperature scaling (Guo et al. 2017)
# --------------------------------------------------------------------------------------------

#: The range of ln T searched by :func:`fit_temperature`: T in [e⁻⁴, e⁴] ≈ [0.018, 54.6].
LOG_TEMPERATURE_BOUNDS = (-4.0, 4.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 minimising the mean NLL of softmax(z / T) on (``logits``,
    ``labels``) (Guo et al. 2017, "On Calibration of Modern Neural Networks"): a bounded 1-D
    search over ln T in :data:`LOG_TEMPERATURE_BOUNDS` (the NLL is convex in 1/T), in float64.
    T rescales confidence only: the argmax, hence accuracy, is unchanged."""
    from scipy.optimize import minimize_scalar  # scipy: already a dependency (statistics)

    z, y = logits.double(), torch.as_tensor(labels).long()
    if z.ndim != 2 or len(z) != len(y) or not len(y):
        raise ValueError(f"(N, K) logits and (N,) labels expected, got {tuple(z.shape)} and "
                         f"{tuple(y.shape)}")

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z / math.exp(log_t), y))

    found = minimize_scalar(nll, bounds=LOG_TEMPERATURE_BOUNDS, method="bounded",
                            options={"xatol": 1e-6})
    return float(math.exp(found.x))
