"""Activation-aware and semi-structured pruning: Wanda and N:M sparsity.

**Wanda** (Sun et al., "A Simple and Effective Pruning Approach for Large Language Models",
ICLR'24; read from ``locuslab/wanda``): a weight's score is ``S_ij = |W_ij| · ‖X_j‖₂``, its
magnitude times the l2 norm of its input feature over the calibration inputs (the patch
columns of :mod:`hiddencost.compression.layer_inputs`), and each output row loses its
``round(s · d)`` lowest-scored weights (the paper's per-output comparison group). The
calibration inputs are the run's own training images through the run's input transform, never
the test split. Every layer's norms come from one pass of the uncompressed model (the reference
prunes a transformer block at a time, feeding each block the outputs of the pruned blocks before
it: this is its one-pass variant).

**N:M** (e.g. 2:4, NVIDIA's Ampere sparse tensor cores): in every group of M consecutive
weights of an output row (the flattened ``(c_in, k_h, k_w)`` order: for Linear and 1×1
convolutions, M consecutive input channels), the N with the highest score are kept, by
magnitude or by Wanda's score. Layers that cannot carry the pattern are left dense and listed:
the first convolution (the stem), grouped and depthwise convolutions, and layers whose row width
is not a multiple of M.
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.compression.layer_inputs import input_statistics, row_width
from hiddencost.compression.pruning import prunable_layers
from hiddencost.errors import HiddenCostError

__all__ = ["nm_eligible", "nm_mask", "nm_prune", "wanda_prune", "wanda_scores"]


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """``|W| · ‖X_j‖`` as (d_out, d): ``norms`` (groups, d) of the layer's input features; output
    row o reads group ``o // (d_out / groups)``."""
    w = weight.detach().reshape(weight.shape[0], -1).abs().double()
    per_row = norms.repeat_interleave(w.shape[0] // norms.shape[0], dim=0)
    return w * per_row.to(w.device)


def _row_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask (d_out, d) dropping the ``round(sparsity·d)`` lowest scores of every row."""
    k = round(sparsity * scores.shape[1])
    keep = torch.ones_like(scores, dtype=torch.bool)
    if k:
        keep.scatter_(1, scores.topk(k, dim=1, largest=False).indices, False)
    return keep


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask (d_out, d) keeping the ``n`` highest scores of every ``m`` consecutive
    weights of a row (``d`` a multiple of ``m``; ties: the earlier position)."""
    rows, d = scores.shape
    groups = scores.reshape(rows, d // m, m)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(2, groups.topk(n, dim=2).indices, True)
    return keep.reshape(rows, d)


def nm_eligible(model: nn.Module, m: int, exclude_classifier: bool = False
                ) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    """The layers that take an N:M pattern and the names of those left dense, each with why."""
    layers = prunable_layers(model, exclude_classifier=exclude_classifier)
    first_conv = next((name for name, mod in layers if isinstance(mod, nn.Conv2d)), None)
    eligible, skipped = [], []
    for name, module in layers:
        if name == first_conv:
            skipped.append(f"{name} (the stem)")
        elif getattr(module, "groups", 1) != 1:
            skipped.append(f"{name} (grouped or depthwise convolution)")
        elif row_width(module) % m:
            skipped.append(f"{name} (row width {row_width(module)} is not a multiple of {m})")
        else:
            eligible.append((name, module))
    return eligible, skipped


def _apply(module: nn.Module, keep: torch.Tensor) -> None:
    w = module.weight
    w.mul_(keep.reshape(w.shape).to(device=w.device, dtype=w.dtype))


def _norms(model: nn.Module, layers: list[tuple[str, nn.Module]],
           images: torch.Tensor | None) -> dict[str, torch.Tensor]:
    if images is None or not len(images):
        raise HiddenCostError("activation-aware pruning needs calibration images")
    stats = input_statistics(model, layers, images)
    return {name: s.sq.sqrt() for name, s in stats.items()}


@torch.no_grad()
def wanda_prune(model: nn.Module, sparsity: float, images: torch.Tensor | None,
                exclude_first_conv: bool = False, exclude_classifier: bool = False) -> None:
    """Prune every in-scope layer's rows to ``sparsity`` by Wanda's score (see the module)."""
    layers = prunable_layers(model, exclude_first_conv, exclude_classifier)
    norms = _norms(model, layers, images)
    for name, module in layers:
        _apply(module, _row_mask(wanda_scores(module.weight, norms[name]), sparsity))


@torch.no_grad()
def nm_prune(model: nn.Module, n: int, m: int, score: str, images: torch.Tensor | None,
             exclude_classifier: bool = False) -> list[str]:
    """Apply the N:M pattern to every eligible layer, scored by ``magnitude`` or ``wanda``;
    returns the layers left dense (see :func:`nm_eligible`)."""
    eligible, skipped = nm_eligible(model, m, exclude_classifier)
    norms = _norms(model, eligible, images) if score == "wanda" else {}
    for name, module in eligible:
        scores = (wanda_scores(module.weight, norms[name]) if score == "wanda" else
                  module.weight.detach().reshape(module.weight.shape[0], -1).abs())
        _apply(module, nm_mask(scores, n, m))
    return skipped
