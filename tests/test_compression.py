"""Tests for hiddencost.compression: exact pruning counts, quantization levels, STE gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from hiddencost.compression import (
    ActivationFakeQuant,
    QuantizedInput,
    activation_quantizers,
    apply_compression,
    calibrate_activations,
    distinct_values_per_channel,
    layer_sparsities,
    magnitude_prune,
    max_distinct_values_per_channel,
    measure_sparsity,
    paper_remaining_percent,
    parse_compression,
    prunable_layers,
    quantize_activations,
    quantize_weight_tensor,
    quantize_weights,
    random_prune,
    sparsity_counts,
)
from hiddencost.errors import HiddenCostError


def make_model(seed: int = 0) -> nn.Sequential:
    """Tiny CNN with 3 convs + 2 linears; weights without zeros; BN with non-trivial stats."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(16, 12),
            nn.ReLU(),
            nn.Linear(12, 10),
        )
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    for _, m in prunable_layers(model):
        assert (m.weight != 0).all()
    return model


def weights(model: nn.Module, **excl) -> list[torch.Tensor]:
    return [m.weight.detach().clone() for _, m in prunable_layers(model, **excl)]


def images(n: int = 6, size: int = 8, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


# ----------------------------------------------------------------------------- layer set


def test_prunable_layers_order_and_exclusions():
    model = make_model()
    names = [n for n, _ in prunable_layers(model)]
    assert names == ["0", "3", "6", "10", "12"]
    assert [n for n, _ in prunable_layers(model, exclude_first_conv=True)] == ["3", "6", "10", "12"]
    assert [n for n, _ in prunable_layers(model, exclude_classifier=True)] == ["0", "3", "6", "10"]
    both = prunable_layers(model, exclude_first_conv=True, exclude_classifier=True)
    assert [n for n, _ in both] == ["3", "6", "10"]


# ----------------------------------------------------------------------------- pruning


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.123])
def test_global_magnitude_exact_and_smallest(sparsity):
    model = make_model()
    before = torch.cat([w.flatten() for w in weights(model)])
    magnitude_prune(model, sparsity, scope="global")
    after = torch.cat([w.flatten() for w in weights(model)])
    n = before.numel()
    k = round(sparsity * n)
    assert int((after == 0).sum()) == k
    assert measure_sparsity(model) == k / n
    assert sparsity_counts(model) == (k, n)
    pruned = after == 0
    # Globally smallest: every pruned magnitude <= every kept magnitude, across layers.
    assert before[pruned].abs().max() <= before[~pruned].abs().min()
    # Kept weights unchanged.
    assert torch.equal(after[~pruned], before[~pruned])
    # Plain module: no masks, hooks or _orig parameters remain.
    for _, m in prunable_layers(model):
        assert not hasattr(m, "weight_mask") and not hasattr(m, "weight_orig")
        assert not m._forward_pre_hooks
        assert isinstance(m.weight, nn.Parameter)
        assert m.weight.requires_grad is False


@pytest.mark.parametrize("sparsity", [0.5, 0.9, 0.123])
def test_layer_magnitude_exact_per_layer(sparsity):
    model = make_model()
    before = weights(model)
    magnitude_prune(model, sparsity, scope="layer")
    after = weights(model)
    for b, a in zip(before, after, strict=True):
        k = round(sparsity * b.numel())
        assert int((a == 0).sum()) == k
        pruned = a == 0
        assert b[pruned].abs().max() <= b[~pruned].abs().min()
    expected = {
        n: round(sparsity * m.weight.numel()) / m.weight.numel() for n, m in prunable_layers(model)
    }
    assert layer_sparsities(model) == expected


