"""Low-rank factorisation: Linear layers and 1×1 convolutions replaced by two thinner factors
from the truncated SVD of their weight.

A layer ``W`` (d_out, d_in) becomes ``B A`` with ``r = max(1, round(ρ · min(d_in, d_out)))`` for
the rank ratio ρ: ``W = U S Vᵀ``, ``A = √S_r V_rᵀ`` (r, d_in), ``B = U_r √S_r`` (d_out, r), the
best rank-r approximation in Frobenius norm (Eckart–Young). A Linear layer becomes ``Linear(d_in,
r, bias=False)`` then ``Linear(r, d_out)`` with the original bias; a 1×1 convolution the same as
two 1×1 convolutions (stride on the first). Layers the factors would not make smaller
(``r (d_in + d_out) ≥ d_in d_out``), grouped convolutions and k×k convolutions are left as
they are and listed.
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.compression.pruning import prunable_layers

__all__ = ["factor_rank", "lowrank_factorize"]


def factor_rank(ratio: float, d_in: int, d_out: int) -> int:
    """``max(1, round(ratio · min(d_in, d_out)))``."""
    return max(1, round(ratio * min(d_in, d_out)))


def _factors(weight: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = s[:r].sqrt()
    return (root[:, None] * vh[:r]).to(weight.dtype), (u[:, :r] * root).to(weight.dtype)


def _replacement(module: nn.Module, r: int) -> nn.Module:
    w = module.weight.detach()
    if isinstance(module, nn.Linear):
        a, b = _factors(w, r)
        first = nn.Linear(module.in_features, r, bias=False)
        second = nn.Linear(r, module.out_features, bias=module.bias is not None)
    else:
        a, b = _factors(w.reshape(w.shape[0], -1), r)
        first = nn.Conv2d(module.in_channels, r, 1, stride=module.stride, bias=False)
        second = nn.Conv2d(r, module.out_channels, 1, bias=module.bias is not None)
        a, b = a[:, :, None, None], b[:, :, None, None]
    with torch.no_grad():
        first.weight.copy_(a)
        second.weight.copy_(b)
        if module.bias is not None:
            second.bias.copy_(module.bias)
    return nn.Sequential(first, second).to(device=w.device)


@torch.no_grad()
def lowrank_factorize(model: nn.Module, ratio: float, exclude_first_conv: bool = False,
                      exclude_classifier: bool = False) -> list[str]:
    """Replace every in-scope Linear / 1×1 convolution by its rank-r factors, in place; returns
    the layers left as they were, each with why."""
    skipped = []
    for name, module in prunable_layers(model, exclude_first_conv, exclude_classifier):
        if isinstance(module, nn.Conv2d) and (module.kernel_size != (1, 1) or module.groups != 1
                                              or module.padding not in ((0, 0), 0)):
            skipped.append(f"{name} (not a 1×1 convolution)")
            continue
        d_out, d_in = module.weight.shape[0], module.weight[0].numel()
        r = factor_rank(ratio, d_in, d_out)
        if r * (d_in + d_out) >= d_in * d_out:
            skipped.append(f"{name} (rank {r} factors would not be smaller)")
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, _replacement(module, r))
    return skipped
