"""Input transforms shared by linear probing and fidelity: resize and normalise [0, 1] images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResizeNormalize(nn.Module):
    """[0, 1] images → bilinear (antialiased) resize to ``size`` → (x − μ)/σ, channels_last."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                              align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)
