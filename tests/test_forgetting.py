"""What compression forgets after transfer: modal labels and their tie rule, PIEs and churn on
synthetic predictions where chosen examples flip, and the per-class test on recalls where one
class pays."""

from __future__ import annotations

import numpy as np
import pytest

from hiddencost.forgetting import churn, modal_labels, pies
from hiddencost.report.forgetting import class_tests


def test_modal_labels_by_hand_with_the_smallest_label_on_ties():
    seeds = np.array([[0, 3, 3, 1],
                      [1, 3, 0, 2],
                      [1, 2, 0, 0]])
    # example 0: 0,1,1 → 1; example 1: 3,3,2 → 3; example 2: 3,0,0 → 0; example 3: a tie → 0
    assert modal_labels(seeds).tolist() == [1, 3, 0, 0]
    assert modal_labels(np.array([[4, 1], [1, 4]])).tolist() == [1, 1]
    with pytest.raises(ValueError):
        modal_labels(np.array([1, 2]))


def _flipping(seed: int = 0, n: int = 60, k: int = 5, seeds: int = 3):
    """Labels, dense predictions (right but for one seed's slips) and compressed predictions in
    which the ``chosen`` examples flip in 2 of 3 seeds (and other examples slip in one)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    chosen = np.sort(rng.choice(n, 8, replace=False))
    dense = np.repeat(labels[None], seeds, axis=0)
    compressed = dense.copy()
    others = np.setdiff1d(np.arange(n), chosen)
    for s, slips in enumerate(np.array_split(rng.permutation(others)[:12], seeds)):
        dense[s, slips] = (labels[slips] + 1) % k  # one seed each: never the mode
        compressed[s, slips[::2]] = (labels[slips[::2]] + 2) % k
    compressed[:2, chosen] = (labels[chosen] + 1) % k  # 2 of 3 seeds: the mode moves
    return labels, dense, compressed, chosen


def test_exactly_the_examples_that_flip_in_most_compressed_seeds_are_pies():
    labels, dense, compressed, chosen = _flipping()
    assert np.flatnonzero(pies(dense, compressed)).tolist() == chosen.tolist()
    lost = churn(dense, compressed, labels)
    assert np.flatnonzero(lost.lost).tolist() == chosen.tolist() and not lost.gained.any()
    assert lost.lost_rate == pytest.approx(8 / 60)
    # the reverse comparison gains what the other lost
    back = churn(compressed, dense, labels)
    assert np.flatnonzero(back.gained).tolist() == chosen.tolist()


def test_a_class_whose_recall_drops_across_seeds_is_the_only_holm_significant_one():
    rng = np.random.default_rng(3)
    k, seeds = 20, 5  # with 20 classes one class's drop barely lifts the others' ratio
    dense = np.clip(0.8 + rng.normal(0, 0.04, (seeds, k)), 0, 1)
    compressed = np.clip(0.8 + rng.normal(0, 0.04, (seeds, k)), 0, 1)
    compressed[:, 6] = np.clip(0.35 + rng.normal(0, 0.04, seeds), 0, 1)  # class 6 pays
    tests = class_tests(dense, dense.mean(1), compressed, compressed.mean(1))
    assert [t.cls for t in tests if t.p_holm < 0.05] == [6]
    assert [t.cls for t in tests if t.hurt] == [6]
    six = tests[6]
    assert six.dense > 0.9 and six.compressed < 0.5  # recall / accuracy: Hooker's convention
    assert six.p_holm == pytest.approx(min(1.0, 20 * six.p))  # the smallest p: times m


def test_the_report_finds_the_pies_and_the_paying_class_of_stored_predictions(tmp_path):
    from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record

    from hiddencost.predictions import write_predictions
    from hiddencost.report.sections.forgetting import forgetting_tables
    from hiddencost.report.table import table_from_records

    labels, dense, compressed, chosen = _flipping()
    rng = np.random.default_rng(3)
    records, folders = [], []
    for comp, predictions in ((DEFAULT_COMPRESSIONS[0], dense),
                              (DEFAULT_COMPRESSIONS[1], compressed)):
        for seed, predicted in enumerate(predictions):
            recall = np.clip(0.8 + rng.normal(0, 0.02, 20), 0, 1)  # 3 seeds: little noise
            if comp[0] != "dense":
                recall[6] = 0.35 + rng.normal(0, 0.02)  # class 6 pays in every seed
            records.append(make_record(seed=seed, compression=comp, per_class=recall.tolist(),
                                       accuracy=float(recall.mean())))
            folder = tmp_path / f"{comp[0]}-{seed}"
            folder.mkdir()
            write_predictions(folder, np.eye(5)[predicted] * 3.0, labels)  # logits: one-hot
            folders.append(folder)
    cells, classes = forgetting_tables(table_from_records(records, artifacts=folders))
    [cell] = cells.to_dict("records")
    assert cell["pie_rate"] == pytest.approx(100 * 8 / 60)
    assert cell["dense_disagreement"] == pytest.approx(100 * 12 / 60)  # one seed's slips each
    assert (cell["pie_dense_accuracy"], cell["pie_compressed_accuracy"]) == (100.0, 0.0)
    assert cell["lost_rate"] == pytest.approx(100 * 8 / 60) and cell["gained_rate"] == 0
    assert (cell["hurt_classes"], cell["worst_class"]) == (1, 6)
    assert classes.loc[classes["hurt"], "target"].tolist() == [6] and len(classes) == 20


def test_dense_disagreement_is_the_share_of_examples_the_seeds_predict_differently():
    from hiddencost.forgetting import disagreement

    seeds = np.array([[0, 1, 2, 3],
                      [0, 1, 1, 3],
                      [0, 2, 2, 3]])
    assert disagreement(seeds).tolist() == [False, True, True, False]
    assert not disagreement(seeds[:1]).any()  # one seed agrees with itself


def test_top_pies_put_lost_examples_first_then_the_firmest_by_hand():
    from hiddencost.forgetting import top_pies

    labels = np.array([0, 1, 2, 0, 1])
    dense = np.array([[0, 1, 2, 0, 0],
                      [0, 1, 2, 1, 0]])
    compressed = np.array([[1, 1, 0, 0, 1],
                           [1, 1, 0, 2, 2]])
    # modal dense [0,1,2,0,0], compressed [1,1,0,0,1]: PIEs 0, 2, 4; example 3 ties to 0 on
    # both sides (not a PIE); 0 and 2 are lost (dense right), 4 is gained (compressed right).
    # firmness: 0 → 1 + 1, 2 → 1 + 1, 4 → 1 + 0.5
    assert top_pies(dense, compressed, labels, 3).tolist() == [0, 2, 4]
    assert top_pies(dense, compressed, labels, 1).tolist() == [0]
    dense[1, 0] = 2  # example 0 now ties on the dense side: still lost (modal 0), less firm
    assert top_pies(dense, compressed, labels, 3).tolist() == [2, 0, 4]


def _digits_study(tmp_path, labels: np.ndarray, chosen: np.ndarray):
    """Dense and 50 %-pruned ILM records on digits, three seeds each, whose predictions are
    right but for ``chosen`` examples, which the pruned seeds get wrong (two of three)."""
    from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record

    from hiddencost.predictions import write_predictions
    from hiddencost.report.table import table_from_records

    records, folders = [], []
    for comp in DEFAULT_COMPRESSIONS[:2]:
        for seed in range(3):
            predicted = labels.copy()
            if comp[0] != "dense" and seed < 2:
                predicted[chosen] = (labels[chosen] + 1) % 10
            records.append(make_record(seed=seed, compression=comp))
            folder = tmp_path / f"{comp[1]}-{seed}"
            folder.mkdir()
            write_predictions(folder, np.eye(10)[predicted] * 3.0, labels)
            folders.append(folder)
    return table_from_records(records, artifacts=folders)


def test_the_top_pies_come_with_their_real_test_images(tmp_path):
    from hiddencost.data import load_dataset
    from hiddencost.report.sections.forgetting import pie_examples, with_images

    digits = load_dataset("digits")
    labels = digits.test_labels.numpy()
    chosen = np.array([3, 40, 41, 200, 449])
    df = _digits_study(tmp_path, labels, chosen)
    examples = pie_examples(df, k=4)
    # all five are lost and equally firm (3 of 3 dense seeds, 2 of 3 pruned): by position
    assert examples["position"].tolist() == [3, 40, 41, 200]
    assert examples["rank"].tolist() == [0, 1, 2, 3]
    assert (examples["dense_label"] == examples["label"]).all()
    assert examples["compressed_label"].tolist() == [(y + 1) % 10 for y in labels[[3, 40, 41, 200]]]
    assert examples["label_name"].tolist() == [str(y) for y in labels[[3, 40, 41, 200]]]
    shown, problems = with_images(examples, df)
    assert problems == []
    want = digits.test_images[[3, 40, 41, 200]].permute(0, 2, 3, 1).numpy()
    assert all(np.array_equal(a, b) for a, b in zip(shown["image"], want, strict=True))


def test_thumbnails_of_a_test_split_that_changed_are_skipped_in_one_line(tmp_path):
    from hiddencost.data import load_dataset
    from hiddencost.report.sections.forgetting import pie_examples, with_images

    labels = (load_dataset("digits").test_labels.numpy() + 1) % 10  # not the split's labels
    df = _digits_study(tmp_path, labels, np.array([5]))
    shown, problems = with_images(pie_examples(df), df)
    assert shown.empty
    assert problems == ["digits: the digits test split read now differs from the runs'"]
