"""BatchNorm folding: hand-computed weights, data-flow pairing, the safety check, real models."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from hiddencost.backbones import create_model
from hiddencost.compression import apply_compression, parse_compression
from hiddencost.compression.measure import distinct_values_per_channel, measure_sparsity
from hiddencost.fold import fold_batchnorm
from hiddencost.frozen import freeze, prepare_frozen

torch.set_num_threads(2)


def conv_bn() -> nn.Sequential:
    conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
    bn = nn.BatchNorm2d(2, eps=0.0)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([2.0, -1.0]).view(2, 1, 1, 1))
        bn.running_mean.copy_(torch.tensor([1.0, 3.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
        bn.weight.copy_(torch.tensor([3.0, 2.0]))
        bn.bias.copy_(torch.tensor([0.5, -1.0]))
    return freeze(nn.Sequential(conv, bn))


def test_hand_computed_fold():
    model = conv_bn()
    x = torch.tensor([[[[1.0, 2.0]]]])  # (1, 1, 1, 2)
    expected = model(x).detach()
    assert fold_batchnorm(model, x) == 1
    assert isinstance(model[1], nn.Identity)
    # s = γ/√σ² = (3/2, 2/0.5) = (1.5, 4); W' = s·W = (3, −4); b' = β − s·μ = (−1, −13)
    assert model[0].weight.flatten().tolist() == [3.0, -4.0]
    assert model[0].bias.tolist() == [-1.0, -13.0]
    assert not model[0].weight.requires_grad and not model[0].bias.requires_grad
    # by hand: channel 0: 1.5·(2x − 1) + 0.5; channel 1: 4·(−x − 3) − 1
    by_hand = torch.tensor([[[[2.0, 5.0]], [[-17.0, -21.0]]]])
    assert torch.equal(model(x), by_hand) and torch.equal(expected, by_hand)


class SharedOutput(nn.Module):
    """The conv output feeds the BatchNorm and a residual: folding would change the sum."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        with torch.no_grad():
            self.bn.running_var.fill_(9.0)
            self.bn.running_mean.fill_(0.5)

    def forward(self, x):
        z = self.conv(x)
        return self.bn(z) + z


def test_fold_is_undone_when_the_output_changes():
    model = freeze(SharedOutput())
    x = torch.randn(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    before = model(x).detach()
    state = copy.deepcopy(model.state_dict())
    with pytest.warns(UserWarning, match="left unfolded"):
        assert fold_batchnorm(model, x) == 0
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is not None
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert torch.equal(model(x), before)


def test_bn_not_after_a_conv_is_kept_and_training_mode_refused():
    model = freeze(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    x = torch.randn(2, 3, 4, 4)
    assert fold_batchnorm(model, x) == 1
    assert isinstance(model[0], nn.BatchNorm2d) and isinstance(model[2], nn.Identity)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)).train(), x)


@pytest.mark.parametrize("name", ["resnet18", "efficientnet_lite0"])
def test_real_backbones_fold_every_batchnorm(name):
    weights = "pretrained" if name.startswith("efficientnet") else "random"
    model, _ = create_model(name, weights=weights)
    freeze(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    before = model(x).detach()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fold_batchnorm(model, x[:2]) == n_bn > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    after = model(x).detach()
    assert (after - before).abs().max() <= 1e-4 * before.abs().max()
    assert torch.equal(after.argmax(1), before.argmax(1))


def test_folding_keeps_sparsity_and_quantization_levels():
    model, _ = create_model("efficientnet_lite0")
    apply_compression(model, parse_compression(dict(method="magnitude", sparsity=0.7)))
    zeros = measure_sparsity(model)
    folded = prepare_frozen(copy.deepcopy(model), torch.device("cpu"), 64)
    assert measure_sparsity(folded) >= zeros  # every zero stays zero
    q, _ = create_model("efficientnet_lite0")
    apply_compression(q, parse_compression(dict(method="quantize", weight_bits=3)))
    q = prepare_frozen(q, torch.device("cpu"), 64)
    convs = [m for m in q.modules() if isinstance(m, nn.Conv2d)]
    assert all(max(distinct_values_per_channel(c.weight)) <= 2**3 for c in convs)
    assert q.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
