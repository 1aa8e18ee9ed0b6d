"""Compact and distilled models as compression points: the "compressed" model of a dense one is
another, smaller architecture (DeiT-Tiny distilled beside DeiT-Base, TinyViT beside a ViT).

A study names such a point ``<dense arch>.compact-<small model>`` (a family with ``tag:
compact-{key}``, see :class:`hiddencost.study.spec.CheckpointFamily`), e.g.
``deit_base.compact-deit_tiny_distilled``: the name resolves to the small model's entry, under
the dense model's architecture, so the report pairs its runs with the dense model's. Its
weights come from wherever the small model's do (the hub, ``--checkpoint``, random), and the
load reports what sets the compression level: the small model's ``parameters`` and its forward
``flops`` per image at its input size (``torch.utils.flop_counter``: 2 per multiply-add), beside
the ``architecture``. The level is the study's: e.g. ``unit: compression_ratio`` with the dense
over compact parameter ratio (each record's ``backbone`` report holds the compact model's
parameters, the dense runs' report holds none: timm's ``num_params`` of the dense one).
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.flop_counter import FlopCounterMode

from hiddencost.model_table import BackboneEntry, table_entry
from hiddencost.weights import (
    PRIORITY_FORMAT,
    LoadedWeights,
    WeightRequest,
    register_name_resolver,
    register_weight_source,
    select_weight_source,
)

#: What joins the dense architecture and the small model in a compact point's name.
SEPARATOR = ".compact-"
FORMAT = "compact"


def compact_entry(name: str) -> BackboneEntry | None:
    """The entry of ``<arch>.compact-<small>`` (None for any other name or an unknown small
    model): the small model's network and preprocessing under the compound name."""
    arch, sep, small = name.partition(SEPARATOR)
    entry = table_entry(small) if sep and arch else None
    if entry is None:
        return None
    return dataclasses.replace(entry, name=name, checkpoint_format=FORMAT)


def _small(entry: BackboneEntry) -> BackboneEntry:
    small = table_entry(entry.name.partition(SEPARATOR)[2])
    assert small is not None  # compact_entry made it from one
    return small


@torch.no_grad()
def forward_flops(model: torch.nn.Module, input_size: int) -> int:
    """FLOPs of one forward pass of one image (2 per multiply-add)."""
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        model.eval()(torch.zeros(1, 3, input_size, input_size, device=device))
    return int(counter.get_total_flops())


class CompactWeights:
    """The small model's weights from the source that serves it, with its size measured."""

    name = FORMAT
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return request.entry.checkpoint_format == FORMAT

    def load(self, request: WeightRequest) -> LoadedWeights:
        small = _small(request.entry)
        inner = dataclasses.replace(request, entry=small)
        loaded = select_weight_source(inner).load(inner)
        report = {"architecture": small.name,
                  "parameters": sum(p.numel() for p in loaded.model.parameters()),
                  "flops": forward_flops(loaded.model, small.cfg.input_size)}
        return LoadedWeights(loaded.model, loaded.weights, report)


register_weight_source(CompactWeights(), PRIORITY_FORMAT)
register_name_resolver(compact_entry)
