"""UPop checkpoints (Shi et al., ICML 2023): structurally pruned CLIP, physically smaller.

A UPop file holds, under ``model``, a CLIP state dict in OpenAI's key layout whose blocks each
have their own MLP hidden width m (``mlp.c_fc.weight`` (m, D), ``mlp.c_proj.weight`` (D, m))
and attention width h·d′ (``attn.in_proj_weight`` (3·h·d′, D), ``attn.out_proj.weight``
(D, h·d′)), next to what only its training used. Those keys are dropped, each by a rule of
:data:`DROPPED` (nothing else is); every block's widths are read from the shapes; the model is
built with exactly those widths (:mod:`hiddencost.clip.narrow`) and the kept keys are loaded
**strictly**: a file whose shapes do not fit is refused with the keys named. (UPop's own loader
uses ``strict=False``.) A plain OpenAI-layout CLIP state dict is the case where every width is
full, so any CLIP checkpoint file goes through this source.

The report gives the parameters of the inference model (both towers), those of the dense model
of the same config, and UPop's own count, which (as the paper's Table 2: 856.0M / 473.7M /
280.2M for ViT-L/14-336) includes the momentum copies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from hiddencost.checkpoints import load_state_dict_strict, read_state_dict, remap_keys
from hiddencost.clip.narrow import BlockWidths, narrow_block
from hiddencost.clip.towers import ClipTowers, build_towers
from hiddencost.errors import HiddenCostError
from hiddencost.weights import (
    PRIORITY_FORMAT,
    LoadedWeights,
    WeightRequest,
    register_weight_source,
)

_MOMENTUM = "momentum copy (UPop training only)"
#: The keys left out of a UPop file, each with why: (regex over the whole key, reason).
DROPPED: tuple[tuple[str, str], ...] = (
    (r"(visual_m|transformer_m|token_embedding_m|ln_final_m)\..+", _MOMENTUM),
    (r"text_projection_m|positional_embedding_m", _MOMENTUM),
    (r"image_queue|text_queue|idx_queue|ptr_queue", "contrastive queue (UPop training only)"),
    (r"(visual\.)?transformer\.resblocks\.\d+\.(attn\.)?alpha", "search mask (UPop search only)"),
    (r"input_resolution|context_length|vocab_size", "OpenAI metadata"),
)
#: The block groups of both towers, as prefixes of ``ClipTowers.clip``'s keys.
TOWERS = ("visual.transformer.resblocks", "transformer.resblocks")


def _blocks(towers: ClipTowers) -> dict[str, nn.Module]:
    clip = towers.clip
    groups = {TOWERS[0]: clip.visual.transformer.resblocks, TOWERS[1]: clip.transformer.resblocks}
    return {f"{prefix}.{i}": block for prefix, blocks in groups.items()
            for i, block in enumerate(blocks)}


def widths_in(state: Mapping[str, torch.Tensor], towers: ClipTowers,
              source: str) -> dict[str, BlockWidths]:
    """Every block's widths as the state dict's shapes give them (h from the model config:
    UPop keeps every head). Blocks whose keys are absent keep their widths (the strict load
    names the missing keys)."""
    widths = {}
    for prefix, block in _blocks(towers).items():
        qkv, fc = state.get(f"{prefix}.attn.in_proj_weight"), state.get(f"{prefix}.mlp.c_fc.weight")
        if qkv is None or fc is None:
            continue
        heads = block.attn.num_heads
        if qkv.dim() != 2 or qkv.shape[0] % (3 * heads) or not qkv.shape[0]:
            raise HiddenCostError(
                f"checkpoint {source}: {prefix}.attn.in_proj_weight {tuple(qkv.shape)} is not "
                f"(3·{heads}·d′, D) for the block's {heads} heads")
        if fc.dim() != 2 or not fc.shape[0]:
            raise HiddenCostError(f"checkpoint {source}: {prefix}.mlp.c_fc.weight "
                                  f"{tuple(fc.shape)} is not (m, D)")
        # UPop only narrows: widths above the architecture's (a crafted or foreign file) are
        # refused here, before anything of that size is allocated
        width, mlp = block.ln_1.normalized_shape[0], block.mlp.c_fc.out_features
        head_dim = qkv.shape[0] // (3 * heads)
        if qkv.shape[1] != width or fc.shape[1] != width or head_dim > width // heads \
                or fc.shape[0] > mlp:
            raise HiddenCostError(
                f"checkpoint {source}: {prefix} claims head dimension {head_dim} and MLP width "
                f"{fc.shape[0]} on inputs of {qkv.shape[1]}; this architecture has at most "
                f"{width // heads} and {mlp} on {width} (UPop only narrows)")
        widths[prefix] = BlockWidths(heads, head_dim, fc.shape[0])
    return widths


def check_stored(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Every tensor must store the numbers its shape declares: a stride-0 (expanded) tensor
    claims a huge shape over a few stored numbers, which a model built from it or a count of
    it (the report's momentum copies) would take at face value. Refused naming the tensor."""
    for key, tensor in state.items():
        if tensor.layout != torch.strided:  # sparse ones have no one storage to compare with
            continue
        stored = tensor.untyped_storage().nbytes() // tensor.element_size()
        if tensor.numel() > stored:
            raise HiddenCostError(
                f"checkpoint {source}: {key} declares shape {tuple(tensor.shape)} "
                f"({tensor.numel()} numbers) over {stored} stored; a UPop file stores every "
                "weight it holds")


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def load_upop(entry_towers: ClipTowers, path: str) -> tuple[ClipTowers, dict[str, Any]]:
    """Narrow ``entry_towers`` to the file's widths and load it strictly; the report."""
    state = read_state_dict(path)
    kept, dropped = remap_keys(state, [(r".+", r"\g<0>")], repr(path), ignore=DROPPED)
    widths = widths_in(kept, entry_towers, repr(path))
    check_stored(state, repr(path))  # the dropped keys too: their sizes are counted below
    dense = parameter_count(entry_towers)
    blocks = _blocks(entry_towers)
    narrowed = 0
    for prefix, w in widths.items():
        full = w == BlockWidths(w.heads, blocks[prefix].ln_1.normalized_shape[0] // w.heads,
                                blocks[prefix].mlp.c_fc.out_features)
        narrowed += not full
        narrow_block(blocks[prefix], w)
    load_state_dict_strict(entry_towers.clip, kept, repr(path))
    params = parameter_count(entry_towers)
    momentum = [k for k in state
                if any(re.fullmatch(rule, k) for rule, why in DROPPED if why == _MOMENTUM)]
    report = {
        "method": "upop" if narrowed else "dense",
        "parameters": params,
        "dense_parameters": dense,
        "ratio": dense / params,
        "narrowed_blocks": narrowed,
        # UPop's and the paper's count: the towers plus their momentum copies (when stored)
        "upop_parameters": (params + sum(state[k].numel() for k in momentum)) if momentum else None,
        "dropped_keys": len(dropped),
    }
    return entry_towers.eval(), report


class UPopWeights:
    """Any CLIP checkpoint in OpenAI key layout (UPop's compressed files included)."""

    name = "upop"
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return request.checkpoint is not None and request.entry.family == "open_clip"

    def load(self, request: WeightRequest) -> LoadedWeights:
        towers, report = load_upop(build_towers(request.entry), str(request.checkpoint))
        return LoadedWeights(towers, f"checkpoint:{request.checkpoint}", report)


register_weight_source(UPopWeights(), PRIORITY_FORMAT)
