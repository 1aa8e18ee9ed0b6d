"""VVTQ quantized DeiT-T / Swin-T (Huang, Shen, Cheng, "Variation-aware Vision Transformer
Quantization", arXiv 2307.00331; code github.com/HuangOwen/Quantization-Variation, "VVTQ").

Checkpoint layout (``quantization/DeiT_quant.py``, ``Swin_quant.py``, ``_quan_base.py``,
``lsq_layer.py`` of that repository; the file is ``torch.save({"state_dict": model.state_dict(),
...})``, ``model`` and plain state dicts are accepted too, ``module.`` prefixes are stripped):

- Attention holds **separate** ``proj_q`` / ``proj_k`` / ``proj_v`` linears (timm fuses them into
  ``qkv``) and activation quantizers ``quant_input`` (before q/k/v), ``quant_q``, ``quant_k``,
  ``quant_v`` (after them), ``quant_attn`` (softmax output, unsigned) and ``quant_output``
  (``attn @ v``, before ``proj``). The MLP has ``quant1`` (before ``fc1``) and ``quant2`` (after
  GELU, unsigned, always with an offset).
- Every quantized module (LSQ, Esser et al. 2020) has ``nbits`` (shape (1,)), ``alpha`` (shape
  (7,): one learned step size per bit-width 2..8, indexed ``alpha[nbits - 2]``), ``init_state``
  (1 once initialised) and, for activations with an offset, ``beta`` (shape (7,)).
- Weights (per tensor, signed): ``Q_n = -2^(b-1)``, ``Q_p = 2^(b-1) - 1``,
  ``w_q = round(clamp(w / a, Q_n, Q_p)) * a`` with ``a = max(alpha[b-2], 1e-4)``.
- Activations: signed as above or unsigned (``Q_n = 0``, ``Q_p = 2^b - 1``),
  ``x_q = round(clamp((x - beta) / a, Q_n, Q_p)) * a + beta``; gradients follow LSQ's
  ``round_pass`` (straight through the rounding, zero outside the clamp range).
- Fixed 8 bits whatever the W/A setting: DeiT's ``patch_embed.quant`` (input) and
  ``patch_embed.proj``, the ``quant`` before the classifier and the ``head``; Swin's
  ``patch_embed.proj``, ``layers.<i>.downsample.reduction`` and ``quant`` / ``head``. Swin's
  ``patch_embed.quant`` is declared but never called by its forward: ignored here.
- Swin follows the original Microsoft layout: ``layers.<i>.downsample`` ends stage ``i`` (timm:
  starts stage ``i+1``), ``relative_position_index`` and ``attn_mask`` buffers are stored (timm
  recomputes them: ignored), the classifier is ``head`` (timm: ``head.fc``).

Rebuild. The timm model is kept (fused ``qkv``, timm names) and modified in place: each weight is
fake-quantized once at load time with its own learned step (q, k and v each with theirs, then
concatenated into ``qkv``: exact, since the backbone is frozen); :class:`LsqQuantizer` modules
(fixed step, offset and bit-width from the checkpoint) are inserted where VVTQ quantizes
activations, and the attention / MLP forwards follow VVTQ's order of operations (scores scaled
after ``q @ k^T``). A W4A4 / W3A3 / W2A2 checkpoint therefore computes what VVTQ's model computes.

Claims checked: every quantizer's ``nbits`` equals the tag's bits (``vvtq-w4a4``: 4-bit weights
and activations) except the fixed 8-bit ones, ``init_state`` is 1, ``alpha`` has 7 entries; a
mismatch names the keys. Unsupported (clear error): head-wise quantizers (``nbits`` with one
entry per head). Download: the repository links its checkpoints from its README; there is no
stable direct URL, so pass the local file.
"""

from __future__ import annotations

import re
from collections import OrderedDict, defaultdict
from pathlib import Path

