"""Bayesian-guided label mapping (BLM, BLM+; Cai et al., NeurIPS'24) against closed forms and
hand computations, and end to end on digits."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from hiddencost.prompting.mappings import bayesian_weights, source_mass, top_k_of
from hiddencost.run import RunCache, make_config, run_one


def test_blm_weights_equal_the_closed_form_on_a_hand_made_count_matrix():
    counts = torch.tensor([[3.0, 1.0],   # source 0: 3 of target 0, 1 of target 1
                           [0.0, 2.0],   # source 1
                           [0.0, 0.0]],  # source 2: never predicted
                          dtype=torch.float64)
    # P = F / (row sum + 1): [[3/5, 1/5], [0, 2/3], [0, 0]]
    # ω = P / column sums: column 0 sums to 3/5, column 1 to 1/5 + 2/3 = 13/15
    expected = torch.tensor([[1.0, (1 / 5) / (13 / 15)],
                             [0.0, (2 / 3) / (13 / 15)],
                             [0.0, 0.0]])
    assert torch.allclose(bayesian_weights(counts, laplace=1.0), expected, atol=1e-7)
    # a target no source predicts keeps a zero column (not NaN)
    assert bayesian_weights(torch.zeros(3, 2, dtype=torch.float64), 1.0).eq(0).all()


def test_blm_counts_top1_and_blm_plus_sums_the_top_k_probabilities_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2],
                                     [0.1, 0.6, 0.3],
                                     [0.2, 0.2, 0.6]]))
    labels = torch.tensor([0, 1, 1])
    # BLM: top-1 sources 0, 1, 2 → F[0,0] = 1, F[1,1] = 1, F[2,1] = 1
    assert source_mass(logits, labels, 2, None).tolist() == [[1, 0], [0, 1], [0, 1]]
    # BLM+ with k = 2: example 0 keeps 0.5, 0.3; example 1 keeps 0.6, 0.3; example 2 keeps
    # 0.6 and the first of the two 0.2s (topk keeps the lower index)
    mass = source_mass(logits, labels, 2, 2)
    expected = torch.tensor([[0.5, 0.2], [0.3, 0.6], [0.0, 0.3 + 0.6]], dtype=torch.float64)
    assert torch.allclose(mass, expected, atol=1e-12)
    omega = bayesian_weights(mass, laplace=1.0)
    p = expected / (expected.sum(1, keepdim=True) + 1)
    assert torch.allclose(omega, (p / p.sum(0, keepdim=True)).float(), atol=1e-7)
    assert (top_k_of(0.15, 10), top_k_of(0.15, 5), top_k_of(0.15, 100)) == (1, 1, 15)


def test_blm_and_blm_plus_run_end_to_end_on_digits(tmp_path):
    tiny = {"canvas_size": 48, "inner_size": 16, "device": "cpu", "n_shot": 2, "epochs": 2}
    cache = RunCache()
    blm = run_one(make_config(method="blm", **tiny), out_dir=tmp_path, cache=cache)
    assert blm.method.display_name == "BLM-VP" and blm.label_mapping is None
    assert blm.config["options"]["laplace"] == 1.0
    assert [h.mapping_recomputed for h in blm.history] == [True, True]
    omega = load_file(str(tmp_path / "weights.safetensors"))["mapping.weights"]
    assert omega.shape == (1000, 10)
    assert torch.allclose(omega.sum(0), torch.ones(10))  # each target's column sums to 1
    plus = run_one(make_config(method="blm+", **tiny), cache=cache)
    assert plus.method.id == "timm/blm+" and 0.0 <= plus.accuracy <= 1.0
    with pytest.raises(Exception, match="mapping_num 2 has no meaning for blm"):
        run_one(make_config(method="blm", mapping_num=2, **tiny), cache=cache)
