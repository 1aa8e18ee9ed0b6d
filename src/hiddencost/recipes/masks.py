"""Pruning masks kept during training: computed from zeros, re-applied after every step."""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.compression.pruning import prunable_layers

__all__ = ["MaskSet"]


class MaskSet:
    """0/1 masks over the weights of a model's prunable layers (``name.weight`` keys).

    :meth:`apply` multiplies every weight by its mask (so a pruned weight stays exactly zero
    whatever the optimizer does to it); :meth:`from_zeros` reads the masks off the current zero
    pattern.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        self.model = model
        self.masks = masks
        modules = dict(model.named_modules())
        self._layers = {k: modules[k.removesuffix(".weight")] for k in masks}

    @classmethod
    def from_zeros(
        cls, model: nn.Module, exclude_first_conv: bool = False, exclude_classifier: bool = False
    ) -> MaskSet:
        """Masks ``(w != 0)`` for every in-scope prunable layer."""
        masks = {
            f"{n}.weight": (m.weight.detach() != 0).to(m.weight.dtype)
            for n, m in prunable_layers(model, exclude_first_conv, exclude_classifier)
        }
        return cls(model, masks)

    @classmethod
    def ones(
        cls, model: nn.Module, exclude_first_conv: bool = False, exclude_classifier: bool = False
    ) -> MaskSet:
        """All-ones masks (nothing pruned) for every in-scope prunable layer."""
        masks = {
            f"{n}.weight": torch.ones_like(m.weight.detach())
            for n, m in prunable_layers(model, exclude_first_conv, exclude_classifier)
        }
        return cls(model, masks)

    @torch.no_grad()
    def apply(self) -> None:
        """``w <- w * m`` for every masked weight, in place."""
        for key, layer in self._layers.items():
            layer.weight.mul_(self.masks[key].to(layer.weight.device, layer.weight.dtype))

    def remaining(self) -> int:
        """Number of unpruned weights."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def total(self) -> int:
        """Number of masked weights."""
        return int(sum(m.numel() for m in self.masks.values()))

    def sparsity(self) -> float:
        """``1 - remaining / total``."""
        total = self.total()
        return 1.0 - self.remaining() / total if total else 0.0

    def cpu_int(self) -> dict[str, torch.Tensor]:
        """The masks as CPU int tensors (open_lth's mask file format)."""
        return {k: m.detach().cpu().int() for k, m in self.masks.items()}
