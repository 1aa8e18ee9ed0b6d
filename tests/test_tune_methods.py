"""Methods that train inside the backbone (ft, bitfit, lora): the compression they keep, the
parameters they train (counted by hand), LoRA's algebra, and a resumed run equal to an
uninterrupted one. End to end on the real EfficientNet-Lite0 and digits, kept tiny."""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from hiddencost.backbones import create_model
from hiddencost.frozen import prepare_frozen
from hiddencost.prompting.keep_compression import (
    KBitGrid,
    ZeroSet,
    compressed_layers,
    finish,
    keep_compression,
    measure_kept,
)
from hiddencost.prompting.lora import LoRAConv2d, LoRALinear, add_lora, lora_targets, merge_lora
from hiddencost.run import RunCache, make_config, run_one

TINY = {"canvas_size": 48, "inner_size": 16, "lp_image_size": 32, "device": "cpu"}
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def cache():
    return RunCache()


def _run(cache, method, compression=None, **kw):
    cfg = {"method": method, "n_shot": 10, "epochs": 2, **TINY, **kw}
    if compression is not None:
        cfg["compression"] = compression
    return run_one(make_config(**cfg), cache=cache)


def test_ft_keeps_a_pruned_backbones_zero_set(cache):
    record = _run(cache, "ft", {"method": "magnitude", "sparsity": 0.5})
    t = record.trained_backbone
    assert record.method.id == "timm/ft" and record.config["lr"] == 1e-4
    assert t.zero_set_kept and t.sparsity_before == t.sparsity_after == record.sparsity
    assert record.sparsity == pytest.approx(0.5, abs=1e-6)
    assert t.bits_kept is None and not t.merged and t.peak_memory_mb is None  # CPU: no peak
    assert [e.epoch for e in record.history] == [1, 2]


def test_ft_keeps_a_4_bit_grid(cache):
    record = _run(cache, "ft", {"method": "quantize", "weight_bits": 4})
    t = record.trained_backbone
    assert t.bits_kept and 1 < t.max_distinct_values_per_channel <= 15


def test_bitfit_trains_the_biases_and_the_head_only(cache):
    record = _run(cache, "bitfit")
    model, _ = create_model("efficientnet_lite0")
    prepared = prepare_frozen(model, CPU, 32)  # BatchNorm folded: every conv has a bias now
    biases = sum(m.bias.numel() for m in prepared.modules()
                 if isinstance(getattr(m, "bias", None), nn.Parameter)
                 and m is not prepared.get_classifier())
    head = prepared.num_features * 10 + 10
    assert record.trained_backbone.trainable_parameters == biases + head
    assert record.trained_backbone.backbone_parameters == sum(
        p.numel() for p in prepared.parameters())


def test_augmentation_is_an_option_and_changes_training(cache):
    plain = _run(cache, "bitfit")
    augmented = _run(cache, "bitfit", options={"augment": True})
    assert augmented.config["options"]["augment"] and not plain.config["options"]["augment"]
    assert augmented.final_train_loss != plain.final_train_loss


def test_lora_runs_unmerged_and_merged_on_a_pruned_backbone(cache):
    pruned = {"method": "magnitude", "sparsity": 0.5}
    unmerged = _run(cache, "lora", pruned).trained_backbone
    assert unmerged.zero_set_kept and unmerged.sparsity_after == unmerged.sparsity_before
    merged = _run(cache, "lora", pruned, options={"merge": True}).trained_backbone
    assert merged.merged and not merged.zero_set_kept  # a dense update fills the zeros
    # of the adapted layers: the depthwise convolutions LoRA skips keep theirs
    assert merged.sparsity_after < unmerged.sparsity_after - 0.1


def test_lora_on_deit_tiny_counts_r_times_din_plus_dout_and_leaves_the_base_as_it_was():
    model, _ = create_model("deit_tiny", weights="random", seed=0)
    targets, skipped = lora_targets(model, {id(model.get_classifier())})
    assert skipped == [] and "patch_embed.proj" in targets and "head" not in targets
    layers = {n: model.get_submodule(n) for n in targets}
    d = {n: (m.in_features, m.out_features) if isinstance(m, nn.Linear) else
         (m.in_channels * m.kernel_size[0] * m.kernel_size[1], m.out_channels)
         for n, m in layers.items()}
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes()
                                     for p in model.parameters())).hexdigest()
    for p in model.parameters():
        p.requires_grad_(False)
    adapters = add_lora(model, targets, rank=4, alpha=8.0, seed=0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert sum(p.numel() for p in trainable) == sum(4 * (i + o) for i, o in d.values())
    assert len(adapters) == len(targets) == 4 * 12 + 1  # qkv, proj, fc1, fc2 per block; patches
    opt = torch.optim.Adam(trainable, lr=1e-2)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    assert any(a.lora_b.abs().sum() > 0 for a in adapters)  # B left zero: it trained
    base = b"".join(p.detach().numpy().tobytes() for n, p in model.named_parameters()
                    if "lora_" not in n)
    assert hashlib.sha256(base).hexdigest() == digest


def test_lora_layers_equal_their_merged_weights():
    g = torch.Generator().manual_seed(0)
    linear, conv = nn.Linear(6, 5), nn.Conv2d(3, 4, 3, stride=2, padding=1)
    wrapped = nn.Sequential(LoRALinear(linear, 2, 4.0))
    with torch.no_grad():
        wrapped[0].lora_b.normal_(generator=g)
    x = torch.randn(7, 6, generator=g)
    y = wrapped(x)
    assert torch.allclose(y, linear(x) + 2.0 * x @ (wrapped[0].lora_b @ wrapped[0].lora_a).T,
                          atol=1e-6)
    assert merge_lora(wrapped) == 1 and isinstance(wrapped[0], nn.Linear)
    assert torch.allclose(wrapped(x), y, atol=1e-5)
    cwrapped = nn.Sequential(LoRAConv2d(conv, 2, 2.0))
    with torch.no_grad():
        cwrapped[0].lora_b.normal_(generator=g)
    xi = torch.randn(2, 3, 9, 9, generator=g)
    yc = cwrapped(xi)
    assert merge_lora(cwrapped) == 1
    assert torch.allclose(cwrapped(xi), yc, atol=1e-5)


def test_parametrizations_keep_zeros_and_the_grid_and_pass_gradients_straight():
    layer = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.0, 1.0, -2.0, 0.0], [3.0, 0.0, 0.5, -1.5]]))
    model = nn.Sequential(layer)

    class Spec:  # the two fields compressed_layers reads
        exclusions = {"exclude_first_conv": False, "exclude_classifier": False}
        weight_bits = 2

    compressed = compressed_layers(model, Spec())
    keep_compression(compressed, keep_zeros=True)
    # 2 bits: levels {-s, 0, s} per row, s = max|w|: row 0 → [0, 0, -2, 0], row 1 → [3, 0, 0, 0]
    assert layer.weight.tolist() == [[0.0, 0.0, -2.0, 0.0], [3.0, 0.0, 0.0, -0.0]]
    layer.weight.sum().backward()
    grad = layer.parametrizations.weight.original.grad
    assert grad.tolist() == [[0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]]  # masked, then STE
    finish(compressed)
    kept = measure_kept(compressed)
    assert kept.zero_set_kept and kept.bits_kept and kept.max_distinct_values_per_channel == 2
    assert isinstance(ZeroSet(torch.ones(1)), nn.Module) and KBitGrid(4).bits == 4


