"""The pad ("expansive") visual prompt of ILM-VP.

Order of operations, for a target image x in [0, 1] of any size:

1. resize x to the inner size s (bilinear, antialiased) unless it already is s×s;
2. zero-pad to the C×C canvas: left/top pad ⌊(C − s + 1)/2⌋, right/bottom pad ⌊(C − s)/2⌋;
3. add the prompt through the border mask: x′ = pad(x) + sigmoid(δ) ⊙ M, with δ ∈ R^{3×C×C}
   and M = 1 on the border, 0 over the image;
4. only then normalise with the backbone's mean/std: (x′ − μ)/σ.

Initialisation (ILM-VP's ``ExpansiveVisualPrompt(init=...)``): ``"zero"`` (default) δ = 0, so
the border starts at 0.5 grey; ``"randn"`` δ ~ N(0, 1) i.i.d. over the whole 3×C×C canvas,
drawn from ``torch.Generator().manual_seed(seed)`` (the global RNG is not touched). Every pixel
stays in (0, 1) before normalisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError

#: The accepted ``init`` values of :class:`PadPrompt`.
PROMPT_INITS: tuple[str, ...] = ("zero", "randn")


def pad_amounts(canvas_size: int, inner_size: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) zero padding that centres an s×s image on a C×C canvas.

    left = top = ⌊(C − s + 1)/2⌋ and right = bottom = ⌊(C − s)/2⌋, so an odd margin puts the
    extra pixel on the left/top.
    """
    if not 0 < inner_size <= canvas_size:
        raise HiddenCostError(
            f"inner size {inner_size} must be in [1, canvas size {canvas_size}]"
        )
    lead = (canvas_size - inner_size + 1) // 2
    trail = (canvas_size - inner_size) // 2
    return lead, trail, lead, trail


def border_mask(canvas_size: int, inner_size: int) -> torch.Tensor:
    """M of shape (3, C, C): 1 on the prompt border, 0 where the image sits."""
    left, _, top, _ = pad_amounts(canvas_size, inner_size)
    mask = torch.ones(3, canvas_size, canvas_size)
    mask[:, top : top + inner_size, left : left + inner_size] = 0
    return mask


def initial_delta(canvas_size: int, init: str = "zero", seed: int = 0) -> torch.Tensor:
    """δ at the start of training, (3, C, C): zeros, or N(0, 1) from a generator seeded with
    ``seed`` (same seed → same δ); the zero path draws no random numbers."""
    if init == "zero":
        return torch.zeros(3, canvas_size, canvas_size)
    if init == "randn":
        gen = torch.Generator().manual_seed(seed)
        return torch.randn(3, canvas_size, canvas_size, generator=gen)
    raise HiddenCostError(f"unknown prompt init {init!r}; known: {', '.join(PROMPT_INITS)}")


class PadPrompt(nn.Module):
    """Trainable border prompt x′ = pad(resize(x)) + sigmoid(δ) ⊙ M, then mean/std normalisation;
    δ starts as :func:`initial_delta` (``init``, ``seed``)."""

    def __init__(
        self,
        canvas_size: int,
        inner_size: int,
        mean: tuple[float, float, float],
        std: tuple[float, float, float],
        init: str = "zero",
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.canvas_size = canvas_size
        self.inner_size = inner_size
        self.padding = pad_amounts(canvas_size, inner_size)
        self.delta = nn.Parameter(initial_delta(canvas_size, init, seed))
        self.register_buffer("mask", border_mask(canvas_size, inner_size))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def prompted_image(self, x: torch.Tensor) -> torch.Tensor:
        """x′ in (0, 1), before normalisation; x is a batch (B, 3, H, W) in [0, 1]."""
        if x.shape[-2:] != (self.inner_size, self.inner_size):
            x = F.interpolate(
                x, size=(self.inner_size, self.inner_size), mode="bilinear",
                antialias=True, align_corners=False,
            )
        x = F.pad(x, self.padding)
        return x + torch.sigmoid(self.delta) * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.prompted_image(x) - self.mean) / self.std

    def visual(self) -> torch.Tensor:
        """The prompt as an image (3, C, C) in [0, 1]: sigmoid(δ) on the border, 0 inside."""
        return (torch.sigmoid(self.delta) * self.mask).detach()
