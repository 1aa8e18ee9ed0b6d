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

import math
import re
from collections import OrderedDict, defaultdict
from pathlib import Path

import torch
from timm.layers import Mlp
from timm.layers.attention import Attention
from timm.models.swin_transformer import WindowAttention
from torch import nn

from hiddencost.checkpoints import (
    extract_state_dict,
    load_state_dict_strict,
    read_checkpoint_object,
    shorten,
    strip_prefix,
)
from hiddencost.compression.quantization import InputQuantized
from hiddencost.errors import HiddenCostError
from hiddencost.zoo.common import ZooLoadReport, ZooSpec

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


class LsqInput(InputQuantized):
    """``layer(quantizer(x))``: a conv/linear whose input is LSQ-quantized."""

    def __init__(self, layer: nn.Module, quantizer: LsqQuantizer) -> None:
        super().__init__(layer, quantizer)


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


def _groups(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Tensors grouped by module prefix, in the file's order."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = value
    return groups


class _VVTQRemap:
    """The state of one :func:`remap_vvtq` pass: what is written, ignored, checked."""

    def __init__(self, family: str, weight_bits: int, activation_bits: int, source: str) -> None:
        self.family, self.source = family, source
        self.weight_bits, self.activation_bits = weight_bits, activation_bits
        self.fixed = [re.compile(p) for p in _FIXED_8BIT[family]]
        self.out: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.ignored: list[str] = []
        self.bits_of: dict[str, int] = {}
        self.wrong: list[str] = []
        self.qkv_parts: dict[str, dict[str, dict[str, torch.Tensor]]] = defaultdict(dict)

    def group(self, prefix: str, group: dict[str, torch.Tensor]) -> None:
        for leaf in [k for k in group if k in _IGNORED_BUFFERS]:
            self.ignored.append(f"{prefix}.{leaf} ({_IGNORED_BUFFERS[leaf]})")
            del group[leaf]
        if not group:
            return
        target = _rename_prefix(prefix, self.family)
        if target is None:
            self.ignored.extend(f"{prefix}.{leaf} (never called by VVTQ's forward)"
                                for leaf in group)
        elif "alpha" in group:
            self.quantizer(prefix, target, group)
        else:
            for leaf, value in group.items():
                self.out[f"{target}.{leaf}" if target else leaf] = value

    def quantizer(self, prefix: str, target: str, group: dict[str, torch.Tensor]) -> None:
        """An LSQ quantizer's group: check its bits, quantize its weight or keep its step."""
        if "nbits" not in group:
            raise HiddenCostError(f"{self.source}: {prefix} has alpha but no nbits")
        bits = _bits_of(group["nbits"], f"{prefix}.nbits")
        is_weight = "weight" in group
        expected = 8 if any(p.fullmatch(prefix) for p in self.fixed) else (
            self.weight_bits if is_weight else self.activation_bits)
        if bits != expected:
            self.wrong.append(f"{prefix}.nbits={bits} (expected {expected})")
            return
        step = _step_of(group, prefix, bits, self.source)
        extra = set(group) - {"alpha", "nbits", "init_state", "beta", "weight", "bias"}
        if extra:
            raise HiddenCostError(
                f"{self.source}: unexpected tensors in {prefix}: {shorten(sorted(extra))}")
        if is_weight:
            self.weight(prefix, target, group, step, bits)
            return
        self.bits_of[target] = bits
        self.out[f"{target}.step"] = torch.tensor(step, dtype=torch.float32)
        beta = group.get("beta")
        offset = float(beta.reshape(-1)[bits - 2]) if beta is not None else 0.0
        self.out[f"{target}.offset"] = torch.tensor(offset, dtype=torch.float32)

    def weight(self, prefix: str, target: str, group: dict[str, torch.Tensor], step: float,
               bits: int) -> None:
        quantized = {"weight": lsq_quantize_weight(group["weight"], step, bits)}
        if "bias" in group:
            quantized["bias"] = group["bias"]
        match = _QKV.fullmatch(prefix)
        if match:  # q, k and v are merged into timm's qkv once all three are read
            self.qkv_parts[match.group(1)][match.group(2)] = quantized
            return
        self.bits_of[target] = bits
        for leaf, value in quantized.items():
            self.out[f"{target}.{leaf}"] = value

    def merge_qkv(self) -> None:
        for attn, parts in self.qkv_parts.items():
            if set(parts) != {"q", "k", "v"}:
                raise HiddenCostError(
                    f"{self.source}: {attn} lacks proj_{set('qkv') - set(parts)}")
            self.out[f"{attn}.qkv.weight"] = torch.cat([parts[p]["weight"] for p in "qkv"])
            biases = [parts[p].get("bias") for p in "qkv"]
            if any(b is not None for b in biases):
                if any(b is None for b in biases):
                    raise HiddenCostError(
                        f"{self.source}: {attn} has a bias on some of q/k/v only")
                self.out[f"{attn}.qkv.bias"] = torch.cat(biases)  # type: ignore[arg-type]
            self.bits_of[f"{attn}.qkv"] = self.weight_bits


def remap_vvtq(
    state: dict[str, torch.Tensor], family: str, weight_bits: int, activation_bits: int,
    source: str,
) -> tuple[OrderedDict[str, torch.Tensor], list[str], dict[str, int]]:
    """VVTQ state dict -> our rebuilt model's state dict (weights quantized, steps chosen).

    Returns ``(state, ignored keys, bits per quantized module)``. Claims are checked here: every
    quantizer's ``nbits`` must be the fixed 8 or the tag's bits; the error names the keys.
    """
    remap = _VVTQRemap(family, weight_bits, activation_bits, source)
    for prefix, group in _groups(state).items():
        remap.group(prefix, group)
    if remap.wrong:
        raise HiddenCostError(
            f"{source}: quantizer bit-widths do not match the claimed W{weight_bits}A"
            f"{activation_bits}: {shorten(remap.wrong)}"
        )
    remap.merge_qkv()
    return remap.out, remap.ignored, remap.bits_of


def _measured_weight_bits(model: nn.Module, bits_of: dict[str, int]) -> int:
    """Largest ``ceil(log2(distinct values))`` over the quantized weights (q/k/v parts apart)."""
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
    model: nn.Module, path: str | Path, spec: ZooSpec | None = None, mask: None = None,
) -> ZooLoadReport:
    """Rebuild ``model`` (timm DeiT / Swin) as VVTQ's quantized network and load ``path``;
    the zoo name ``spec`` (``deit_tiny.vvtq-w4a4``) gives the family and the claimed bits.

    Strict after the explicit remap; bit-width claims checked (see the module docstring), and the
    loaded weights of the W-bit layers are verified to take at most ``2^W`` distinct values per
    tensor (per q / k / v part).
    """
    if spec is None or spec.weight_bits is None or spec.activation_bits is None:
        raise HiddenCostError("a VVTQ checkpoint needs its zoo name (e.g. deit_tiny.vvtq-w4a4): "
                              "the tag claims the bit-widths")
    family = "deit" if spec.arch.startswith("deit") else "swin"
    weight_bits, activation_bits = spec.weight_bits, spec.activation_bits
    source = str(path)
    state = strip_prefix(
        extract_state_dict(read_checkpoint_object(path), source, ("state_dict", "model")),
        "module.", repeated=True,
    )
    remapped, ignored, bits_of = remap_vvtq(state, family, weight_bits, activation_bits, source)
    build_vvtq_model(model, family, activation_bits)
    load_state_dict_strict(model, remapped, source)
    low = {k: b for k, b in bits_of.items() if b == weight_bits
           and isinstance(getattr(model.get_submodule(k), "weight", None), torch.Tensor)}
    measured = _measured_weight_bits(model, low)
    if measured > weight_bits:
        raise HiddenCostError(f"{source}: loaded weights need {measured} bits, not {weight_bits}")
    return ZooLoadReport.measure(
        model, name=spec.name, format="vvtq", files=[source], claim_source="nbits",
        weight_bits=weight_bits, activation_bits=activation_bits,
        n_remapped_keys=len(remapped), ignored_keys=ignored,
        notes=[f"{len(bits_of)} quantized modules; 8-bit: patch embedding and classifier"],
    )
