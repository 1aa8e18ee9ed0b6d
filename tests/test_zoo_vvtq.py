"""VVTQ quantized ViTs: a checkpoint in VVTQ's exact layout behaves as VVTQ's own network.

The reference below re-implements VVTQ's DeiT forward (``quantization/DeiT_quant.py`` with its
LSQ quantizers) directly on the raw checkpoint tensors, independently of the loader, and the
loaded timm model must reproduce it (float64, so rounding boundaries are not an issue).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from hiddencost.backbones import create_model
from hiddencost.errors import HiddenCostError
from hiddencost.zoo import load_zoo_checkpoint
from hiddencost.zoo.vvtq import LsqQuantizer

torch.set_num_threads(2)
DIM, HEADS = 192, 3


def _act(sd, prefix, bits, rng, offset, scale=0.2):
    sd[f"{prefix}.nbits"] = torch.tensor([float(bits)])
    sd[f"{prefix}.alpha"] = (torch.rand(7, generator=rng) + 0.25) * scale
    if offset:
        sd[f"{prefix}.beta"] = torch.randn(7, generator=rng) * 0.05
    sd[f"{prefix}.init_state"] = torch.ones(1)


def _lin(sd, prefix, weight, bias, bits):
    sd[f"{prefix}.weight"] = weight.clone()
    if bias is not None:
        sd[f"{prefix}.bias"] = bias.clone()
    sd[f"{prefix}.nbits"] = torch.tensor([float(bits)])
    qp = 2 ** (bits - 1) - 1
    alpha = torch.full((7,), float(weight.abs().max()) / qp)
    alpha[bits - 2] = float(weight.abs().mean()) * 2 / math.sqrt(qp)  # LSQ's init rule
    sd[f"{prefix}.alpha"] = alpha
    sd[f"{prefix}.init_state"] = torch.ones(1)


def vvtq_deit_checkpoint(model, wbits, abits, offset=True, seed=0) -> OrderedDict:
    """A VVTQ DeiT state dict (``deit_tiny_patch16_224_quant``) built from a timm DeiT-T."""
    rng = torch.Generator().manual_seed(seed)
    src = model.state_dict()
    sd: OrderedDict = OrderedDict()
    sd["cls_token"], sd["pos_embed"] = src["cls_token"], src["pos_embed"]
    _act(sd, "patch_embed.quant", 8, rng, offset=False)
    _lin(sd, "patch_embed.proj", src["patch_embed.proj.weight"], src["patch_embed.proj.bias"], 8)
    for i in range(len(model.blocks)):
        b = f"blocks.{i}"
        for n in ("norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias"):
            sd[f"{b}.{n}"] = src[f"{b}.{n}"]
        _act(sd, f"{b}.attn.quant_input", abits, rng, offset)
        w = src[f"{b}.attn.qkv.weight"].chunk(3)
        bias = src[f"{b}.attn.qkv.bias"].chunk(3)
        for j, part in enumerate("qkv"):
            _lin(sd, f"{b}.attn.proj_{part}", w[j], bias[j], wbits)
        for q in ("quant_q", "quant_k", "quant_v"):
            _act(sd, f"{b}.attn.{q}", abits, rng, offset)
        _act(sd, f"{b}.attn.quant_attn", abits, rng, offset=False, scale=0.004)  # probabilities
        _act(sd, f"{b}.attn.quant_output", abits, rng, offset)
        _lin(sd, f"{b}.attn.proj", src[f"{b}.attn.proj.weight"], src[f"{b}.attn.proj.bias"], wbits)
        _act(sd, f"{b}.mlp.quant1", abits, rng, offset)
        _lin(sd, f"{b}.mlp.fc1", src[f"{b}.mlp.fc1.weight"], src[f"{b}.mlp.fc1.bias"], wbits)
        _act(sd, f"{b}.mlp.quant2", abits, rng, offset=True)
        _lin(sd, f"{b}.mlp.fc2", src[f"{b}.mlp.fc2.weight"], src[f"{b}.mlp.fc2.bias"], wbits)
    sd["norm.weight"], sd["norm.bias"] = src["norm.weight"], src["norm.bias"]
    _act(sd, "quant", 8, rng, offset)
    _lin(sd, "head", src["head.weight"], src["head.bias"], 8)
    return sd


def _q(x, sd, p, signed):
    """VVTQ's QuantAct / weight quantizer on raw tensors (alpha[nbits-2], clamp, round)."""
    n = int(sd[f"{p}.nbits"].item())
    a = max(float(sd[f"{p}.alpha"][n - 2]), 1e-4)
    beta = float(sd[f"{p}.beta"][n - 2]) if f"{p}.beta" in sd else 0.0
    qn, qp = (-(2 ** (n - 1)), 2 ** (n - 1) - 1) if signed else (0, 2**n - 1)
    return torch.clamp((x - beta) / a, qn, qp).round() * a + beta