import torch
from timm.layers import Mlp
from timm.layers.attention import Attention
from timm.models.swin_transformer import WindowAttention
from torch import nn

from hiddencost.backbones import load_state_dict_strict
from hiddencost.errors import HiddenCostError
from hiddencost.zoo.common import (
    ZooLoadReport,
    extract_state_dict,
    read_checkpoint_object,
    shorten,
    strip_module_prefixes,
)

__all__ = [
    "LsqInput",
    "LsqQuantizer",
    "build_vvtq_model",
    "load_vvtq",
    "lsq_levels",
    "lsq_quantize_weight",
]

MIN_STEP = 1e-4  # VVTQ clamps every alpha to >= 1e-4 before use


def lsq_levels(bits: int, signed: bool) -> tuple[int, int]:
    """``(Q_n, Q_p)``: ``(-2^(b-1), 2^(b-1) - 1)`` signed, ``(0, 2^b - 1)`` unsigned."""
    if signed:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def lsq_quantize_weight(weight: torch.Tensor, step: float, bits: int) -> torch.Tensor:
    """``round(clamp(w / a, Q_n, Q_p)) * a`` with signed levels (VVTQ's weight quantizer)."""
    qn, qp = lsq_levels(bits, signed=True)
    w = weight.detach().float()
    return (torch.clamp(w / step, qn, qp).round() * step).to(weight.dtype)


