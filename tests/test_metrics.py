"""Tests for hiddencost.metrics: hand-computed values, edge cases, and torchmetrics agreement."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from hiddencost.errors import HiddenCostError
from hiddencost.metrics import (
    ReliabilityBins,
    _bin_index,
    accuracy,
    brier_score,
    calibration_summary,
    expected_calibration_error,
    kl_to_uniform_incorrect,
    maximum_calibration_error,
    mean_confidence_correct,
    negative_log_likelihood,
    paper_ece,
    paper_kl_uniform_incorrect,
    per_class_accuracy,
    reliability_bins,
)

F64 = torch.float64


# --------------------------------------------------------------------------------------------
# A hand-computed example (K = 5 classes, 6 samples, n_bins = 5 -> edges 0, .2, .4, .6, .8, 1).
# float64 on purpose: 0.2 and 0.6 must sit *exactly* on bin edges (float32 0.2 is 0.2000000030).
#
#   i  probs                         y  pred  conf  correct  bin (lo, hi]
#   0  [1,   0,   0,   0,   0  ]     0   0    1.00    yes    4 (.8, 1]   conf 1.0 -> last bin
#   1  [.2,  .2,  .2,  .2,  .2 ]     0   0    0.20    yes    0 (0, .2]   tie -> index 0; edge
#   2  [.1,  .7,  .1,  .05, .05]     0   1    0.70    no     3 (.6, .8]
#   3  [.6,  .1,  .1,  .1,  .1 ]     0   0    0.60    yes    2 (.4, .6]  edge -> bin below
#   4  [.35, .3,  .15, .1,  .1 ]     1   0    0.35    no     1 (.2, .4]
#   5  [.1,  .75, .05, .05, .05]     1   1    0.75    yes    3 (.6, .8]
#
# bins: b0 {1}: acc 1, conf .2 -> gap .8      b1 {4}: acc 0, conf .35 -> gap .35
#       b2 {3}: acc 1, conf .6 -> gap .4      b3 {2,5}: acc .5, conf .725 -> gap .225
#       b4 {0}: acc 1, conf 1. -> gap 0
# ECE = (1*.8 + 1*.35 + 1*.4 + 2*.225 + 1*0) / 6 = 2.0 / 6;  MCE = .8;  accuracy = 4/6.
# (With [lo, hi) bins: b1 {1,4} gap .225, b3 {2,3,5} gap 1/60 -> a different ECE; with argmax
#  ties going elsewhere, sample 1 would be wrong.)
# --------------------------------------------------------------------------------------------

HAND_PROBS = torch.tensor(
    [
        [1.0, 0.0, 0.0, 0.0, 0.0],
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [0.1, 0.7, 0.1, 0.05, 0.05],
        [0.6, 0.1, 0.1, 0.1, 0.1],
        [0.35, 0.3, 0.15, 0.1, 0.1],
        [0.1, 0.75, 0.05, 0.05, 0.05],
    ],
    dtype=F64,
)
HAND_LABELS = torch.tensor([0, 0, 0, 0, 1, 1])


def test_accuracy_hand() -> None:
    assert accuracy(HAND_PROBS, HAND_LABELS) == pytest.approx(4 / 6, abs=1e-15)


def test_accuracy_argmax_tie_goes_to_lowest_index() -> None:
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]], dtype=F64)
    assert accuracy(probs, torch.tensor([0, 1])) == 0.5
    assert accuracy(probs, torch.tensor([0, 0])) == 1.0


def test_reliability_bins_hand() -> None:
    bins = reliability_bins(HAND_PROBS, HAND_LABELS, n_bins=5)
    assert isinstance(bins, ReliabilityBins)
    assert bins.edges == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert bins.counts == [1, 1, 1, 2, 1]
    assert bins.accuracy == pytest.approx([1.0, 0.0, 1.0, 0.5, 1.0], abs=1e-15)
    assert bins.confidence == pytest.approx([0.2, 0.35, 0.6, 0.725, 1.0], abs=1e-15)


def test_ece_hand() -> None:
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(
        2.0 / 6, abs=1e-12
    )


def test_mce_hand() -> None:
    assert maximum_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(
        0.8, abs=1e-12
    )


def test_bin_edges_are_lo_exclusive_hi_inclusive() -> None:
    # n_bins = 5: 0.2 is the upper edge of bin 0, 0.6 of bin 2, 1.0 of bin 4; 0 -> first bin.
    conf = torch.tensor([0.0, 0.2, 0.2000001, 0.6, 0.61, 1.0], dtype=F64)
    assert _bin_index(conf, 5).tolist() == [0, 0, 1, 2, 3, 4]
    # 15 bins: b/15 sits on the edge and goes below; 1.0 goes into bin 14.
    edges = torch.arange(1, 16, dtype=F64) / 15
    assert _bin_index(edges, 15).tolist() == list(range(15))


def test_single_sample_at_edge_and_at_one() -> None:
    # conf exactly 0.4 = edge of bins 1|2 (n_bins=5), correct -> sits alone in bin 1.
    probs = torch.tensor([[0.4, 0.3, 0.3], [0.0, 1.0, 0.0]], dtype=F64)
    bins = reliability_bins(probs, torch.tensor([0, 1]), n_bins=5)
    assert bins.counts == [0, 1, 0, 0, 1]
    # ECE = (1/2)*|1 - .4| + (1/2)*|1 - 1| = .3
    assert expected_calibration_error(probs, torch.tensor([0, 1]), n_bins=5) == pytest.approx(0.3)


def test_empty_bins_are_nan_and_none_in_dict() -> None:
    bins = reliability_bins(HAND_PROBS, HAND_LABELS, n_bins=10)
    # confs .2 .35 .6 .7 .75 1.0 with edges k/10: .2->b1, .35->b3, .6->b5, .7->b6, .75->b7, 1->b9
    assert bins.counts == [0, 1, 0, 1, 0, 1, 1, 1, 0, 1]
    for b, cnt in enumerate(bins.counts):
        assert math.isnan(bins.accuracy[b]) == (cnt == 0)
        assert math.isnan(bins.confidence[b]) == (cnt == 0)
    d = bins.to_dict()
    assert d["accuracy"][0] is None and d["confidence"][0] is None
    assert d["accuracy"][1] == 1.0 and d["confidence"][1] == pytest.approx(0.2)
    json.dumps(d, allow_nan=False)  # must not raise


def test_ece_mce_agree_with_reliability_bins() -> None:
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(3 * torch.randn(500, 7, generator=gen, dtype=F64), dim=1)
    labels = torch.randint(0, 7, (500,), generator=gen)
    for n_bins in (1, 5, 15, 40):
        bins = reliability_bins(probs, labels, n_bins)
        n = sum(bins.counts)
        assert n == 500 and len(bins.counts) == n_bins and len(bins.edges) == n_bins + 1
        gaps = [
            abs(a - c)
            for a, c, k in zip(bins.accuracy, bins.confidence, bins.counts, strict=True)
            if k
        ]
        weights = [k / n for k in bins.counts if k]
        ece = expected_calibration_error(probs, labels, n_bins)
        mce = maximum_calibration_error(probs, labels, n_bins)
        assert ece == pytest.approx(sum(w * g for w, g in zip(weights, gaps, strict=True)))
        assert mce == pytest.approx(max(gaps))
        assert 0.0 <= ece <= mce <= 1.0


def test_ece_zero_for_perfectly_calibrated_data() -> None:
    # 15 bins. 10 samples at conf .70 (bin 10: (.667, .733]) with 7 correct, and
    # 4 samples at conf .75 (bin 11: (.733, .8]) with 3 correct -> acc == conf in each bin.
    # A per-sample |c_i - 1[correct]| average would be far from 0, so binning is exercised.
    probs = torch.tensor([[0.7, 0.3]] * 10 + [[0.25, 0.75]] * 4, dtype=F64)
    labels = torch.tensor([0] * 7 + [1] * 3 + [1] * 3 + [0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    assert maximum_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_all_correct_and_confident_is_zero_and_all_wrong_is_one() -> None:
    probs = torch.eye(4, dtype=F64)
    assert expected_calibration_error(probs, torch.arange(4)) == 0.0
    assert expected_calibration_error(probs, torch.tensor([1, 2, 3, 0])) == 1.0
    assert maximum_calibration_error(probs, torch.tensor([1, 2, 3, 0])) == 1.0


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_mce_agree_with_torchmetrics(n_bins: int) -> None:
    # Continuous random probabilities never land exactly on an edge, so torchmetrics' [lo, hi)
    # bucketize and our (lo, hi] bins put every sample in the same bin.
    gen = torch.Generator().manual_seed(0)
    n, k = 3000, 10
    logits = 2.5 * torch.randn(n, k, generator=gen, dtype=F64)
    labels = torch.randint(0, k, (n,), generator=gen)
    take_argmax = torch.rand(n, generator=gen) < 0.6  # make accuracy ~60%, not ~10%
    labels = torch.where(take_argmax, logits.argmax(dim=1), labels)
    probs = torch.softmax(logits, dim=1)
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        ref = multiclass_calibration_error(probs, labels, num_classes=k, n_bins=n_bins, norm=norm)
        assert ours(probs, labels, n_bins) == pytest.approx(float(ref), abs=1e-6)


def test_float32_input_agrees_with_torchmetrics() -> None:
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(2 * torch.randn(1000, 5, generator=gen), dim=1)  # float32
    labels = torch.randint(0, 5, (1000,), generator=gen)
    ref = multiclass_calibration_error(probs, labels, num_classes=5, n_bins=15, norm="l1")
    assert expected_calibration_error(probs, labels) == pytest.approx(float(ref), abs=1e-6)


# --------------------------------------------------------------------------------------------
# NLL, Brier, confidence statistics, per-class accuracy
# --------------------------------------------------------------------------------------------


def test_nll_hand() -> None:
    # true-class probabilities: 1, .2, .1, .6, .3, .75
    expected = -(math.log(1) + math.log(0.2) + math.log(0.1) + math.log(0.6))
    expected -= math.log(0.3) + math.log(0.75)
    assert negative_log_likelihood(HAND_PROBS, HAND_LABELS) == pytest.approx(expected / 6)


def test_nll_clamps_zero_probability_at_eps() -> None:
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=F64)
    labels = torch.tensor([1, 0])
    # (-log 1e-12 - log .5) / 2
    expected = (-math.log(1e-12) - math.log(0.5)) / 2
    assert negative_log_likelihood(probs, labels) == pytest.approx(expected)
    assert negative_log_likelihood(probs, labels, eps=1e-3) == pytest.approx(
        (-math.log(1e-3) - math.log(0.5)) / 2
    )
    with pytest.raises(HiddenCostError):
        negative_log_likelihood(probs, labels, eps=0.0)


def test_brier_hand() -> None:
    # per sample sum_k (p_k - y_k)^2:
    #   0: 0
    #   1: (.2-1)^2 + 4*.04                            = .80
    #   2: (.1-1)^2 + .7^2 + .1^2 + .05^2 + .05^2      = .81 + .49 + .01 + .005 = 1.315
    #   3: (.6-1)^2 + 4*.01                            = .20
    #   4: .35^2 + (.3-1)^2 + .15^2 + .1^2 + .1^2      = .1225 + .49 + .0225 + .02 = .655
    #   5: .1^2 + (.75-1)^2 + 3*.05^2                  = .01 + .0625 + .0075 = .08
    # mean = 3.05 / 6
    assert brier_score(HAND_PROBS, HAND_LABELS) == pytest.approx(3.05 / 6, abs=1e-12)


def test_brier_extremes() -> None:
    probs = torch.eye(3, dtype=F64)
    assert brier_score(probs, torch.arange(3)) == 0.0
    assert brier_score(probs, torch.tensor([1, 2, 0])) == 2.0


def test_mean_confidence_correct_hand() -> None:
    # correct samples 0, 1, 3, 5 with true-class probabilities 1, .2, .6, .75 -> 2.55 / 4
    assert mean_confidence_correct(HAND_PROBS, HAND_LABELS) == pytest.approx(0.6375)


def test_kl_to_uniform_incorrect_hand() -> None:
    # misclassified samples 2 and 4 (K = 5, KL = sum_k p_k log(5 p_k)):
    kl2 = 2 * 0.1 * math.log(0.5) + 0.7 * math.log(3.5) + 2 * 0.05 * math.log(0.25)
    kl4 = 0.35 * math.log(1.75) + 0.3 * math.log(1.5) + 0.15 * math.log(0.75)
    kl4 += 2 * 0.1 * math.log(0.5)
    assert kl_to_uniform_incorrect(HAND_PROBS, HAND_LABELS) == pytest.approx((kl2 + kl4) / 2)


def test_kl_to_uniform_extremes_and_zero_log_zero() -> None:
    # one-hot wrong prediction -> log K (0 log 0 = 0); uniform wrong prediction -> 0.
    probs = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=F64)
    assert kl_to_uniform_incorrect(probs[:1], torch.tensor([0])) == pytest.approx(math.log(4))
    assert kl_to_uniform_incorrect(probs[1:], torch.tensor([3])) == pytest.approx(0.0, abs=1e-15)
    assert kl_to_uniform_incorrect(probs, torch.tensor([0, 3])) == pytest.approx(math.log(4) / 2)


def test_paper_kl_uniform_incorrect_hand() -> None:
    # the reference's F.kl_div(log p, u): mean over the K = 5 entries of (1/5)(log(1/5) − log p_k)
    # on the misclassified samples 2 and 4, i.e. KL(u ‖ p_i) / 5, then averaged over them
    def rev(p: list[float]) -> float:
        return sum(0.2 * (math.log(0.2) - math.log(v)) for v in p) / 5

    want = (rev([0.1, 0.7, 0.1, 0.05, 0.05]) + rev([0.35, 0.3, 0.15, 0.1, 0.1])) / 2
    assert paper_kl_uniform_incorrect(HAND_PROBS, HAND_LABELS) == pytest.approx(want)
    # the same as torch's own kl_div (reduction "mean": over all |W|·K elements)
    wrong = HAND_PROBS[[2, 4]]
    torch_value = torch.nn.functional.kl_div(wrong.log(), torch.full_like(wrong, 0.2),
                                             reduction="mean")
    assert paper_kl_uniform_incorrect(HAND_PROBS, HAND_LABELS) == pytest.approx(float(torch_value))
    # not ours: KL(p ‖ u) is another number
    assert want != pytest.approx(kl_to_uniform_incorrect(HAND_PROBS, HAND_LABELS))


def test_paper_kl_uniform_stays_finite_on_a_zero_probability() -> None:
    probs = torch.tensor([[0.0, 1.0], [0.5, 0.5]], dtype=F64)
    got = paper_kl_uniform_incorrect(probs, torch.tensor([0, 1]))
    # both wrong (sample 1's tie goes to class 0). Sample 0: (1/2)·[(log .5 − log 1e-12) +
    # (log .5 − log 1)] / 2 with p clamped at 1e-12; sample 1 (uniform): 0
    one = 0.5 * ((math.log(0.5) + 12 * math.log(10)) + math.log(0.5)) / 2
    assert got == pytest.approx(one / 2)
    assert math.isnan(paper_kl_uniform_incorrect(probs, torch.tensor([1, 0])))  # none wrong


def test_all_correct_and_none_correct_give_nan() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=F64)
    all_right, all_wrong = torch.tensor([0, 1]), torch.tensor([1, 0])
    assert math.isnan(kl_to_uniform_incorrect(probs, all_right))
    assert mean_confidence_correct(probs, all_right) == pytest.approx(0.85)
    assert math.isnan(mean_confidence_correct(probs, all_wrong))
    assert not math.isnan(kl_to_uniform_incorrect(probs, all_wrong))
    assert accuracy(probs, all_wrong) == 0.0


def test_per_class_accuracy_hand() -> None:
    # class 0: samples 0,1,2,3 -> 3 correct of 4; class 1: samples 4,5 -> 1 of 2; 2..4: none
    got = per_class_accuracy(HAND_PROBS, HAND_LABELS)
    assert len(got) == 5
    assert got[:2] == pytest.approx([0.75, 0.5])
    assert all(math.isnan(v) for v in got[2:])
    assert per_class_accuracy(HAND_PROBS, HAND_LABELS, num_classes=2) == pytest.approx([0.75, 0.5])
    with pytest.raises(HiddenCostError):
        per_class_accuracy(HAND_PROBS, HAND_LABELS, num_classes=1)


# --------------------------------------------------------------------------------------------
# calibration_summary
# --------------------------------------------------------------------------------------------


def test_calibration_summary_matches_functions_and_is_json_safe() -> None:
    s = calibration_summary(HAND_PROBS, HAND_LABELS, n_bins=5)
    assert set(s) == {
        "accuracy",
        "ece",
        "mce",
        "nll",
        "brier",
        "mean_confidence_correct",
        "kl_to_uniform_incorrect",
        "paper_kl_uniform_incorrect",
        "per_class_accuracy",
        "reliability",
    }
    assert s["accuracy"] == pytest.approx(4 / 6)
    assert s["ece"] == pytest.approx(2.0 / 6)
    assert s["mce"] == pytest.approx(0.8)
    assert s["nll"] == pytest.approx(negative_log_likelihood(HAND_PROBS, HAND_LABELS))
    assert s["brier"] == pytest.approx(3.05 / 6)
    assert s["mean_confidence_correct"] == pytest.approx(0.6375)
    assert s["kl_to_uniform_incorrect"] == pytest.approx(
        kl_to_uniform_incorrect(HAND_PROBS, HAND_LABELS)
    )
    assert s["paper_kl_uniform_incorrect"] == pytest.approx(
        paper_kl_uniform_incorrect(HAND_PROBS, HAND_LABELS)
    )
    assert s["per_class_accuracy"][:2] == pytest.approx([0.75, 0.5])
    assert s["per_class_accuracy"][2:] == [None, None, None]
    assert s["reliability"] == reliability_bins(HAND_PROBS, HAND_LABELS, 5).to_dict()
    json.dumps(s, allow_nan=False)


def test_calibration_summary_nan_becomes_none() -> None:
    s = calibration_summary(torch.eye(3, dtype=F64), torch.arange(3))
    assert s["kl_to_uniform_incorrect"] is None and s["paper_kl_uniform_incorrect"] is None
    assert s["accuracy"] == 1.0 and s["ece"] == 0.0
    json.dumps(s, allow_nan=False)


# --------------------------------------------------------------------------------------------
# paper_ece: the earlier code's value (raw logits, per batch, sum / N)
# --------------------------------------------------------------------------------------------


# K = 2, n_bins = 5 (upper edges .2 .4 .6 .8 1; bin 0 also takes conf <= 0, bin 4 conf > 1)
#   batch 1: [2.0, 0.5]  y0 pred0 right conf 2.0  -> bin 4 | [0.3, 0.55] y0 pred1 wrong conf .55
#            -> bin 2.  ECE_1 = 1/2*|2.0-1| + 1/2*|.55-0| = .5 + .275 = .775
#   batch 2: [-1, -0.5] y1 pred1 right conf -.5 -> bin 0 | [0.1, 0.15] y0 pred1 wrong conf .15
#            -> bin 0.  bin 0: conf (-.5+.15)/2 = -.175, acc .5 -> ECE_2 = 2/2 * .675 = .675
#   batch 3: [0.2, 0.1]  y0 pred0 right conf .2 -> bin 0.  ECE_3 = |.2 - 1| = .8
#   result = (.775 + .675 + .8) / N = 2.25 / 5 = .45
PAPER_LOGITS = torch.tensor(
    [[2.0, 0.5], [0.3, 0.55], [-1.0, -0.5], [0.1, 0.15], [0.2, 0.1]], dtype=F64
)
PAPER_LABELS = torch.tensor([0, 0, 1, 0, 0])


def test_paper_ece_hand() -> None:
    got = paper_ece(PAPER_LOGITS, PAPER_LABELS, batch_size=2, n_bins=5)
    assert got == pytest.approx(0.45, abs=1e-12)


def test_paper_ece_single_batch_hand() -> None:
    # one batch of 5: bin 0 {-.5 right, .15 wrong, .2 right}: conf -.05, acc 2/3 -> gap 43/60
    # bin 2 {.55 wrong}: gap .55;  bin 4 {2.0 right}: gap 1.0
    # ECE = (3 * 43/60 + .55 + 1.0) / 5 = 3.7 / 5 = .74;  result = .74 / 5 = .148
    got = paper_ece(PAPER_LOGITS, PAPER_LABELS, batch_size=64, n_bins=5)
    assert got == pytest.approx(0.148, abs=1e-12)


def test_paper_ece_on_probabilities_is_batch_ece_sum_over_n() -> None:
    gen = torch.Generator().manual_seed(5)
    probs = torch.softmax(2 * torch.randn(96, 6, generator=gen, dtype=F64), dim=1)
    labels = torch.randint(0, 6, (96,), generator=gen)
    full = expected_calibration_error(probs, labels, 15)
    assert paper_ece(probs, labels, batch_size=96) == pytest.approx(full / 96, abs=1e-12)
    # 3 batches of 32: each batch's proper ECE, summed (not weighted by size), over N.
    per_batch = sum(
        expected_calibration_error(probs[i : i + 32], labels[i : i + 32], 15) for i in (0, 32, 64)
    )
    assert paper_ece(probs, labels, batch_size=32) == pytest.approx(per_batch / 96, abs=1e-12)


def test_paper_ece_differs_from_proper_ece_on_logits() -> None:
    gen = torch.Generator().manual_seed(7)
    logits = 4 * torch.randn(256, 10, generator=gen, dtype=F64)  # mostly outside [0, 1]
    labels = torch.randint(0, 10, (256,), generator=gen)
    proper = expected_calibration_error(torch.softmax(logits, dim=1), labels)
    compat = paper_ece(logits, labels, batch_size=128)
    assert abs(compat - proper) > 0.05
    # and raw logits are refused by the proper metric
    with pytest.raises(HiddenCostError, match="softmax"):
        expected_calibration_error(logits, labels)


def test_paper_ece_validates() -> None:
    with pytest.raises(HiddenCostError):
        paper_ece(PAPER_LOGITS, PAPER_LABELS, batch_size=0)
    with pytest.raises(HiddenCostError):
        paper_ece(PAPER_LOGITS, PAPER_LABELS[:3], batch_size=2)
    with pytest.raises(HiddenCostError):
        paper_ece(PAPER_LOGITS, torch.tensor([0, 0, 2, 0, 0]), batch_size=2)


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------

GOOD_P = torch.tensor([[0.7, 0.3], [0.4, 0.6]], dtype=F64)
GOOD_Y = torch.tensor([0, 1])


@pytest.mark.parametrize(
    ("probs", "labels", "message"),
    [
        (torch.tensor([0.7, 0.3], dtype=F64), torch.tensor([0]), "2-D"),
        (GOOD_P, torch.tensor([[0], [1]]), "1-D"),
        (GOOD_P, torch.tensor([0, 1, 1]), "rows"),
        (torch.zeros(0, 2, dtype=F64), torch.zeros(0, dtype=torch.int64), "empty"),
        (GOOD_P, torch.tensor([0, 2]), r"\[0, 1\]"),
        (GOOD_P, torch.tensor([-1, 0]), r"\[0, 1\]"),
        (GOOD_P, torch.tensor([0.0, 1.0]), "integer"),
        (torch.tensor([[1.5, -0.5], [0.4, 0.6]], dtype=F64), GOOD_Y, r"\[0, 1\]"),
        (torch.tensor([[0.2, 0.3], [0.4, 0.6]], dtype=F64), GOOD_Y, "sum to 1"),
        (torch.tensor([[math.nan, 0.3], [0.4, 0.6]], dtype=F64), GOOD_Y, "NaN"),
        (torch.tensor([[1, 0], [0, 1]]), GOOD_Y, "floating-point"),
    ],
)
def test_bad_inputs_raise_one_line_error(probs, labels, message) -> None:
    fns = [
        accuracy,
        expected_calibration_error,
        maximum_calibration_error,
        reliability_bins,
        negative_log_likelihood,
        brier_score,
        mean_confidence_correct,
        kl_to_uniform_incorrect,
        per_class_accuracy,
        calibration_summary,
    ]
    for fn in fns:
        with pytest.raises(HiddenCostError, match=message) as info:
            fn(probs, labels)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_bad_n_bins(n_bins) -> None:
    with pytest.raises(HiddenCostError, match="n_bins"):
        expected_calibration_error(GOOD_P, GOOD_Y, n_bins=n_bins)


def test_results_are_python_floats_and_inputs_untouched() -> None:
    p32 = GOOD_P.to(torch.float32)
    before = p32.clone()
    for fn in (accuracy, expected_calibration_error, brier_score, negative_log_likelihood):
        assert type(fn(p32, GOOD_Y)) is float
    assert torch.equal(p32, before)