def _w(sd, p):
    return _q(sd[f"{p}.weight"].double(), sd, p, signed=True)


def vvtq_deit_reference(sd, x):
    """VVTQ's QuantVisionTransformer.forward (DeiT-T, eval mode), on the raw checkpoint."""
    x = _q(x, sd, "patch_embed.quant", True)
    x = F.conv2d(x, _w(sd, "patch_embed.proj"), sd["patch_embed.proj.bias"].double(), stride=16)
    x = x.flatten(2).transpose(1, 2)
    B = x.shape[0]
    x = torch.cat([sd["cls_token"].double().expand(B, -1, -1), x], dim=1) + sd["pos_embed"]
    ln = lambda h, p: F.layer_norm(h, (DIM,), sd[f"{p}.weight"].double(),  # noqa: E731
                                   sd[f"{p}.bias"].double(), eps=1e-6)
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        b = f"blocks.{i}"
        h = _q(ln(x, f"{b}.norm1"), sd, f"{b}.attn.quant_input", True)
        N = h.shape[1]
        qkv = [F.linear(h, _w(sd, f"{b}.attn.proj_{p}"), sd[f"{b}.attn.proj_{p}.bias"].double())
               .reshape(B, N, HEADS, DIM // HEADS).permute(0, 2, 1, 3) for p in "qkv"]
        q, k, v = (_q(t, sd, f"{b}.attn.quant_{p}", True) for t, p in zip(qkv, "qkv", strict=True))
        attn = ((q @ k.transpose(-2, -1)) * (DIM // HEADS) ** -0.5).softmax(dim=-1)
        attn = _q(attn, sd, f"{b}.attn.quant_attn", False)
        o = _q(attn @ v, sd, f"{b}.attn.quant_output", True).transpose(1, 2).reshape(B, N, DIM)
        x = x + F.linear(o, _w(sd, f"{b}.attn.proj"), sd[f"{b}.attn.proj.bias"].double())
        h = _q(ln(x, f"{b}.norm2"), sd, f"{b}.mlp.quant1", True)
        h = F.gelu(F.linear(h, _w(sd, f"{b}.mlp.fc1"), sd[f"{b}.mlp.fc1.bias"].double()))
        h = _q(h, sd, f"{b}.mlp.quant2", False)
        x = x + F.linear(h, _w(sd, f"{b}.mlp.fc2"), sd[f"{b}.mlp.fc2.bias"].double())
        i += 1
    x = _q(ln(x, "norm")[:, 0], sd, "quant", True)
    return F.linear(x, _w(sd, "head"), sd["head.bias"].double())


@pytest.fixture(scope="module")
def deit():
    torch.manual_seed(0)
    model = create_model("deit_tiny", weights="random")[0]
    with torch.no_grad():  # timm's init (std 0.02) leaves the class token nearly input-blind
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2:
                p.mul_(8.0)
    return model


@pytest.mark.parametrize("bits", [4, pytest.param(2, marks=pytest.mark.slow)])
def test_vvtq_deit_behaves_as_the_original(tmp_path, deit, bits):
    sd = vvtq_deit_checkpoint(deit, bits, bits, offset=(bits == 4))
    path = tmp_path / "deit_w4a4.pth"
    torch.save({"state_dict": OrderedDict((f"module.{k}", v) for k, v in sd.items()),
                "epoch": 299}, path)
    model, info = create_model(f"deit_tiny.vvtq-w{bits}a{bits}", checkpoint=path)
    assert info.compression["weight_bits"] == bits and info.compression["activation_bits"] == bits
    quantizers = [m for m in model.modules() if isinstance(m, LsqQuantizer)]
    assert len(quantizers) == 2 + 12 * 8
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    model.double()
    with torch.inference_mode():
        ours = model(x)
        ref = vvtq_deit_reference(sd, x)
    # equal up to the float32 storage of the quantized weights (VVTQ's own precision)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-5), (ours - ref).abs().max()
    assert (ours[0] - ours[1]).abs().max() > 1e-2  # the output does depend on the image
    qkv = model.blocks[0].attn.qkv.weight
    for part in qkv.chunk(3):  # q, k, v quantized with their own steps
        assert torch.unique(part).numel() <= 2**bits
    # the prompt of visual prompting needs gradients through the quantized network
    xg = torch.randn(1, 3, 224, 224, dtype=torch.float64, requires_grad=True)
    model(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_vvtq_bit_width_mismatch_names_keys(tmp_path, deit):
    sd = vvtq_deit_checkpoint(deit, 3, 3)
    path = tmp_path / "deit_w3a3.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(HiddenCostError, match=r"do not match the claimed W4A4: "
                                              r"blocks\.0\.attn\.quant_input\.nbits=3"):
        load_zoo_checkpoint("deit_tiny.vvtq-w4a4", path)
    del sd["blocks.5.attn.proj_k.weight"]
    torch.save({"model": sd}, path)
    with pytest.raises(HiddenCostError, match=r"blocks\.5\.attn"):
        load_zoo_checkpoint("deit_tiny.vvtq-w3a3", path)
    sd = vvtq_deit_checkpoint(deit, 3, 3)
    sd["blocks.2.mlp.quant1.init_state"] = torch.zeros(1)
    torch.save(sd, path)
    with pytest.raises(HiddenCostError, match=r"blocks\.2\.mlp\.quant1\.init_state is not 1"):
        load_zoo_checkpoint("deit_tiny.vvtq-w3a3", path)


def _swin_vvtq_checkpoint(model, bits, rng) -> OrderedDict:
    """VVTQ's Swin layout (original Microsoft names) from a timm Swin-T."""
    src = model.state_dict()
    sd: OrderedDict = OrderedDict()
    _act(sd, "patch_embed.quant", 8, rng, offset=False)  # declared, never called
    _lin(sd, "patch_embed.proj", src["patch_embed.proj.weight"], src["patch_embed.proj.bias"], 8)
    for n in ("weight", "bias"):
        sd[f"patch_embed.norm.{n}"] = src[f"patch_embed.norm.{n}"]
    for i, stage in enumerate(model.layers):
        for j, blk in enumerate(stage.blocks):
            t, o = f"layers.{i}.blocks.{j}", f"layers.{i}.blocks.{j}"
            for n in ("norm1", "norm2"):
                for leaf in ("weight", "bias"):
                    sd[f"{o}.{n}.{leaf}"] = src[f"{t}.{n}.{leaf}"]
            sd[f"{o}.attn.relative_position_bias_table"] = src[
                f"{t}.attn.relative_position_bias_table"]
            sd[f"{o}.attn.relative_position_index"] = blk.attn.relative_position_index.clone()
            _act(sd, f"{o}.attn.quant_input", bits, rng, True)
            w, b = src[f"{t}.attn.qkv.weight"].chunk(3), src[f"{t}.attn.qkv.bias"].chunk(3)
            for k, part in enumerate("qkv"):
                _lin(sd, f"{o}.attn.proj_{part}", w[k], b[k], bits)
            for q in ("quant_q", "quant_k", "quant_v", "quant_output"):
                _act(sd, f"{o}.attn.{q}", bits, rng, True)
            _act(sd, f"{o}.attn.quant_attn", bits, rng, False)
            _lin(sd, f"{o}.attn.proj", src[f"{t}.attn.proj.weight"], src[f"{t}.attn.proj.bias"],
                 bits)
            _act(sd, f"{o}.mlp.quant1", bits, rng, True)
            _lin(sd, f"{o}.mlp.fc1", src[f"{t}.mlp.fc1.weight"], src[f"{t}.mlp.fc1.bias"], bits)
            _act(sd, f"{o}.mlp.quant2", bits, rng, True)
            _lin(sd, f"{o}.mlp.fc2", src[f"{t}.mlp.fc2.weight"], src[f"{t}.mlp.fc2.bias"], bits)
            if blk.attn_mask is not None:
                sd[f"{o}.attn_mask"] = blk.attn_mask.clone()
        if i > 0:  # timm: downsample starts stage i; VVTQ: it ends stage i - 1
            for leaf in ("weight", "bias"):
                sd[f"layers.{i - 1}.downsample.norm.{leaf}"] = src[
                    f"layers.{i}.downsample.norm.{leaf}"]
            _lin(sd, f"layers.{i - 1}.downsample.reduction",
                 src[f"layers.{i}.downsample.reduction.weight"], None, 8)
    sd["norm.weight"], sd["norm.bias"] = src["norm.weight"], src["norm.bias"]
    _act(sd, "quant", 8, rng, False)
    _lin(sd, "head", src["head.fc.weight"], src["head.fc.bias"], 8)
    return sd


@pytest.mark.slow
def test_vvtq_swin_layout_loads_strictly(tmp_path):
    torch.manual_seed(0)
    swin = create_model("swin_tiny", weights="random")[0]
    sd = _swin_vvtq_checkpoint(swin, 3, torch.Generator().manual_seed(0))
    path = tmp_path / "swin_w3a3.pth"
    torch.save({"state_dict": sd}, path)
    model, report = load_zoo_checkpoint("swin_tiny.vvtq-w3a3", path)
    assert report.weight_bits == 3
    assert any("relative_position_index" in k for k in report.ignored_keys)
    assert any("patch_embed.quant" in k for k in report.ignored_keys)
    reduction = model.layers[1].downsample.reduction.weight
    assert torch.unique(reduction).numel() <= 2**8
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()
