"""Unstructured weight pruning of a frozen backbone to an exact target sparsity.

Prunable set
------------
The *prunable layers* of a model are all of its ``nn.Conv2d`` and ``nn.Linear`` modules
(subclasses included, e.g. timm's ``Conv2dSame``), in the order of ``model.named_modules()``.
Only their ``weight`` tensors are pruned; biases, normalisation layers (BatchNorm, LayerNorm),
embeddings and raw parameters (e.g. ``nn.MultiheadAttention.in_proj_weight``, position
embeddings, class tokens) are never touched. Two optional exclusions:

- ``exclude_first_conv``: the first ``nn.Conv2d`` in module order (the stem), and
- ``exclude_classifier``: the last ``nn.Linear`` in module order (the ImageNet head).

The same set is used by weight quantization (:mod:`hiddencost.compression.quantization`) and by
measurement (:mod:`hiddencost.compression.measure`), so a requested sparsity and the measured one
refer to the same weights.

Exact counts
------------
With ``n`` weights in scope, exactly ``k = round(sparsity * n)`` of them are set to zero
(Python's :func:`round`, i.e. halves go to the even integer):

- ``scope="global"``: ``n`` is the total over all layers in scope and the ``k`` weights are chosen
  over their union (layers end up with different sparsities);
- ``scope="layer"``: every layer ``l`` gets exactly ``round(sparsity * n_l)`` zeros.

Magnitude pruning zeroes the ``k`` weights of smallest ``|w|`` (L1 criterion, via
``torch.nn.utils.prune``; ties are broken by :func:`torch.topk`). Random pruning zeroes a uniformly
random ``k``-subset drawn from a private :class:`torch.Generator`, so it is deterministic for a seed
and leaves the global RNG state untouched. Weights that are already zero count as candidates like
any other, so pruning a model that already holds zeros can leave more than ``k`` zeros.

After pruning the reparametrisation is removed (``prune.remove``): the model holds plain zeroed
weight tensors, no masks, buffers or hooks, so it stays deep-copyable, serialisable with its
original state-dict keys and convertible to ``channels_last``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

from hiddencost.errors import HiddenCostError

__all__ = ["Scope", "magnitude_prune", "prunable_layers", "random_prune"]

Scope = Literal["global", "layer"]

_PRUNABLE_TYPES = (nn.Conv2d, nn.Linear)


def prunable_layers(
    model: nn.Module,
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> list[tuple[str, nn.Module]]:
    """Return ``(qualified_name, module)`` for every prunable layer, in module order.

    Prunable layers are the ``nn.Conv2d`` and ``nn.Linear`` modules (see the module docstring).
    ``exclude_first_conv`` drops the first ``nn.Conv2d``; ``exclude_classifier`` drops the last
    ``nn.Linear``. Layers wrapped by activation quantization are still found (the wrapper holds the
    original layer as a child).
    """
    layers = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _PRUNABLE_TYPES)
    ]
    excluded: set[int] = set()
    if exclude_first_conv:
        convs = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Conv2d)]
        if convs:
            excluded.add(convs[0])
    if exclude_classifier:
        linears = [i for i, (_, m) in enumerate(layers) if isinstance(m, nn.Linear)]
        if linears:
            excluded.add(linears[-1])
    return [layer for i, layer in enumerate(layers) if i not in excluded]


def _check_sparsity(sparsity: float) -> float:
    try:
        value = float(sparsity)
    except (TypeError, ValueError):
        raise HiddenCostError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not 0.0 <= value < 1.0:
        raise HiddenCostError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return value


def _check_scope(scope: str) -> None:
    if scope not in ("global", "layer"):
        raise HiddenCostError(f"pruning scope must be 'global' or 'layer', got {scope!r}")


def _layers_in_scope(
    model: nn.Module, exclude_first_conv: bool, exclude_classifier: bool
) -> list[tuple[str, nn.Module]]:
    layers = prunable_layers(model, exclude_first_conv, exclude_classifier)
    if not layers:
        raise HiddenCostError(
            f"{type(model).__name__} has no prunable layers (nn.Conv2d / nn.Linear) in scope"
        )
    return layers


def magnitude_prune(
    model: nn.Module,
    sparsity: float,
    scope: Scope = "global",
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> nn.Module:
    """Zero the ``round(sparsity * n)`` smallest-magnitude weights, in place; return ``model``.

    ``scope="global"`` ranks all in-scope weights together; ``scope="layer"`` prunes each layer to
    ``round(sparsity * n_l)`` zeros. Uses ``torch.nn.utils.prune`` (``L1Unstructured``) with an
    integer amount, then removes the reparametrisation so the weights are plain tensors.
    Raises :class:`HiddenCostError` for a sparsity outside ``[0, 1)`` or an unknown scope.
    """
    sparsity = _check_sparsity(sparsity)
    _check_scope(scope)
    layers = _layers_in_scope(model, exclude_first_conv, exclude_classifier)
    if sparsity == 0.0:
        return model
    # torch.nn.utils.prune flattens weights with .view(-1), which fails on channels_last
    # tensors: prune a contiguous copy and restore each weight's memory format afterwards.
    formats = [_memory_format(m.weight) for _, m in layers]
    with torch.no_grad():
        for _, m in layers:
            m.weight.data = m.weight.data.contiguous()
        if scope == "global":
            n_total = sum(m.weight.numel() for _, m in layers)
            prune.global_unstructured(
                [(m, "weight") for _, m in layers],
                pruning_method=prune.L1Unstructured,
                amount=round(sparsity * n_total),
            )
        else:
            for _, m in layers:
                prune.l1_unstructured(m, "weight", amount=round(sparsity * m.weight.numel()))
        for (_, m), fmt in zip(layers, formats, strict=True):
            prune.remove(m, "weight")
            m.weight.data = m.weight.data.contiguous(memory_format=fmt)
    return model


def random_prune(
    model: nn.Module,
    sparsity: float,
    seed: int,
    scope: Scope = "global",
    exclude_first_conv: bool = False,
    exclude_classifier: bool = False,
) -> nn.Module:
    """Zero a uniformly random set of exactly ``round(sparsity * n)`` weights, in place.

    ``scope="global"`` draws one random subset over the union of in-scope weights;
    ``scope="layer"`` draws ``round(sparsity * n_l)`` per layer, layers in module order. The draw
    comes from a private CPU :class:`torch.Generator` seeded with ``seed``: identical for a seed,
    independent of the device, and the global RNG state is not consumed. Returns ``model``.
    """
    sparsity = _check_sparsity(sparsity)
    _check_scope(scope)
    layers = _layers_in_scope(model, exclude_first_conv, exclude_classifier)
    if sparsity == 0.0:
        return model
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    sizes = [m.weight.numel() for _, m in layers]
    if scope == "global":
        n_total = sum(sizes)
        keep = torch.ones(n_total, dtype=torch.bool)
        keep[torch.randperm(n_total, generator=gen)[: round(sparsity * n_total)]] = False
        keeps = list(torch.split(keep, sizes))
    else:
        keeps = []
        for n in sizes:
            keep = torch.ones(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=gen)[: round(sparsity * n)]] = False
            keeps.append(keep)
    with torch.no_grad():
        for (_, m), keep in zip(layers, keeps, strict=True):
            w = m.weight
            # keep is in logical (contiguous) index order; reshape then broadcast-multiply,
            # which respects any memory format of w.
            w.mul_(keep.reshape(w.shape).to(device=w.device, dtype=w.dtype))
    return model


def _memory_format(t: torch.Tensor) -> torch.memory_format:
    if (
        t.dim() == 4
        and not t.is_contiguous()
        and t.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format
