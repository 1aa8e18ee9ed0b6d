"""A backbone prepared for transfer: frozen, BatchNorm folded, channels_last; its features.

Transfer methods never train the backbone, so every run prepares it the same way
(:func:`prepare_frozen`) and reads penultimate features the same way
(:func:`penultimate_features`).
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.fold import fold_batchnorm


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a backbone for transfer: no weight gradients, eval mode (BatchNorm stats fixed)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def prepare_frozen(model: nn.Module, device: torch.device, input_size: int) -> nn.Module:
    """The backbone as transfer trains through it: :func:`freeze`, BatchNorm folded into the
    convolutions (:func:`hiddencost.fold.fold_batchnorm`, checked on a probe batch of
    ``input_size`` images), then on ``device`` in channels_last. Measure compression first:
    folding rescales weights (zeros and per-channel value counts are kept)."""
    freeze(model)
    probe = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    fold_batchnorm(model, probe.to(next(model.parameters()).device))
    return model.to(device=device, memory_format=torch.channels_last)


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled pre-classifier features of a timm model (the input of its final linear layer)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
