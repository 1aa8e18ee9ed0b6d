"""The compression researchers use now: N:M sparsity, Wanda, GPTQ rounding and low rank, against
hand computations and on the real EfficientNet-Lite0."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from hiddencost.backbones import create_model
from hiddencost.compression import apply_compression, parse_compression
from hiddencost.compression.activation_aware import nm_eligible, nm_mask, wanda_prune
from hiddencost.compression.gptq import gptq_rows
from hiddencost.compression.layer_inputs import input_statistics, patches
from hiddencost.compression.lowrank import factor_rank, lowrank_factorize
from hiddencost.compression.quantization import quantize_weight_tensor


def _images(n: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0")[0]


@pytest.mark.parametrize("text, label, family", [
    ("nm:2:4", "nm2:4", "nm"), ("wanda-nm:2:4", "wanda-nm2:4", "wanda-nm"),
    ("wanda:0.5", "wanda-s0.50", "wanda"), ("gptq:4", "gptq-w4", "gptq"),
    ("lowrank:0.25", "lowrank-r0.25", "lowrank")])
def test_short_forms_and_labels_round_trip(text, label, family):
    spec = parse_compression(text)
    assert (spec.label, spec.family) == (label, family)
    assert parse_compression(spec.label) == spec


def test_nm_2_4_on_lite0_keeps_two_of_every_four_and_lists_what_it_skipped(lite0):
    import copy

    model = copy.deepcopy(lite0)
    report = apply_compression(model, parse_compression("nm:2:4"))
    eligible, skipped = nm_eligible(model, 4)
    for _, module in eligible:
        groups = module.weight.detach().reshape(module.weight.shape[0], -1, 4)
        assert ((groups == 0).sum(dim=2) >= 2).all()
    assert report.skipped_layers == skipped and skipped[0] == "conv_stem (the stem)"
    assert any("depthwise" in s for s in skipped)
    # pretrained weights hold a few exact zeros: groups that had three keep three
    before = sum(int((m.weight == 0).sum()) for _, m in nm_eligible(lite0, 4)[0])
    total = sum(m.weight.numel() for _, m in eligible)
    assert report.eligible_sparsity >= 0.5
    assert report.eligible_sparsity * total - total / 2 <= before
    fresh, _ = create_model("efficientnet_lite0", weights="random", seed=0)
    assert apply_compression(fresh, parse_compression("nm:2:4")).eligible_sparsity == 0.5


def test_nm_mask_by_hand():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.0, 0.0, 5.0, 1.0]])
    # groups [4 1 3 2] → keep 4, 3; [0 0 5 1] → keep 5, 1
    assert nm_mask(scores, 2, 4).tolist() == [[True, False, True, False,
                                               False, False, True, True]]


def test_wanda_keeps_the_weight_of_a_loud_input_that_magnitude_would_drop():
    layer = nn.Linear(4, 3, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 1.0, 0.8, 0.5],
                                         [0.2, 0.3, 1.0, 0.9],
                                         [0.05, 0.6, 0.7, 1.0]]))
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    x[:, 0] *= 100.0  # input 0's norm is 100× the others'
    model = nn.Sequential(layer)
    magnitude = (layer.weight.abs() >= layer.weight.abs().median(dim=1, keepdim=True).values)
    assert not magnitude[:, 0].any()  # magnitude pruning removes column 0 in every row
    wanda_prune(model, 0.5, x)
    assert (layer.weight[:, 0] != 0).all()  # Wanda keeps it
    assert ((layer.weight == 0).sum(dim=1) == 2).all()  # exactly half of every row


def test_gptq_rounds_onto_the_rtn_grid_with_lower_output_error():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(16, 32, generator=g)
    x = torch.randn(256, 32, generator=g) @ torch.randn(32, 32, generator=g)  # correlated
    q = gptq_rows(w, x.T @ x, bits=4).float()
    rtn = quantize_weight_tensor(w, 4)
    scale = w.abs().amax(dim=1, keepdim=True) / 7
    levels = q / scale
    assert torch.allclose(levels, levels.round(), atol=1e-5) and levels.abs().max() <= 7 + 1e-5
    gptq_error = (x @ (w - q).T).square().sum()
    rtn_error = (x @ (w - rtn).T).square().sum()
    assert gptq_error < 0.8 * rtn_error


def test_gptq_on_lite0_keeps_at_most_15_values_per_channel(lite0):
    import copy

    model = copy.deepcopy(lite0)
    report = apply_compression(model, parse_compression("gptq:4"), _images())
    assert report.max_distinct_values_per_channel <= 15 and report.weight_bits == 4
    with pytest.raises(Exception, match="gptq-w4 needs calibration_images"):
        apply_compression(copy.deepcopy(lite0), parse_compression("gptq:4"))


def test_lowrank_factors_have_rank_r_and_the_parameter_count_matches():
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 8))
    w0 = model[0].weight.detach().clone()
    report = apply_compression(model, parse_compression("lowrank:0.25"))
    r = factor_rank(0.25, 40, 30)  # round(0.25·30) = 8 (rounding half to even: 7.5 → 8)
    first, second = model[0][0], model[0][1]
    assert first.weight.shape == (r, 40) and second.weight.shape == (30, r)
    assert torch.linalg.matrix_rank(second.weight @ first.weight) <= r
    # the last layer: rank round(0.25·8) = 2, 2·(30 + 8) = 76 < 240, so it is factored too
    assert report.n_parameters == r * 40 + 30 * r + 30 + 2 * 30 + 8 * 2 + 8
    assert report.n_parameters_dense == 40 * 30 + 30 + 30 * 8 + 8
    s = torch.linalg.svdvals(w0.double())
    err = (second.weight @ first.weight - w0).double().norm().item()
    assert err == pytest.approx(s[r:].square().sum().sqrt().item(), rel=1e-4)  # Eckart–Young
    assert lowrank_factorize(nn.Sequential(nn.Conv2d(3, 4, 3)), 0.5) == [
        "0 (not a 1×1 convolution)"]


def test_patches_of_a_convolution_are_its_im2col_rows():
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1)
    x = torch.randn(2, 2, 7, 7, generator=torch.Generator().manual_seed(1))
    p = patches(conv, x)
    cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2)  # (B, 18, L)
    assert torch.allclose(p[0], cols.transpose(1, 2).reshape(-1, 18), atol=1e-6)
    stats = input_statistics(nn.Sequential(conv), [("0", conv)], x, gram=True)["0"]
    assert torch.allclose(stats.sq[0], p[0].square().sum(0), atol=1e-4)
    assert stats.n == p.shape[1]


def test_the_run_command_takes_a_short_form_and_refuses_it_beside_the_flags(tmp_path):
    from typer.testing import CliRunner

    from hiddencost.cli import app

    both = CliRunner().invoke(app, ["run", "--compression", "nm:2:4", "--prune", "magnitude",
                                    "--sparsity", "0.5", "--out", str(tmp_path / "a")])
    assert both.exit_code == 2 and "not both" in both.output
    bad = CliRunner().invoke(app, ["run", "--compression", "nm:4:4", "--out",
                                   str(tmp_path / "b")])
    assert bad.exit_code == 2 and "N:M needs n < m" in " ".join(bad.output.split())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_compress_writes_an_artifact_of_a_new_method_that_loads_back(tmp_path):
    from typer.testing import CliRunner

    from hiddencost.cli import app
    from hiddencost.compression.measure import sparsity_counts

    out = tmp_path / "nm"
    result = CliRunner().invoke(app, ["compress", "--recipe", "oneshot", "--compression",
                                      "wanda-nm:2:4", "--limit", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, info = create_model("efficientnet_lite0", checkpoint=out / "model.safetensors")
    zeros, total = sparsity_counts(model)
    assert info.weights.startswith("artifact:") and zeros / total == pytest.approx(0.4804, abs=1e-4)
    low = CliRunner().invoke(app, ["compress", "--recipe", "oneshot", "--compression",
                                   "lowrank:0.25", "--out", str(tmp_path / "lr")])
    assert low.exit_code == 0, low.output
    factored, _ = create_model("efficientnet_lite0",
                               checkpoint=tmp_path / "lr" / "model.safetensors")
    assert sum(p.numel() for p in factored.parameters()) == 1738072  # as the run measured
    assert isinstance(factored.classifier, nn.Sequential)
