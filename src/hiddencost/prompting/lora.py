"""LoRA (Hu et al., ICLR'22) on the Linear and Conv2d layers of a frozen backbone.

A targeted layer ``y = W x + b`` becomes ``y = W x + b + (α/r) · B A x`` with ``A`` (r × d_in)
and ``B`` (d_out × r) trainable and ``W``, ``b`` frozen. For ``nn.Conv2d`` (groups = 1) ``A`` is
a convolution with the layer's kernel, stride, padding and dilation into ``r`` channels and ``B``
a 1×1 convolution back to ``d_out``, so ``d_in = c_in · k_h · k_w`` and the adapter holds
``r · (d_in + d_out)`` parameters, as for a Linear layer. ``A`` starts Kaiming-uniform (a = √5,
PyTorch's Linear default, seeded), ``B`` at zero, so training starts from the frozen model
(the paper's initialisation).

Unmerged (the default), the base weights are never touched, so a pruned or quantized backbone
keeps its compression exactly. :func:`merge_lora` folds ``(α/r) · B A`` into ``W``: a dense
update, which fills a pruned weight's zeros and moves a quantized one off its grid.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call


class LoRALinear(nn.Module):
    """``base(x) + (α/r) · x Aᵀ Bᵀ`` around a frozen ``nn.Linear``."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, rank))
        _init(self.lora_a, self.lora_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.lora_a.T) @ self.lora_b.T

    def delta(self) -> torch.Tensor:
        """The update ``(α/r) · B A`` in the base weight's shape."""
        return self.scale * self.lora_b @ self.lora_a


class LoRAConv2d(nn.Module):
    """``base(x) + conv(x; (α/r) · B A)`` around a frozen ``nn.Conv2d`` (groups = 1): the update
    is applied by the base layer's own forward with the update as its weight (and a zero
    bias), so any padding rule of the base (timm's "same" padding included) is the adapter's
    too."""

    def __init__(self, base: nn.Conv2d, rank: int, alpha: float) -> None:
        super().__init__()
        self.base, self.scale = base, alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_channels, *base.kernel_size))
        self.lora_b = nn.Parameter(torch.empty(base.out_channels, rank))
        _init(self.lora_a, self.lora_b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = {"weight": self.delta()}
        if self.base.bias is not None:
            update["bias"] = torch.zeros_like(self.base.bias)
        return self.base(x) + functional_call(self.base, update, (x,))

    def delta(self) -> torch.Tensor:
        """The update ``(α/r) · B A`` in the base weight's shape (c_out, c_in, k_h, k_w)."""
        return (self.scale * self.lora_b @ self.lora_a.flatten(1)).reshape(
            self.base.weight.shape)


LoRALayer = LoRALinear | LoRAConv2d


def _init(a: torch.Tensor, b: torch.Tensor) -> None:
    with torch.no_grad():
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))  # fan-in: d_in (c_in · k_h · k_w)
        nn.init.zeros_(b)


def lora_targets(model: nn.Module, exclude: set[int] | None = None
                 ) -> tuple[list[str], list[str]]:
    """The qualified names of the layers LoRA adapts (every ``nn.Linear`` and every ``nn.Conv2d``
    with groups = 1, but the modules whose ``id`` is in ``exclude``) and of those it skips
    (grouped and depthwise convolutions: a low-rank update of a per-channel filter is not
    LoRA's)."""
    exclude = exclude or set()
    targets, skipped = [], []
    for name, module in model.named_modules():
        if id(module) in exclude or not isinstance(module, nn.Linear | nn.Conv2d):
            continue
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            skipped.append(name)
        else:
            targets.append(name)
    return targets, skipped


def add_lora(model: nn.Module, names: list[str], rank: int, alpha: float,
             seed: int) -> list[LoRALayer]:
    """Wrap the named layers in adapters (initialised from a generator seeded with ``seed``,
    the global RNG left as it was); returns the adapters in order."""
    adapters: list[LoRALayer] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in names:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            base = getattr(parent, child)
            wrapper = (LoRALinear if isinstance(base, nn.Linear) else LoRAConv2d)(
                base, rank, alpha).to(device=base.weight.device)
            setattr(parent, child, wrapper)
            adapters.append(wrapper)
    return adapters


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every adapter into its base weight and put the base layer back; returns how many."""
    merged = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, LoRALinear | LoRAConv2d):
            module.base.weight += module.delta().to(module.base.weight.dtype)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.base)
            merged += 1
    return merged