@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_exclusions_leave_layers_untouched(method):
    model = make_model()
    first, last = model[0].weight.clone(), model[12].weight.clone()
    excl = {"exclude_first_conv": True, "exclude_classifier": True}
    if method == "magnitude":
        magnitude_prune(model, 0.9, scope="global", **excl)
    else:
        random_prune(model, 0.9, seed=3, scope="global", **excl)
    assert torch.equal(model[0].weight, first)
    assert torch.equal(model[12].weight, last)
    zeros, n = sparsity_counts(model, **excl)
    assert zeros == round(0.9 * n)
    assert measure_sparsity(model) < measure_sparsity(model, **excl)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_random_prune_deterministic_exact_and_rng_untouched(scope):
    state = torch.get_rng_state()
    a, b, c = make_model(), make_model(), make_model()
    random_prune(a, 0.5, seed=7, scope=scope)
    random_prune(b, 0.5, seed=7, scope=scope)
    random_prune(c, 0.5, seed=8, scope=scope)
    assert torch.equal(torch.get_rng_state(), state)
    for wa, wb in zip(weights(a), weights(b), strict=True):
        assert torch.equal(wa, wb)
    masks_a = torch.cat([(w == 0).flatten() for w in weights(a)])
    masks_c = torch.cat([(w == 0).flatten() for w in weights(c)])
    assert not torch.equal(masks_a, masks_c)
    n = masks_a.numel()
    if scope == "global":
        assert int(masks_a.sum()) == round(0.5 * n)
    else:
        for w in weights(a):
            assert int((w == 0).sum()) == round(0.5 * w.numel())


def test_random_prune_is_not_magnitude_based():
    model = make_model()
    before = torch.cat([w.flatten() for w in weights(model)])
    random_prune(model, 0.5, seed=0)
    pruned = torch.cat([(w == 0).flatten() for w in weights(model)])
    assert before[pruned].abs().max() > before[~pruned].abs().min()


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "lots"])
def test_bad_sparsity_raises(bad):
    with pytest.raises(HiddenCostError, match="sparsity"):
        magnitude_prune(make_model(), bad)
    with pytest.raises(HiddenCostError, match="sparsity"):
        random_prune(make_model(), bad, seed=0)


def test_bad_scope_and_zero_sparsity():
    with pytest.raises(HiddenCostError, match="scope"):
        magnitude_prune(make_model(), 0.5, scope="channel")
    model = make_model()
    before = weights(model)
    magnitude_prune(model, 0.0)
    random_prune(model, 0.0, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model), strict=True))


def test_pruned_model_deepcopy_and_channels_last():
    x = images()
    for prune_first_to_cl in (False, True):
        model = make_model()
        if prune_first_to_cl:
            model = model.to(memory_format=torch.channels_last)
        magnitude_prune(model, 0.7, scope="layer")
        random_prune(model, 0.2, seed=0, scope="global")
        copied = copy.deepcopy(model)
        cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
        ref = model(x)
        assert torch.allclose(copied(x), ref)
        assert torch.allclose(cl(x.to(memory_format=torch.channels_last)), ref, atol=1e-5)
        if prune_first_to_cl:
            assert model[3].weight.is_contiguous(memory_format=torch.channels_last)
        assert set(model.state_dict()) == set(make_model().state_dict())


# ----------------------------------------------------------------------------- weight quant


def test_quantize_weight_tensor_hand_computed():
    # 2 bits: q_max = 1, scale = 1.0; round(0.3) = 0, round(0.5) = 0 (half to even).
    w = torch.tensor([[0.3, -1.0, 0.5]])
    assert torch.equal(quantize_weight_tensor(w, 2), torch.tensor([[0.0, -1.0, 0.0]]))
    # 3 bits: q_max = 3, scale = 1.0 for row 0; row 1 is all zeros and stays zero;
    # row 2: q_max 3, scale 2.0: [6, 1, -3, 5] / 2 = [3, 0.5, -1.5, 2.5] -> [3, 0, -2, 2] * 2.
    w = torch.tensor([[3.0, -1.5, 0.5, 2.5], [0.0, 0.0, 0.0, 0.0], [6.0, 1.0, -3.0, 5.0]])
    expected = torch.tensor([[3.0, -2.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0], [6.0, 0.0, -4.0, 4.0]])
    assert torch.equal(quantize_weight_tensor(w, 3), expected)
    # 4 bits: q_max = 7, scale = 0.5: [7, 3.5, -0.4, 1.6] -> [7, 4, 0, 2] * 0.5.
    w = torch.tensor([[3.5, 1.75, -0.2, 0.8]])
    out = quantize_weight_tensor(w, 4)
    assert torch.equal(out, torch.tensor([[3.5, 2.0, 0.0, 1.0]]))
    # 8 bits: q_max = 127, scale = 1: integers kept, 126.5 -> 126 (half to even).
    w = torch.tensor([[127.0, -126.5, 3.0, -200.0 / 200.0]])
    assert torch.equal(quantize_weight_tensor(w, 8), torch.tensor([[127.0, -126.0, 3.0, -1.0]]))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_quantize_weight_tensor_levels(bits):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(32, 16, 5, 5, generator=g)
    wq = quantize_weight_tensor(w, bits)
    assert wq.shape == w.shape and wq.dtype == w.dtype
    counts = distinct_values_per_channel(wq)
    assert len(counts) == 32
    assert max(counts) <= 2**bits
    assert max(counts) <= 2**bits - 1  # symmetric: levels -q_max..q_max
    q_max = 2 ** (bits - 1) - 1
    scale = w.abs().amax(dim=(1, 2, 3), keepdim=True) / q_max
    # Error at most half a step, and the per-channel max is represented exactly.
    assert ((wq - w).abs() <= scale / 2 + 1e-6).all()
    assert torch.allclose(wq.abs().amax(dim=(1, 2, 3)), w.abs().amax(dim=(1, 2, 3)))
    if bits == 2:
        for c in range(32):
            s = scale[c].item()
            assert set(wq[c].unique().tolist()) <= {-s, 0.0, s}


