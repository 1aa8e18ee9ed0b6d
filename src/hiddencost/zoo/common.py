"""Shared machinery of the compressed-checkpoint loaders: safe reading, explicit remaps, claims.

Every loader of :mod:`hiddencost.zoo` follows the same four steps:

1. **read** the file(s) with :func:`hiddencost.checkpoints.read_checkpoint_object`
   (``torch.load(weights_only=True)`` or safetensors: checkpoints are untrusted input and never
   unpickle code);
2. **remap** the format's key names onto the timm model's with an explicit, total function
   (:func:`hiddencost.checkpoints.remap_keys`: every key of the file is either mapped or listed as
   ignored with a reason; an unknown key is an error), folding masks into weights (``w <- w * m``)
   on the way;
3. **load strictly** with :func:`hiddencost.checkpoints.load_state_dict_strict`, whose error names
   the missing / unexpected / wrongly shaped keys;
4. **check the claim**: the measured sparsity (or bit-width) must equal what the format claims
   (its masks, its recipe, the tag); a mismatch is a :class:`~hiddencost.errors.HiddenCostError`
   naming the offending keys;
5. **report** what it measured: :meth:`ZooLoadReport.measure` counts the zeros of the loaded
   model, so a loader called directly reports the same as through the registry.

Every loader has the signature of :class:`ZooLoader`.

Sparsity is always measured as in :mod:`hiddencost.compression.measure`: the fraction of exactly
zero weights over the ``nn.Conv2d`` / ``nn.Linear`` weights (``n_zero / n``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from hiddencost.checkpoints import BN_TENSORS, shorten
from hiddencost.compression.measure import layer_sparsities, measure_sparsity, sparsity_counts
from hiddencost.errors import HiddenCostError

__all__ = [
    "DEFAULT_SPARSITY_TOLERANCE",
    "ZooFamily",
    "ZooLoadReport",
    "ZooLoader",
    "ZooSpec",
    "check_mask_tensor",
    "check_sparsity_claim",
    "fold_masks",
    "unwrap_ist_layers",
]

#: Largest accepted ``|measured - claimed|`` for a sparsity a *tag* claims (e.g. ``-s90``):
#: published "90%" models differ in which layers they count (first conv, classifier), which moves
#: the overall figure by well under one percentage point on ResNets.
DEFAULT_SPARSITY_TOLERANCE = 0.02
#: Largest accepted difference between the sparsity of a file's own masks and the weights once
#: masked (extra exact zeros among kept weights are possible but rare).
MASK_TOLERANCE = 0.005


@dataclass
class ZooLoadReport:
    """What a compressed-checkpoint loader read, remapped and verified.

    ``claimed_sparsity`` is the figure the format claims (masks, recipe or tag; None for a
    quantized format), ``measured_sparsity`` the fraction of zero conv/linear weights after
    loading, ``claim_source`` where the claim came from. For quantized formats ``weight_bits`` /
    ``activation_bits`` are the claimed and verified bit-widths.
    """

    name: str
    format: str
    files: list[str]
    measured_sparsity: float
    claimed_sparsity: float | None = None
    claim_source: str = ""
    weight_bits: int | None = None
    activation_bits: int | None = None
    n_remapped_keys: int = 0
    ignored_keys: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def measure(cls, model: nn.Module, **fields: Any) -> ZooLoadReport:
        """The report of a loaded ``model``: ``fields`` plus its measured sparsity."""
        return cls(measured_sparsity=measure_sparsity(model), **fields)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return asdict(self)


@dataclass(frozen=True)
class ZooFamily:
    """One checkpoint format, the tags that name it and the loader that reads it."""

    format: str
    tag_pattern: str  # re.fullmatch on the tag; groups: level, s, w, a
    archs: tuple[str, ...] | None  # None: any registered arch
    example: str
    description: str
    loader: ZooLoader
    url: str = ""  # public page listing the published files ("" if none)
    reads_mask: bool = False  # the loader takes a mask file (lottery tickets)


@dataclass(frozen=True)
class ZooSpec:
    """A parsed zoo name: architecture, family and what the tag claims."""

    name: str
    arch: str
    tag: str
    family: ZooFamily
    claimed_sparsity: float | None = None
    weight_bits: int | None = None
    activation_bits: int | None = None


class ZooLoader(Protocol):
    """Load one format's file into ``model`` (built for the zoo name's architecture) strictly,
    check the format's own claim and return the measured report. ``spec`` is the parsed zoo name
    (None when called directly: the format's defaults); ``mask`` overrides where a format's mask
    file is (the lottery-ticket formats; the others have none and must be given None)."""

    def __call__(self, model: nn.Module, path: str | Path, spec: ZooSpec | None = None,
                 mask: str | Path | None = None) -> ZooLoadReport: ...


def check_mask_tensor(key: str, mask: torch.Tensor, weight_shape: torch.Size, source: str) -> None:
    """A mask must have its weight's shape and hold only 0 and 1 (error names ``key``)."""
    if tuple(mask.shape) != tuple(weight_shape):
        raise HiddenCostError(
            f"mask {key} in {source} has shape {tuple(mask.shape)}, its weight "
            f"{tuple(weight_shape)}"
        )
    if mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise HiddenCostError(f"mask {key} in {source} holds values other than 0 and 1")


def mask_sparsity(masks: Mapping[str, torch.Tensor]) -> float:
    """Fraction of zeros over all mask entries, ``sum(m == 0) / sum(numel)`` (0 for no masks)."""
    total = sum(m.numel() for m in masks.values())
    zeros = sum(int((m == 0).sum()) for m in masks.values())
    return zeros / total if total else 0.0


def measured_sparsity_of(
    state: Mapping[str, torch.Tensor], keys: Iterable[str]
) -> float:
    """Fraction of exact zeros over the tensors ``state[k]`` for ``k`` in ``keys``."""
    total = 0
    zeros = 0
    for k in keys:
        t = state[k]
        total += t.numel()
        zeros += t.numel() - int(torch.count_nonzero(t))
    return zeros / total if total else 0.0


def check_mask_claim(
    state: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], source: str
) -> float:
    """After ``w <- w * m``: the weights' zero fraction must equal the masks' (within
    :data:`MASK_TOLERANCE`); returns the masks' sparsity. The error names the worst keys."""
    claimed = mask_sparsity(masks)
    measured = measured_sparsity_of(state, masks.keys())
    if abs(measured - claimed) > MASK_TOLERANCE:
        worst = sorted(
            masks,
            key=lambda k: -abs(
                measured_sparsity_of(state, [k]) - mask_sparsity({k: masks[k]})
            ),
        )
        raise HiddenCostError(
            f"checkpoint {source}: masked weights are {measured:.4f} sparse but the masks claim "
            f"{claimed:.4f}; offending keys: {shorten(worst)}"
        )
    return claimed