def test_a_resumed_ft_run_equals_an_uninterrupted_one(tmp_path):
    from hiddencost.data.transforms import ResizeNormalize
    from hiddencost.prompting.run_state import StateFile
    from hiddencost.prompting.tuning import TunedClassifier, train_tuned

    def fresh():
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        net.forward_features = net.forward
        net.forward_head = lambda x, pre_logits=True: x.mean((2, 3))
        g = torch.Generator().manual_seed(1)
        for p in net.parameters():
            nn.init.normal_(p, generator=g)
        return TunedClassifier(net, ResizeNormalize(8, (0.5,) * 3, (0.5,) * 3), 3, 8, seed=0)

    images = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    labels = torch.arange(12) % 3
    args = (images, labels, 3, 4, 0, CPU, 1e-2, 5e-4)
    whole = fresh()
    train_tuned(whole, *args)

    class Killed(Exception):
        pass

    def kill(record):
        if record.epoch == 1:
            raise Killed

    state = StateFile(tmp_path / "state.pt", "run")
    with pytest.raises(Killed):
        train_tuned(fresh(), *args, on_epoch=kill, state=state)
    resumed = fresh()
    history = train_tuned(resumed, *args, state=state)
    assert [e.epoch for e in history.epochs] == [1, 2, 3]
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_vpt_deep_runs_an_epoch_on_deit_tiny_and_counts_tokens_layers_width():
    from hiddencost.data.transforms import ResizeNormalize
    from hiddencost.prompting.tuning import TunedClassifier, train_tuned
    from hiddencost.prompting.vpt import PromptedViT

    vit, _ = create_model("deit_tiny", weights="random", seed=0)
    for p in vit.parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in vit.parameters()]
    prompted = PromptedViT(vit, tokens=5, deep=True, seed=0)
    assert prompted.prompts.shape == (12, 5, 192)  # blocks × tokens × width
    bound = (6 / (3 * 16 * 16 + 192)) ** 0.5
    assert prompted.prompts.abs().max() <= bound
    model = TunedClassifier(prompted, ResizeNormalize(224, (0.5,) * 3, (0.5,) * 3), 3, 224, 0)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 5 * 12 * 192 + (192 * 3 + 3)
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    start = prompted.prompts.detach().clone()
    history = train_tuned(model, images, torch.tensor([0, 1, 2, 0]), 1, 2, 0, CPU, 1e-2, 0.0)
    assert len(history.epochs) == 1 and not torch.equal(prompted.prompts, start)
    assert all(torch.equal(a, b) for a, b in zip(before, vit.parameters(), strict=True))
    shallow = PromptedViT(vit, tokens=5, deep=False, seed=0)
    assert shallow.prompts.shape == (1, 5, 192)
    feats = shallow.forward_features(torch.zeros(1, 3, 224, 224))
    assert feats.shape == (1, 1 + 196, 192)  # the prompt positions are dropped after the norm


def test_vpt_refuses_a_convolutional_backbone(cache):
    with pytest.raises(Exception, match="vpt applies to Vision Transformers"):
        _run(cache, "vpt")


def test_flip_and_shift_by_hand():
    from hiddencost.prompting.tuning import SHIFT, flip_and_shift

    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).view(2, 3, 10, 10)
    g = torch.Generator().manual_seed(3)
    out = flip_and_shift(x, g)
    g = torch.Generator().manual_seed(3)  # the same draws, by hand
    flip = torch.rand(2, generator=g) < 0.5
    offsets = torch.randint(0, 2 * SHIFT + 1, (2, 2), generator=g).tolist()
    for i, (r, c) in enumerate(offsets):
        src = x[i].flip(2) if flip[i] else x[i]
        padded = torch.nn.functional.pad(src[None], (SHIFT,) * 4, mode="reflect")[0]
        assert torch.equal(out[i], padded[:, r:r + 10, c:c + 10])
    assert out.shape == x.shape
