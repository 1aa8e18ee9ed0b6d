"""TrivialAugment (Müller & Hutter, ICCV'21) of a training batch, for the "strong VP" arm
(AutoVP, Tsao et al., ICLR'24, trains its prompts on augmented images).

Each uint8 image gets one operation drawn uniformly from TrivialAugment's wide set at a uniform
magnitude (torchvision's ``TrivialAugmentWide``, 31 magnitude bins, nearest interpolation).
torchvision draws from the global RNG, so the draws run under a forked RNG seeded per batch
(:func:`batch_seed` of the run's seed, the epoch and the step): a run repeats exactly, alone or
in a pack, and the global RNG is left as it was.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

#: The augmentations a VP run may ask for (``augment`` in its options).
AUGMENTS: tuple[str, ...] = ("trivial",)


def batch_seed(seed: int, epoch: int, step: int) -> int:
    """A batch's augmentation seed from the run's ``seed``, the epoch and the step."""
    return (seed * 1_000_003 + epoch * 10_007 + step) % (2**63)


def trivial_augment(images: torch.Tensor, seed: int) -> torch.Tensor:
    """TrivialAugmentWide of each uint8 image of ``images`` (B, 3, H, W), drawn with ``seed``."""
    transform = v2.TrivialAugmentWide()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(img) for img in images.cpu()]).to(images.device)