def check_sparsity_claim(
    model: nn.Module,
    claimed: float,
    source: str,
    what: str,
    tolerance: float = DEFAULT_SPARSITY_TOLERANCE,
) -> float:
    """Measure the model's sparsity and compare it with ``claimed``; return the measurement.

    ``|measured - claimed| > tolerance`` raises :class:`HiddenCostError` naming ``what`` made the
    claim and the layers furthest from it (the offending keys).
    """
    zeros, total = sparsity_counts(model)
    measured = zeros / total if total else 0.0
    if abs(measured - claimed) > tolerance:
        per_layer = layer_sparsities(model)
        worst = sorted(per_layer, key=lambda k: -abs(per_layer[k] - claimed))
        shown = [f"{k}.weight ({per_layer[k]:.2f})" for k in worst]
        raise HiddenCostError(
            f"checkpoint {source}: measured sparsity {measured:.4f} does not match the "
            f"{claimed:.4f} that {what} claims (tolerance {tolerance}); layers furthest from the "
            f"claim: {shorten(shown, 4)}"
        )
    return measured


def fold_masks(
    state: dict[str, torch.Tensor], masks: Mapping[str, torch.Tensor], source: str
) -> None:
    """``state[k] <- state[k] * masks[k]`` in place, after checking shape and 0/1 values.

    A mask for a tensor the state does not hold is an error naming it.
    """
    orphans = [k for k in masks if k not in state]
    if orphans:
        raise HiddenCostError(
            f"checkpoint {source} has masks for tensors it does not hold: {shorten(orphans)}"
        )
    for key, mask in masks.items():
        check_mask_tensor(key, mask, state[key].shape, source)
        state[key] = state[key] * mask.to(dtype=state[key].dtype)


def unwrap_ist_layers(
    state: Mapping[str, torch.Tensor],
) -> tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, torch.Tensor]]:
    """Undo IST-DASLab's ``WrappedLayer``: ``P._layer.weight`` -> ``P.weight`` (same for bias),
    ``P._weight_mask`` / ``P._bias_mask`` -> masks for ``P.weight`` / ``P.bias``.

    Returns ``(state, masks)``; keys without the wrapper pass through unchanged.
    """
    plain: OrderedDict[str, torch.Tensor] = OrderedDict()
    masks: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        if "._layer." in key:
            plain[key.replace("._layer.", ".")] = value
        elif key.endswith("._weight_mask"):
            masks[key.removesuffix("._weight_mask") + ".weight"] = value
        elif key.endswith("._bias_mask"):
            masks[key.removesuffix("._bias_mask") + ".bias"] = value
        else:
            plain[key] = value
    return plain, masks


def resnet_rules(stem: str, block: str, conv: str, bn: str, shortcut: str, fc: str,
                 layer: str) -> list[tuple[str, str]]:
    """``(regex, replacement)`` rules from another ResNet layout to torchvision / timm names.

    ``stem`` is the stem module (its ``.conv`` and ``.bn``), ``block`` a regex whose groups 1 and
    2 are the stage and the block, ``conv`` / ``bn`` regexes (one group: the conv index) of a
    block's convolution weights and BatchNorms, ``shortcut`` the projection module (its ``.conv``
    and ``.bn``), ``fc`` the classifier; ``layer`` replaces the stage (``r"layer\1"``).
    """
    return [
        (rf"{stem}\.conv\.weight", r"conv1.weight"),
        (rf"{stem}\.bn\.{BN_TENSORS}", r"bn1.\1"),
        (rf"{block}\.{conv}", rf"{layer}.\2.conv\3.weight"),
        (rf"{block}\.{bn}\.{BN_TENSORS}", rf"{layer}.\2.bn\3.\4"),
        (rf"{block}\.{shortcut}\.conv\.weight", rf"{layer}.\2.downsample.0.weight"),
        (rf"{block}\.{shortcut}\.bn\.{BN_TENSORS}", rf"{layer}.\2.downsample.1.\3"),
        (rf"{fc}\.(weight|bias)", r"fc.\1"),
    ]
