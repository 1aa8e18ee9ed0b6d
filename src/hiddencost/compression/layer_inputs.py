"""What each prunable layer's weight multiplies: its inputs as the rows of an im2col matrix, and
their statistics over calibration images (for activation-aware pruning and second-order
rounding).

A layer's weight, flattened per output row, is ``W`` (d_out, d) with ``d = c_in / groups · k_h
· k_w`` (a Linear layer: ``d = in_features``); its input patches are the rows ``x`` (length d)
with ``y = W x`` for every output position (a Linear layer: every token). Convolution patches
come from the layer's own forward with a one-hot weight (``torch.func.functional_call``), so
any padding rule of the layer (timm's "same" padding included) is the patches' too, and a
grouped layer gives one patch matrix per group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call


def row_width(module: nn.Module) -> int:
    """``d``: the inputs one output of ``module`` (Linear or Conv2d) reads."""
    w = module.weight
    return w.shape[1] if w.dim() == 2 else w[0].numel()


def groups_of(module: nn.Module) -> int:
    """The convolution's groups (1 for a Linear layer)."""
    return getattr(module, "groups", 1)


def patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(groups, rows, d): the input patches of ``module`` for its input batch ``x``."""
    if isinstance(module, nn.Linear):
        return x.reshape(1, -1, x.shape[-1])
    g, d = groups_of(module), row_width(module)
    cin_g = module.weight.shape[1]
    one_hot = torch.eye(d, dtype=x.dtype, device=x.device).view(d, cin_g, *module.weight.shape[2:])
    params = {"weight": one_hot.repeat(g, 1, 1, 1)}
    if module.bias is not None:
        params["bias"] = torch.zeros(g * d, dtype=x.dtype, device=x.device)
    out = functional_call(module, params, (x,))  # (B, g·d, H', W')
    b = out.shape[0]
    return out.reshape(b, g, d, -1).permute(1, 0, 3, 2).reshape(g, -1, d)


@dataclass
class InputStats:
    """Sums over a layer's calibration patches, per group: ``sq`` (g, d) of x², ``gram`` (g, d,
    d) of x xᵀ (when asked for), and the number of patch rows ``n``. float32, as the
    references keep them."""

    sq: torch.Tensor
    gram: torch.Tensor | None
    n: int = 0

    def add(self, p: torch.Tensor) -> None:
        self.sq += p.square().sum(dim=1)
        if self.gram is not None:
            self.gram += p.transpose(1, 2) @ p
        self.n += p.shape[1]


@torch.no_grad()
def input_statistics(model: nn.Module, layers: Iterable[tuple[str, nn.Module]],
                     images: torch.Tensor, gram: bool = False, batch_size: int = 16
                     ) -> dict[str, InputStats]:
    """Run ``model`` over ``images`` (normalised inputs, in fp32 batches) with a hook on every
    layer of ``layers`` and return each layer's :class:`InputStats`."""
    stats: dict[str, InputStats] = {}
    handles = []

    busy: set[int] = set()  # patches() calls the layer itself: not a calibration input

    def hook(name: str, module: nn.Module) -> Callable[..., None]:
        def record(_: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            if id(module) in busy:
                return
            busy.add(id(module))
            try:
                p = patches(module, args[0].float())
            finally:
                busy.discard(id(module))
            if name not in stats:
                g, d = p.shape[0], p.shape[2]
                stats[name] = InputStats(
                    torch.zeros(g, d, device=p.device),
                    torch.zeros(g, d, d, device=p.device) if gram else None)
            stats[name].add(p)
        return record

    for name, module in layers:
        handles.append(module.register_forward_pre_hook(hook(name, module)))
    device = next(model.parameters()).device
    try:
        with torch.autocast(device.type, enabled=False):  # statistics in fp32
            for chunk in images.split(batch_size):
                model(chunk.to(device))
    finally:
        for h in handles:
            h.remove()
    return stats
