"""Training a compressed backbone without undoing its compression, and measuring that it held.

Fine-tuning updates the backbone's weights; a pruned or weight-quantized backbone must stay
what it was (Iofinova et al., CVPR'22, fine-tune sparse models "with the mask kept"). Two
parametrizations (``torch.nn.utils.parametrize``) of the compression's prunable layers (its
exclusions applied) do it, so the optimiser steps a latent weight and every forward sees:

- **the zero set kept** (:class:`ZeroSet`): ``w · keep`` with ``keep = (w₀ ≠ 0)`` fixed when
  training starts, so every weight that was exactly zero stays exactly zero (its gradient is
  masked too);
- **the k-bit grid kept** (:class:`KBitGrid`): ``w + (q_k(w) − w).detach()`` with ``q_k`` the
  compression's own symmetric per-output-channel quantizer
  (:func:`~hiddencost.compression.quantization.quantize_weight_tensor`): the forward uses the
  k-bit weight, the gradient passes straight through to the latent weight (the STE).

:func:`finish` removes them, leaving the kept values as plain weights; :func:`measure_kept`
measures what survived on the same layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from hiddencost.compression.measure import distinct_values_per_channel
from hiddencost.compression.pruning import prunable_layers
from hiddencost.compression.quantization import quantize_weight_tensor
from hiddencost.compression.spec import CompressionSpec


class ZeroSet(nn.Module):
    """``w ↦ w · keep``: the weights that were zero when it was made stay zero."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", (weight.detach() != 0).to(weight.dtype))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.keep


class KBitGrid(nn.Module):
    """``w ↦ w + (q_k(w) − w).detach()``: the k-bit weight forward, the identity backward."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (quantize_weight_tensor(w, self.bits) - w).detach()


@dataclass
class Compressed:
    """The compression's prunable layers of a backbone, with what they held before training:
    each weight's zero mask and the bit-width of the grid (None: not quantized)."""

    layers: list[tuple[str, nn.Module]]
    zeros: list[torch.Tensor]
    bits: int | None

    @property
    def sparsity(self) -> float:
        """The measured sparsity before training (zeros / weights over the layers)."""
        return _fraction(self.zeros)


def _fraction(masks: list[torch.Tensor]) -> float:
    total = sum(m.numel() for m in masks)
    return sum(int(m.sum()) for m in masks) / total if total else 0.0


def compressed_layers(backbone: nn.Module, spec: CompressionSpec) -> Compressed:
    """The layers :func:`keep_compression` guards and :func:`measure_kept` measures, as they are
    now (call it before training)."""
    layers = prunable_layers(backbone, **spec.exclusions)
    return Compressed(layers, [m.weight.detach() == 0 for _, m in layers], spec.weight_bits)


def keep_compression(compressed: Compressed, keep_zeros: bool) -> None:
    """Parametrize the layers: :class:`ZeroSet` with ``keep_zeros``, then :class:`KBitGrid`
    when the backbone is weight-quantized (the grid's zeros are the quantizer's own)."""
    for _, module in compressed.layers:
        if keep_zeros:
            parametrize.register_parametrization(module, "weight", ZeroSet(module.weight))
        if compressed.bits is not None:
            parametrize.register_parametrization(module, "weight", KBitGrid(compressed.bits))


def finish(compressed: Compressed) -> None:
    """Remove the parametrizations, leaving each weight at its kept (masked, gridded) value."""
    for _, module in compressed.layers:
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)


@dataclass(frozen=True)
class Kept:
    """What survived training (see :class:`hiddencost.records.TrainedBackbone`)."""

    sparsity_before: float
    sparsity_after: float
    zero_set_kept: bool
    max_distinct_values_per_channel: int | None
    bits_kept: bool | None


@torch.no_grad()
def measure_kept(compressed: Compressed) -> Kept:
    """Measure the layers now against what they held before training."""
    now = [m.weight.detach() == 0 for _, m in compressed.layers]
    kept = all(bool((after | ~before).all()) for before, after in
               zip(compressed.zeros, now, strict=True))
    distinct = None
    if compressed.bits is not None:
        distinct = max((max(distinct_values_per_channel(m.weight), default=0)
                        for _, m in compressed.layers), default=0)
    return Kept(compressed.sparsity, _fraction(now), kept, distinct,
                None if distinct is None else distinct <= 2 ** compressed.bits - 1)