def test_distinct_values_per_channel():
    w = torch.tensor([[1.0, 1.0, 2.0], [0.0, -0.0, 0.0], [1.0, 2.0, 3.0]])
    assert distinct_values_per_channel(w) == [2, 1, 3]
    assert distinct_values_per_channel(torch.ones(4, 2, 3, 3)) == [1, 1, 1, 1]


@pytest.mark.parametrize("bad", [1, 5, 16, 0, 4.0, None, True])
def test_bad_bits_raise(bad):
    with pytest.raises(HiddenCostError, match="bits"):
        quantize_weight_tensor(torch.ones(2, 2), bad)
    with pytest.raises(HiddenCostError, match="bits"):
        ActivationFakeQuant(bad)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_quantize_weights_in_place_with_exclusions(bits):
    model = make_model()
    first, last = model[0].weight.clone(), model[12].weight.clone()
    quantize_weights(model, bits, exclude_first_conv=True, exclude_classifier=True)
    assert torch.equal(model[0].weight, first)
    assert torch.equal(model[12].weight, last)
    excl = {"exclude_first_conv": True, "exclude_classifier": True}
    assert max_distinct_values_per_channel(model, **excl) <= 2**bits
    for _, m in prunable_layers(model, **excl):
        assert torch.equal(m.weight, quantize_weight_tensor(m.weight, bits))  # idempotent
    copy.deepcopy(model).to(memory_format=torch.channels_last)(images())


# ----------------------------------------------------------------------------- activation quant


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("signed", [False, True])
def test_activation_fake_quant_levels_and_ste(bits, signed):
    q = ActivationFakeQuant(bits)
    g = torch.Generator().manual_seed(bits)
    calib = torch.randn(4, 50, generator=g)
    if not signed:
        calib = calib.abs()
    assert calibrate_activations(nn.Sequential(q), calib, batch_size=3) == 1
    assert q.calibrated and q.signed is signed
    assert q.absmax.item() == calib.abs().max().item()
    x = (torch.randn(8, 50, generator=g) * 1.5).requires_grad_(True)
    y = q(x)
    values = y.detach().unique()
    assert values.numel() <= 2**bits
    if signed:
        q_max = 2 ** (bits - 1) - 1
        lo, hi = -q_max, q_max
    else:
        lo, hi = 0, 2**bits - 1
        assert (y >= 0).all()
    scale = calib.abs().max() / hi
    levels = torch.round(values / scale)
    assert torch.allclose(levels * scale, values, atol=1e-6)
    assert levels.min() >= lo and levels.max() <= hi
    assert torch.allclose(y.detach(), q.quantize(x))
    # STE: the gradient is the identity, even for clamped values.
    upstream = torch.randn(8, 50, generator=g)
    (y * upstream).sum().backward()
    assert torch.equal(x.grad, upstream)


def test_activation_fake_quant_uncalibrated_and_zero_range():
    q = ActivationFakeQuant(4)
    with pytest.raises(HiddenCostError, match="calibrat"):
        q(torch.ones(3))
    calibrate_activations(nn.Sequential(q), torch.zeros(2, 3))
    assert torch.equal(q(torch.tensor([1.0, -2.0, 0.5])), torch.zeros(3))
    q.reset_calibration()
    with pytest.raises(HiddenCostError, match="calibrat"):
        q(torch.ones(3))


