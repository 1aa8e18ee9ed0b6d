"""Measure what a compressed model actually holds: exact zero counts and distinct weight values.

All functions use the prunable-layer set of
:func:`hiddencost.compression.pruning.prunable_layers` (``nn.Conv2d`` / ``nn.Linear`` weights,
optional exclusion of the first conv and of the classifier), so measured and requested sparsity
refer to the same weights.
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.compression.pruning import prunable_layers

__all__ = [
    "distinct_values_per_channel",
    "layer_sparsities",
    "max_distinct_values_per_channel",
    "measure_sparsity",
    "paper_remaining_percent",
    "sparsity_counts",
]

#: The module the paper's ``check_sparsity(model, conv1=False)`` skips, by qualified name.
PAPER_SKIPPED_CONV = "conv1"
#: timm's VGG holds torchvision's first two classifier layers as convolutions under this prefix;
#: they are linear layers in the paper's models, so its convention does not count them.
_LINEAR_AS_CONV = "pre_logits."


def sparsity_counts(
    model: nn.Module,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> tuple[int, int]:
    """Return ``(n_zero_weights, n_weights)`` over the prunable layers' weights (exact ints)."""
    zeros = 0
    total = 0
    with torch.no_grad():
        for _, m in prunable_layers(model, exclude_first_conv, exclude_classifier):
            zeros += m.weight.numel() - int(torch.count_nonzero(m.weight))
            total += m.weight.numel()
    return zeros, total


def measure_sparsity(
    model: nn.Module,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> float:
    """Fraction of exactly-zero weights, ``n_zero / n``, over the prunable layers' weights.

    Returns 0.0 for a model without prunable layers.
    """
    zeros, total = sparsity_counts(model, exclude_first_conv, exclude_classifier)
    return zeros / total if total else 0.0


def paper_remaining_percent(model: nn.Module) -> float | None:
    """The paper's sparsity convention: the percentage of weights *remaining* (non-zero) over the
    ``nn.Conv2d`` weights, the classifier and every other ``nn.Linear`` excluded, and the
    convolution named ``conv1`` excluded.

    ``100 · (1 − n_zero / n)`` over those weights, as ``check_sparsity(model, conv1=False)`` of
    the paper's code (landskape-ai/Reprogram_LT ``experiments/cnn/ilm_vp.py``) computes it; its
    lottery-ticket levels (79.122 … 11.571 %) are in this convention. The skip is by name, as
    there: it is the stem of torchvision/timm ResNets, and architectures without a module
    named ``conv1`` (VGG, EfficientNet) have nothing skipped. timm's VGG classifier layers,
    convolutions there (``pre_logits.*``), are linear in torchvision and are not counted. None
    for a model without
    convolutions. Ours (:func:`measure_sparsity`) is the zero *fraction* over conv and linear
    weights.
    """
    zeros = total = 0
    with torch.no_grad():
        for name, m in model.named_modules():
            if (isinstance(m, nn.Conv2d) and name != PAPER_SKIPPED_CONV
                    and not name.startswith(_LINEAR_AS_CONV)):
                zeros += m.weight.numel() - int(torch.count_nonzero(m.weight))
                total += m.weight.numel()
    return 100.0 * (1.0 - zeros / total) if total else None


def layer_sparsities(
    model: nn.Module,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> dict[str, float]:
    """Per-layer fraction of zero weights, keyed by qualified layer name, in module order."""
    with torch.no_grad():
        return {
            name: (m.weight.numel() - int(torch.count_nonzero(m.weight))) / m.weight.numel()
            for name, m in prunable_layers(model, exclude_first_conv, exclude_classifier)
        }


def distinct_values_per_channel(weight: torch.Tensor) -> list[int]:
    """Number of distinct values in each output channel (slice along dim 0) of ``weight``.

    ``-0.0`` and ``0.0`` count as one value. A 0-d tensor counts as one channel.
    """
    w = weight.detach()
    if w.dim() == 0:
        w = w.reshape(1)
    flat = w.reshape(w.shape[0], -1)
    if flat.shape[1] == 0:
        return [0] * flat.shape[0]
    ordered = flat.sort(dim=1).values
    counts = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(dim=1)
    return [int(c) for c in counts.tolist()]


def max_distinct_values_per_channel(
    model: nn.Module,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> int:
    """Largest :func:`distinct_values_per_channel` over all prunable layers (0 if none).

    After k-bit weight quantization this is at most ``2^k``.
    """
    best = 0
    for _, m in prunable_layers(model, exclude_first_conv, exclude_classifier):
        counts = distinct_values_per_channel(m.weight)
        if counts:
            best = max(best, max(counts))
    return best
