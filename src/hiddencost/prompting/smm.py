"""Sample-specific masked visual prompts (SMM; Cai et al., "Sample-specific Masks for Visual
Reprogramming-based Prompting", ICML'24), read from ``tmlr-group/SMM`` (``instance_model.py``).

The image is resized to the canvas (C × C, bilinear, antialiased) and normalised, z =
(resize(x) − μ)/σ; a small CNN f (the mask generator) reads z and gives a 3-channel mask at one
value per p × p patch; the prompt δ ∈ R^{3×C×C} (zero at the start) is added through it::

    x′ = z + δ ⊙ upsample_p(f(z))

f is the reference's 5-layer ``AttributeNet`` for CNN backbones: four 3×3 conv–BatchNorm–ReLU
blocks of 8, 16, 32 and 64 channels, with a 2×2 max-pool after each of the first log₂ p blocks,
then a 3×3 convolution to 3 channels (p = 8 by default: three pools, so C must be a multiple
of p). Its BatchNorm trains in train mode and is evaluated with its running statistics, as in
the reference (``visual_prompt.train()`` / ``.eval()``). δ and f train with one Adam at the run's
learning rate under VP's MultiStepLR, which is the reference's two optimisers for CNN backbones
(both lr 0.01, γ 0.1; its ViT setting, mask lr 0.001 and γ 1, is not reproduced).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.prompting.pad_prompt import initial_delta

#: The patch sizes the 5-layer mask generator supports (up to four pools).
PATCH_SIZES: tuple[int, ...] = (1, 2, 4, 8, 16)


class MaskGenerator(nn.Module):
    """The reference's 5-layer attribute network at patch size ``patch`` (see the module)."""

    def __init__(self, patch: int = 8) -> None:
        super().__init__()
        if patch not in PATCH_SIZES:
            raise HiddenCostError(f"SMM patch size must be one of {PATCH_SIZES}, got {patch}")
        pools = int(math.log2(patch))
        layers: list[nn.Module] = []
        for i, (cin, cout) in enumerate(((3, 8), (8, 16), (16, 32), (32, 64))):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.ReLU()]
            if i < pools:
                layers.append(nn.MaxPool2d(2, 2))
        layers.append(nn.Conv2d(64, 3, 3, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class SampleMaskPrompt(nn.Module):
    """x′ = z + δ ⊙ upsample_p(f(z)), z the resized, normalised image (see the module);
    ``delta`` starts as :func:`~hiddencost.prompting.pad_prompt.initial_delta` and f from a
    generator seeded with ``seed``."""

    def __init__(self, canvas_size: int, mean: tuple[float, float, float],
                 std: tuple[float, float, float], patch: int = 8, init: str = "zero",
                 seed: int = 0) -> None:
        super().__init__()
        if canvas_size % patch:
            raise HiddenCostError(f"SMM needs a canvas size that is a multiple of its patch "
                                  f"size {patch}, got {canvas_size}")
        self.canvas_size, self.patch = canvas_size, patch
        self.delta = nn.Parameter(initial_delta(canvas_size, init, seed))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.mask = MaskGenerator(patch)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.canvas_size, self.canvas_size):
            x = F.interpolate(x, size=(self.canvas_size, self.canvas_size), mode="bilinear",
                              antialias=True, align_corners=False)
        z = (x - self.mean) / self.std
        m = self.mask(z).repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)
        return z + self.delta * m
