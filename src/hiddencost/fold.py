"""Fold a frozen backbone's BatchNorm into the convolution before it: same function, fewer ops.

In eval mode a BatchNorm is a fixed per-channel affine map of the conv output z = W∗x + b:

    BN(z) = γ · (z − μ) / √(σ² + ε) + β = s · z + (β − s·μ),   s = γ / √(σ² + ε),

so conv → BN equals one conv with W′ = s·W (per output channel) and b′ = s·(b − μ) + β. On a
CPU the BatchNorm operators are memory-bound and cost about as much as the convolutions of
EfficientNet-Lite0's forward + backward pass, so folding them roughly halves VP training time.
Zeros stay zeros and a per-channel rescaling keeps at most 2^k distinct values per output
channel, so pruned and k-bit models stay what they were (measure them before folding anyway).

Pairs are found by data flow, not by module names (torch.fx cannot trace timm's models): one
forward pass on an example input records which conv produced each BatchNorm's input. The
folded model is then checked against the original on that input, and the fold is undone if
they disagree (e.g. a conv output that also feeds something else). No library does this for
arbitrary eager models (torch.ao's ``fuse_modules`` needs module names and exact types, and
drops timm's fused BatchNorm + activation), hence this module.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

_BN_TYPES = (nn.BatchNorm2d,)


def _replacement(bn: nn.BatchNorm2d) -> nn.Module | None:
    """What stays of a BatchNorm once folded: nothing, or timm's drop + activation."""
    if type(bn) is nn.BatchNorm2d:
        return nn.Identity()
    if type(bn).__name__ == "BatchNormAct2d" and hasattr(bn, "act") and hasattr(bn, "drop"):
        return nn.Sequential(bn.drop, bn.act)  # timm: act(drop(bn(x)))
    return None  # an unknown subclass may do more than normalise


def _pairs(model: nn.Module, example: torch.Tensor) -> tuple[list, torch.Tensor]:
    """(conv, bn) pairs where bn's input is exactly the output of conv; and the model output."""
    produced: dict[int, nn.Conv2d] = {}
    keep: list[torch.Tensor] = []  # holds outputs alive so ids are not reused
    calls: dict[int, int] = {}
    found: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []

    def on_conv(mod, _inp, out):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        produced[id(out)] = mod
        keep.append(out)

    def on_bn(mod, inp):
        calls[id(mod)] = calls.get(id(mod), 0) + 1
        conv = produced.get(id(inp[0]))
        if conv is not None:
            found.append((conv, mod))

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(on_conv))
        elif isinstance(m, _BN_TYPES):
            handles.append(m.register_forward_pre_hook(on_bn))
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in handles:
            h.remove()
    once = [(c, b) for c, b in found if calls[id(c)] == 1 and calls[id(b)] == 1]
    return once, out


def _parents(model: nn.Module) -> dict[int, tuple[nn.Module, str]]:
    return {id(child): (parent, name)
            for parent in model.modules() for name, child in parent.named_children()}


def fold_batchnorm(model: nn.Module, example: torch.Tensor, rtol: float = 1e-3) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d into it, in place.

    ``model`` must be frozen (eval mode, no gradients needed for its weights); ``example`` is
    one small input batch on the model's device. Returns the number of folded pairs; 0 (and a
    warning) if the folded model's output on ``example`` differs from the original's by more
    than ``rtol`` of its largest magnitude, in which case the model is left as it was.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (call freeze first)")
    pairs, before = _pairs(model, example)
    parents = _parents(model)
    undo = []
    for conv, bn in pairs:
        rest = _replacement(bn)
        if rest is None or not bn.track_running_stats or bn.running_var is None:
            continue
        with torch.no_grad():
            scale = bn.running_var.add(bn.eps).rsqrt()
            if bn.affine:
                scale = scale * bn.weight
            shift = -bn.running_mean * scale + (bn.bias if bn.affine else 0.0)
            old_w = conv.weight.detach().clone()
            old_b = None if conv.bias is None else conv.bias.detach().clone()
            new_w = old_w * scale.view(-1, *([1] * (old_w.dim() - 1)))
            new_b = shift + (old_b * scale if old_b is not None else 0.0)
        parent, name = parents[id(bn)]
        undo.append((conv, old_w, old_b, parent, name, bn))
        conv.weight = nn.Parameter(new_w.to(old_w.dtype), requires_grad=False)
        conv.bias = nn.Parameter(new_b.to(old_w.dtype), requires_grad=False)
        setattr(parent, name, rest)
    if not undo:
        return 0
    with torch.no_grad():
        after = model(example)
    err = (after.float() - before.float()).abs().max().item()
    tol = rtol * max(before.float().abs().max().item(), 1.0)
    if not err <= tol:
        for conv, old_w, old_b, parent, name, bn in reversed(undo):
            conv.weight = nn.Parameter(old_w, requires_grad=False)
            conv.bias = None if old_b is None else nn.Parameter(old_b, requires_grad=False)
            setattr(parent, name, bn)
        warnings.warn(f"BatchNorm folding changed the output by {err:.3g} (> {tol:.3g}); "
                      "left unfolded", stacklevel=2)
        return 0
    return len(undo)
