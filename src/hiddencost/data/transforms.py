"""Input transforms shared by linear probing and fidelity: resize and normalise [0, 1] images."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pil_bicubic(x: torch.Tensor, size: int) -> torch.Tensor:
    """[0, 1] images of uint8 levels → ``size``×``size`` as PIL's bicubic resize of the uint8
    image gives it (what CLIP's transform does to a small image): its kernel (a = −0.5, torch's
    antialiased bicubic) in two passes, width then height, each rounded and clipped to 8 bits as
    PIL stores them. Equal to PIL but for its fixed-point rounding: at most 1/255, on well under
    1% of pixels (tested)."""
    y = x * 255.0
    y = F.interpolate(y, size=(y.shape[-2], size), mode="bicubic", antialias=True,
                      align_corners=False).round_().clamp_(0.0, 255.0)
    y = F.interpolate(y, size=(size, size), mode="bicubic", antialias=True,
                      align_corners=False).round_().clamp_(0.0, 255.0)
    return y / 255.0


class ResizeNormalize(nn.Module):
    """[0, 1] images → resize to ``size`` (``mode``: ``bilinear``, antialiased; or
    ``pil-bicubic``, :func:`pil_bicubic`, CLIP's transform) → (x − μ)/σ, channels_last."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...],
                 mode: str = "bilinear") -> None:
        super().__init__()
        if mode not in ("bilinear", "pil-bicubic"):
            raise ValueError(f"unknown resize mode {mode!r}")
        self.size, self.mode = size, mode
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.size, self.size):
            x = (pil_bicubic(x, self.size) if self.mode == "pil-bicubic" else
                 F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                               antialias=True, align_corners=False))
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last)