def test_quantize_activations_model():
    model = make_model()
    float_model = copy.deepcopy(model)
    wrapped = quantize_activations(model, 8)
    assert wrapped == ["0", "3", "6", "10", "12"]
    assert isinstance(model[0], QuantizedInput) and isinstance(model[12], QuantizedInput)
    assert len(activation_quantizers(model)) == 5
    # The layer set is still found (under the wrapper) and attributes are forwarded.
    assert [n for n, _ in prunable_layers(model)] == [
        "0.layer",
        "3.layer",
        "6.layer",
        "10.layer",
        "12.layer",
    ]
    assert model[12].in_features == 12 and model[0].out_channels == 8
    assert model[0].weight is model[0].layer.weight
    x = images()
    with pytest.raises(HiddenCostError, match="calibrat"):
        model(x)
    model.train()
    model[1].train(False)
    assert calibrate_activations(model, x, batch_size=4) == 5
    assert model.training and not model[1].training  # modes restored
    model.eval()
    # First quantizer sees the signed normalised input; after ReLU the inputs are unsigned.
    assert model[0].quantizer.signed and not model[3].quantizer.signed
    out = model(x)
    ref = float_model(x)
    assert torch.allclose(out, ref, atol=0.05 * ref.abs().max().item())
    assert not torch.equal(out, ref)
    # Gradient reaches an input prompt through the frozen, quantized backbone.
    prompt = torch.zeros(1, 3, 8, 8, requires_grad=True)
    model(x + prompt).logsumexp(dim=1).sum().backward()
    assert prompt.grad is not None and prompt.grad.abs().sum() > 0
    # Deep-copyable, channels_last-able, state_dict round trip keeps calibration.
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert torch.allclose(cl(x.to(memory_format=torch.channels_last)), out, atol=1e-5)
    fresh = make_model()
    quantize_activations(fresh, 8)
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(fresh(x), out)
    with pytest.raises(HiddenCostError, match="already"):
        quantize_activations(model, 8)


def test_quantize_activations_exclusions_and_low_bits():
    model = make_model()
    wrapped = quantize_activations(model, 2, exclude_first_conv=True, exclude_classifier=True)
    assert wrapped == ["3", "6", "10"]
    assert isinstance(model[0], nn.Conv2d) and isinstance(model[12], nn.Linear)
    calibrate_activations(model, images())
    assert model(images(seed=5)).shape == (6, 10)


# ----------------------------------------------------------------------------- spec + apply


@pytest.mark.parametrize(
    ("kwargs", "label"),
    [
        ({}, "dense"),
        ({"method": "magnitude", "sparsity": 0.9}, "magnitude-global-s0.90"),
        ({"method": "magnitude", "sparsity": 0.5, "scope": "layer"}, "magnitude-layer-s0.50"),
        ({"method": "random", "sparsity": 0.5}, "random-s0.50"),
        ({"method": "random", "sparsity": 0.123, "scope": "layer"}, "random-layer-s0.123"),
        ({"method": "quantize", "weight_bits": 4}, "w4"),
        ({"method": "quantize", "weight_bits": 4, "activation_bits": 4}, "w4a4"),
        ({"method": "quantize", "activation_bits": 8}, "a8"),
        (
            {
                "method": "magnitude",
                "sparsity": 0.9,
                "exclude_first_conv": True,
                "exclude_classifier": True,
            },
            "magnitude-global-s0.90-xfirst-xcls",
        ),
    ],
)
def test_spec_labels(kwargs, label):
    assert parse_compression(kwargs).label == label


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "none", "sparsity": 0.5},
        {"method": "none", "weight_bits": 4},
        {"method": "magnitude"},
        {"method": "magnitude", "sparsity": 1.0},
        {"method": "random", "sparsity": -0.1},
        {"method": "magnitude", "sparsity": 0.5, "weight_bits": 4},
        {"method": "quantize"},
        {"method": "quantize", "weight_bits": 5},
        {"method": "quantize", "activation_bits": 1},
        {"method": "quantize", "weight_bits": 4, "sparsity": 0.5},
        {"method": "prune", "sparsity": 0.5},
        {"method": "magnitude", "sparsity": 0.5, "scope": "channel"},
        {"method": "magnitude", "sparsity": 0.5, "extra": 1},
    ],
)
def test_spec_validation(kwargs):
    with pytest.raises(ValidationError):
        parse_compression(kwargs)


def test_spec_frozen():
    spec = parse_compression(dict(method="magnitude", sparsity=0.5))
    with pytest.raises(ValidationError):
        spec.sparsity = 0.7
    assert hash(spec) == hash(parse_compression(dict(method="magnitude", sparsity=0.5)))


