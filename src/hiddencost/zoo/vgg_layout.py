"""VGG checkpoints in SparseML's or torchvision's key layout, renamed to timm's VGG.

timm's VGG keeps torchvision's ``features.<i>`` Sequential (conv, ReLU, ..., max-pool per
section) but holds the first two classifier layers as convolutions (``pre_logits.fc1``: 7×7,
``pre_logits.fc2``: 1×1) and the last as ``head.fc``. The layouts it is read from::

    SparseML (vgg.py)               torchvision               timm
    sections.<s>.<b>.conv.*         features.<i>.*            features.<i>.*
    classifier.mlp.0.*              classifier.0.*            pre_logits.fc1.*  (reshaped)
    classifier.mlp.3.*              classifier.3.*            pre_logits.fc2.*  (reshaped)
    classifier.mlp.6.*              classifier.6.*            head.fc.*

``<i>`` of block ``b`` of section ``s`` is found from the model itself (its convolutions in
order, a max-pool closing each section), so VGG-11/16/19 share one map. The linear weights are
reshaped ``(4096, 512·7·7) → (4096, 512, 7, 7)`` and ``(4096, 4096) → (4096, 4096, 1, 1)``:
flattening a ``512×7×7`` feature map channel-major (as both layouts do) makes the linear layer
and the convolution the same function. Written here because timm's own filter only knows
torchvision's names and is private.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from hiddencost.checkpoints import shorten
from hiddencost.errors import HiddenCostError

__all__ = ["is_timm_vgg", "remap_vgg", "vgg_key_map"]

_CLASSIFIER = {0: "pre_logits.fc1", 3: "pre_logits.fc2", 6: "head.fc"}


def is_timm_vgg(model: nn.Module) -> bool:
    """Whether ``model`` is laid out as timm's VGG (``features`` + ``pre_logits`` + ``head``)."""
    return all(hasattr(model, a) for a in ("features", "pre_logits", "head"))


def vgg_key_map(model: nn.Module) -> dict[str, str]:
    """Every SparseML and torchvision tensor name of ``model``'s VGG → its timm name."""
    names: dict[str, str] = {}
    section = block = 0
    for index, layer in enumerate(model.features):
        if isinstance(layer, nn.MaxPool2d):
            section, block = section + 1, 0
        elif isinstance(layer, nn.Conv2d):
            for t in ("weight", "bias"):
                names[f"sections.{section}.{block}.conv.{t}"] = f"features.{index}.{t}"
                names[f"features.{index}.{t}"] = f"features.{index}.{t}"
            block += 1
    for index, ours in _CLASSIFIER.items():
        for t in ("weight", "bias"):
            names[f"classifier.mlp.{index}.{t}"] = f"{ours}.{t}"
            names[f"classifier.{index}.{t}"] = f"{ours}.{t}"
    return names


def remap_vgg(state: Mapping[str, torch.Tensor], model: nn.Module,
              source: str) -> OrderedDict[str, torch.Tensor]:
    """``state`` (either layout) with timm's names and the classifier reshaped to ``model``'s
    convolutions; a key of neither layout is an error naming it."""
    names = vgg_key_map(model)
    unknown = [k for k in state if k not in names]
    if unknown:
        raise HiddenCostError(f"checkpoint {source} is not a SparseML or torchvision VGG: "
                              f"unknown keys {shorten(unknown)}")
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in state.items():
        new = names[key]
        if new in out:
            raise HiddenCostError(f"checkpoint {source}: two keys map onto {new}")
        want = shapes[new]
        if new.startswith("pre_logits.") and value.shape != want and value.numel() == want.numel():
            value = value.reshape(want)  # linear → the equivalent convolution
        out[new] = value
    return out