class LsqQuantizer(nn.Module):
    """Per-tensor LSQ fake quantizer with a fixed (learned, loaded) step and offset.

    ``forward(x) = round_pass(clamp((x - offset) / step, Q_n, Q_p)) * step + offset`` where
    ``round_pass(v) = v + (round(v) - v).detach()``: the value is exactly LSQ's, the gradient
    w.r.t. ``x`` is 1 inside the clamp range and 0 outside (as in VVTQ). ``step`` and ``offset``
    are buffers (they travel with ``state_dict`` and ``.to``); the bit-width and signedness are
    fixed at construction.
    """

    def __init__(self, bits: int, signed: bool = True) -> None:
        super().__init__()
        if not 2 <= int(bits) <= 8:
            raise HiddenCostError(f"LSQ bit-width must be in 2..8, got {bits}")
        self.bits = int(bits)
        self.signed = bool(signed)
        self.register_buffer("step", torch.ones((), dtype=torch.float32))
        self.register_buffer("offset", torch.zeros((), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qn, qp = lsq_levels(self.bits, self.signed)
        v = torch.clamp((x - self.offset) / self.step, qn, qp)
        v = v + (v.round() - v).detach()
        return v * self.step + self.offset

    def extra_repr(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"bits={self.bits}, {kind}, step={float(self.step):.4g}"


class LsqInput(nn.Module):
    """``layer(quantizer(x))``: a conv/linear whose input is LSQ-quantized (attributes the
    wrapper lacks are read from ``layer``)."""

    def __init__(self, layer: nn.Module, quantizer: LsqQuantizer) -> None:
        super().__init__()
        self.quantizer = quantizer
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.quantizer(x))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("layer", "quantizer") or name.startswith("__"):
                raise
            return getattr(super().__getattr__("layer"), name)


class _LsqAttention(Attention):
    """timm's ViT attention with VVTQ's activation quantizers (added by :func:`_convert`)."""

    def forward(self, x, attn_mask=None, is_causal=False):  # noqa: D102
        B, N, C = x.shape
        x = self.quant_input(x)
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k, v = self.quant_q(q), self.quant_k(k), self.quant_v(v)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        attn = self.quant_attn(attn)
        x = self.quant_output(attn @ v).transpose(1, 2).reshape(B, N, self.attn_dim)
        return self.proj_drop(self.proj(x))


class _LsqWindowAttention(WindowAttention):
    """timm's Swin window attention with VVTQ's activation quantizers."""

    def forward(self, x, mask=None):  # noqa: D102
        B_, N, C = x.shape
        x = self.quant_input(x)
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k, v = self.quant_q(q), self.quant_k(k), self.quant_v(v)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(self.softmax(attn))
        attn = self.quant_attn(attn)
        x = self.quant_output(attn @ v).transpose(1, 2).reshape(B_, N, -1)
        return self.proj_drop(self.proj(x))


class _LsqMlp(Mlp):
    """timm's MLP with VVTQ's ``quant1`` (before fc1) and ``quant2`` (after the activation)."""

    def forward(self, x):  # noqa: D102
        x = self.fc1(self.quant1(x))
        x = self.drop1(self.act(x))
        x = self.norm(x)
        x = self.fc2(self.quant2(x))
        return self.drop2(x)


_ATTN_QUANTS = {"quant_input": True, "quant_q": True, "quant_k": True, "quant_v": True,
                "quant_attn": False, "quant_output": True}  # name -> signed
_MLP_QUANTS = {"quant1": True, "quant2": False}


def _convert(module: nn.Module, cls: type, quants: dict[str, bool], bits: int) -> None:
    if type(module) is not cls.__mro__[1]:
        raise HiddenCostError(f"cannot rebuild {type(module).__name__} as a VVTQ module")
    module.__class__ = cls
    for name, signed in quants.items():
        module.add_module(name, LsqQuantizer(bits, signed))


def build_vvtq_model(model: nn.Module, family: str, activation_bits: int) -> nn.Module:
    """Turn a timm DeiT (``family="deit"``) or Swin (``"swin"``) into VVTQ's quantized layout,
    in place: LSQ activation quantizers at VVTQ's places (``activation_bits`` bits, 8 for the
    patch embedding input and the classifier input). Weights are not touched here (the loader
    writes quantized weights). Returns ``model``."""
    a = int(activation_bits)
    if family == "deit":
        model.patch_embed.proj = LsqInput(model.patch_embed.proj, LsqQuantizer(8, True))
        for blk in model.blocks:
            _convert(blk.attn, _LsqAttention, _ATTN_QUANTS, a)
            _convert(blk.mlp, _LsqMlp, _MLP_QUANTS, a)
        model.head = LsqInput(model.head, LsqQuantizer(8, True))
    elif family == "swin":
        for stage in model.layers:
            for blk in stage.blocks:
                _convert(blk.attn, _LsqWindowAttention, _ATTN_QUANTS, a)
                _convert(blk.mlp, _LsqMlp, _MLP_QUANTS, a)
        model.head.fc = LsqInput(model.head.fc, LsqQuantizer(8, True))
    else:
        raise HiddenCostError(f"VVTQ rebuild supports deit and swin, not {family!r}")
    return model


# --- remapping -------------------------------------------------------------------------------

#: Module prefixes (VVTQ names) whose quantization is 8-bit whatever the W/A setting.
_FIXED_8BIT = {
    "deit": [r"patch_embed\.quant", r"patch_embed\.proj", r"quant", r"head"],
    "swin": [r"patch_embed\.quant", r"patch_embed\.proj", r"layers\.\d+\.downsample\.reduction",
             r"quant", r"head"],
}
#: VVTQ module prefix -> our module prefix (first match wins; ``None`` = ignore the module).
_PREFIX_RULES: dict[str, list[tuple[str, str | None]]] = {
    "deit": [
        (r"patch_embed\.quant", "patch_embed.proj.quantizer"),
        (r"patch_embed\.proj", "patch_embed.proj.layer"),
        (r"quant", "head.quantizer"),
        (r"head", "head.layer"),
    ],
    "swin": [
        (r"patch_embed\.quant", None),
        (r"layers\.(\d+)\.downsample\.(norm|reduction)", "layers.{next}.downsample.\\2"),
        (r"quant", "head.fc.quantizer"),
        (r"head", "head.fc.layer"),
    ],
}
_IGNORED_BUFFERS = {
    "relative_position_index": "recomputed by timm",
    "attn_mask": "recomputed by timm",
}
_QKV = re.compile(r"(.*\.attn)\.proj_([qkv])")


def _bits_of(nbits: torch.Tensor, key: str) -> int:
    if nbits.numel() != 1:
        raise HiddenCostError(
            f"{key} has {nbits.numel()} entries: head-wise VVTQ quantizers are not supported"
        )
    return int(min(8, max(2, round(float(nbits.reshape(-1)[0])))))


def _step_of(group: dict[str, torch.Tensor], prefix: str, bits: int, source: str) -> float:
    alpha = group["alpha"]
    if alpha.numel() != 7:
        raise HiddenCostError(
            f"{source}: {prefix}.alpha has {alpha.numel()} entries, VVTQ stores 7 (bits 2..8)"
        )
    init = group.get("init_state")
    if init is not None and float(init.reshape(-1)[0]) != 1.0:
        raise HiddenCostError(f"{source}: {prefix}.init_state is not 1: the quantizer was never "
                              "initialised")
    return max(float(alpha.reshape(-1)[bits - 2]), MIN_STEP)


def _rename_prefix(prefix: str, family: str) -> str | None:
    for pattern, target in _PREFIX_RULES[family]:
        match = re.fullmatch(pattern, prefix)
        if match:
            if target is None:
                return None
            if "{next}" in target:
                target = target.replace("{next}", str(int(match.group(1)) + 1))
            return match.expand(target)
    return prefix


def remap_vvtq(
    state: dict[str, torch.Tensor], family: str, weight_bits: int, activation_bits: int,
    source: str,
) -> tuple[OrderedDict[str, torch.Tensor], list[str], dict[str, int]]:
    """VVTQ state dict -> our rebuilt model's state dict (weights quantized, steps chosen).

    Returns ``(state, ignored keys, bits per quantized module)``. Claims are checked here: every
    quantizer's ``nbits`` must be the fixed 8 or the tag's bits; the error names the keys.
    """
    groups: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    order: list[str] = []
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        if prefix not in groups:
            order.append(prefix)
        groups[prefix][leaf] = value
    fixed = [re.compile(p) for p in _FIXED_8BIT[family]]
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    ignored: list[str] = []
    bits_of: dict[str, int] = {}
    wrong: list[str] = []
    qkv_parts: dict[str, dict[str, dict[str, torch.Tensor]]] = defaultdict(dict)
    for prefix in order:
        group = dict(groups[prefix])
        for leaf in list(group):
            if leaf in _IGNORED_BUFFERS:
                ignored.append(f"{prefix}.{leaf} ({_IGNORED_BUFFERS[leaf]})")
                del group[leaf]
        if not group:
            continue
        target = _rename_prefix(prefix, family)
        if target is None:
            ignored.extend(f"{prefix}.{leaf} (never called by VVTQ's forward)" for leaf in group)
            continue
        if "alpha" in group:
            if "nbits" not in group:
                raise HiddenCostError(f"{source}: {prefix} has alpha but no nbits")
            bits = _bits_of(group["nbits"], f"{prefix}.nbits")
            is_weight = "weight" in group
            expected = 8 if any(p.fullmatch(prefix) for p in fixed) else (
                weight_bits if is_weight else activation_bits)
            if bits != expected:
                wrong.append(f"{prefix}.nbits={bits} (expected {expected})")
                continue
            step = _step_of(group, prefix, bits, source)
            extra = set(group) - {"alpha", "nbits", "init_state", "beta", "weight", "bias"}
            if extra:
                raise HiddenCostError(
                    f"{source}: unexpected tensors in {prefix}: {shorten(sorted(extra))}")
            if is_weight:
                quantized = {"weight": lsq_quantize_weight(group["weight"], step, bits)}
                if "bias" in group:
                    quantized["bias"] = group["bias"]
                match = _QKV.fullmatch(prefix)
                if match:
                    qkv_parts[match.group(1)][match.group(2)] = quantized
                    continue
                bits_of[target] = bits
                for leaf, value in quantized.items():
                    out[f"{target}.{leaf}"] = value
            else:
                bits_of[target] = bits
                out[f"{target}.step"] = torch.tensor(step, dtype=torch.float32)
                beta = group.get("beta")
                offset = float(beta.reshape(-1)[bits - 2]) if beta is not None else 0.0
                out[f"{target}.offset"] = torch.tensor(offset, dtype=torch.float32)
        else:
            for leaf, value in group.items():
                out[f"{target}.{leaf}" if target else leaf] = value
    if wrong:
        raise HiddenCostError(
            f"{source}: quantizer bit-widths do not match the claimed W{weight_bits}A"
            f"{activation_bits}: {shorten(wrong)}"
        )
    for attn, parts in qkv_parts.items():
        if set(parts) != {"q", "k", "v"}:
            raise HiddenCostError(f"{source}: {attn} lacks proj_{set('qkv') - set(parts)}")
        out[f"{attn}.qkv.weight"] = torch.cat([parts[p]["weight"] for p in "qkv"], dim=0)
        biases = [parts[p].get("bias") for p in "qkv"]
        if any(b is not None for b in biases):
            if any(b is None for b in biases):
                raise HiddenCostError(f"{source}: {attn} has a bias on some of q/k/v only")
            out[f"{attn}.qkv.bias"] = torch.cat(biases, dim=0)  # type: ignore[arg-type]
        bits_of[f"{attn}.qkv"] = weight_bits
    return out, ignored, bits_of


def _measured_weight_bits(model: nn.Module, bits_of: dict[str, int]) -> int:
    """Largest ``ceil(log2(distinct values))`` over the quantized weights (q/k/v parts apart)."""
    import math

    worst = 0
    for prefix in bits_of:
        module = model.get_submodule(prefix)
        weight = getattr(module, "weight", None)
        if weight is None:
            continue
        parts = weight.detach().chunk(3, dim=0) if prefix.endswith(".qkv") else (weight.detach(),)
        for part in parts:
            n = int(torch.unique(part).numel())
            worst = max(worst, math.ceil(math.log2(n)) if n > 1 else 1)
    return worst


def load_vvtq(
    model: nn.Module, path: str | Path, family: str, weight_bits: int, activation_bits: int,
    name: str = "vvtq",
) -> ZooLoadReport:
    """Rebuild ``model`` (timm DeiT / Swin) as VVTQ's quantized network and load ``path``.

    Strict after the explicit remap; bit-width claims checked (see the module docstring), and the
    loaded weights of the W-bit layers are verified to take at most ``2^W`` distinct values per
    tensor (per q / k / v part).
    """
    source = str(path)
    state = strip_module_prefixes(
        extract_state_dict(read_checkpoint_object(path), source, ("state_dict", "model"))
    )
    remapped, ignored, bits_of = remap_vvtq(state, family, weight_bits, activation_bits, source)
    build_vvtq_model(model, family, activation_bits)
    load_state_dict_strict(model, remapped, source)
    low = {k: b for k, b in bits_of.items() if b == weight_bits
           and isinstance(getattr(model.get_submodule(k), "weight", None), torch.Tensor)}
    measured = _measured_weight_bits(model, low)
    if measured > weight_bits:
        raise HiddenCostError(f"{source}: loaded weights need {measured} bits, not {weight_bits}")
    return ZooLoadReport(
        name=name, format="vvtq", files=[source], measured_sparsity=0.0,
        claim_source="nbits", weight_bits=weight_bits, activation_bits=activation_bits,
        n_remapped_keys=len(remapped), ignored_keys=ignored,
        notes=[f"{len(bits_of)} quantized modules; 8-bit: patch embedding and classifier"],
    )