@pytest.mark.parametrize(
    "spec",
    [
        parse_compression(dict(method="magnitude", sparsity=0.9)),
        parse_compression(dict(method="magnitude", sparsity=0.123, scope="layer",
                               exclude_classifier=True)),
        parse_compression(dict(method="random", sparsity=0.5, seed=3, exclude_first_conv=True)),
    ],
)
def test_apply_compression_pruning_report(spec):
    model = make_model()
    report = apply_compression(model, spec)
    excl = {
        "exclude_first_conv": spec.exclude_first_conv,
        "exclude_classifier": spec.exclude_classifier,
    }
    assert report.measured_sparsity == measure_sparsity(model, **excl)
    assert report.overall_sparsity == measure_sparsity(model)
    assert (report.n_zero_weights, report.n_prunable_weights) == sparsity_counts(model, **excl)
    if spec.scope == "global":
        assert report.n_zero_weights == round(spec.sparsity * report.n_prunable_weights)
    assert report.label == spec.label and report.method == spec.method
    assert report.target_sparsity == spec.sparsity
    assert report.max_distinct_values_per_channel is None
    d = report.to_dict()
    assert d["measured_sparsity"] == report.measured_sparsity and d["weight_bits"] is None


def test_apply_compression_dense_and_quantize():
    model = make_model()
    report = apply_compression(model, parse_compression({}))
    assert report.label == "dense" and report.measured_sparsity == 0.0
    assert report.n_prunable_weights == sum(w.numel() for w in weights(model))

    report = apply_compression(model, parse_compression(dict(method="quantize", weight_bits=3)))
    assert report.weight_bits == 3 and report.activation_bits is None
    assert report.max_distinct_values_per_channel <= 2**3
    assert report.max_distinct_values_per_channel == max_distinct_values_per_channel(model)
    assert report.measured_sparsity == measure_sparsity(model)

    spec = parse_compression(dict(method="quantize", weight_bits=4, activation_bits=4))
    model = make_model()
    before = weights(model)
    with pytest.raises(HiddenCostError, match="calibration_images"):
        apply_compression(model, spec)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model), strict=True))
    report = apply_compression(model, spec, calibration_images=images(), calibration_batch_size=4)
    assert report.label == "w4a4" and report.n_activation_quantizers == 5
    assert report.max_distinct_values_per_channel <= 16
    prompt = torch.zeros(1, 3, 8, 8, requires_grad=True)
    model(images() + prompt).sum().backward()
    assert prompt.grad.abs().sum() > 0


def test_efficientnet_lite0_prune_and_quantize():
    timm = pytest.importorskip("timm")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    model = model.to(memory_format=torch.channels_last)
    spec = parse_compression(dict(method="magnitude", sparsity=0.5, exclude_first_conv=True))
    report = apply_compression(model, spec)
    assert report.n_zero_weights == round(0.5 * report.n_prunable_weights)
    names = [n for n, _ in prunable_layers(model)]
    assert names[0] == "conv_stem" and names[-1] == "classifier"
    quantize_activations(model, 8)
    x = torch.randn(2, 3, 32, 32)
    calibrate_activations(model, x)
    prompt = torch.zeros(1, 3, 32, 32, requires_grad=True)
    copy.deepcopy(model)(x + prompt).sum().backward()
    assert prompt.grad.abs().sum() > 0
    assert model.classifier.in_features == 1280


def test_paper_remaining_percent_hand() -> None:
    # the paper's check_sparsity(model, conv1=False): conv weights only, the module named conv1
    # skipped (here all zero, so counting it would change the value), linear layers ignored
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
            self.block = nn.Sequential(nn.Conv2d(2, 4, 1, bias=False))
            self.fc = nn.Linear(4, 3)

    net = Net()
    with torch.no_grad():
        net.conv1.weight.zero_()
        net.block[0].weight.fill_(1.0)
        net.block[0].weight.view(-1)[:2] = 0.0  # 2 of 8 zero
        net.fc.weight.zero_()
    assert paper_remaining_percent(net) == pytest.approx(75.0)
    assert paper_remaining_percent(nn.Linear(3, 3)) is None
    # ours is the zero fraction over every conv and linear weight: (2 + 2 + 12) / (2 + 8 + 12)
    assert measure_sparsity(net) == pytest.approx(16 / 22)
