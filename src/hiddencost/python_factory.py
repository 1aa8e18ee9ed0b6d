"""Bring your own model: a backbone built by a Python function named ``module:function``.

A model compressed with another tool enters a run or a study by name, as ``model:
my_models:build_pruned``. The function takes no arguments and returns ``(model, preprocessing)``:

- ``model``: an ``nn.Module`` classifier, ``model(x)`` the source logits of an image batch ``x``
  ``(B, 3, H, W)`` normalised as below. Linear probing also needs timm's feature interface
  (``forward_features`` and ``forward_head(x, pre_logits=True)``); any timm model has it.
- ``preprocessing``: a :class:`Preprocessing` (or a dict of its fields): the input size, the
  per-channel mean and std, and optionally the names of the source classes (default: ImageNet's
  when the model has 1000 outputs, ``class 0``, ``class 1``, ... otherwise; counted by one probe
  forward pass).

The function must return the same weights on every call (it is called once to describe the model
and once per run that builds it). Its weights are measured like any backbone's (sparsity and
bit-widths by :mod:`hiddencost.compression.measure`); ``--checkpoint FILE`` loads a state dict
strictly into the function's architecture instead. ``--weights random`` does not apply: the
function owns its weights. The module is imported as Python imports it, with the working
directory tried last (as ``uvicorn app:main`` does); on Ray or Slurm workers it must be
importable there too.
"""

from __future__ import annotations

import functools
import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.imagenet import imagenet_class_names
from hiddencost.model_table import (
    BackboneEntry,
    NetworkFamily,
    PretrainedCfg,
    build_network,
    register_family,
)
from hiddencost.weights import (
    PRIORITY_FORMAT,
    LoadedWeights,
    WeightRequest,
    register_name_resolver,
    register_weight_source,
)

#: The network family (and weight source) of factory-built backbones.
FAMILY = "python"
_NAME = re.compile(r"^(?P<module>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)$")


class Preprocessing(BaseModel):
    """How a factory model's inputs are prepared: resized to ``input_size`` squared, then
    ``(x - mean) / std`` per channel on [0, 1] pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input_size: int = Field(ge=8, le=4096)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    class_names: list[str] | None = None


def is_factory_name(name: str) -> bool:
    """Whether ``name`` names a Python factory (``module:function``)."""
    return _NAME.match(name) is not None


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module.split(".")[0] or str(Path.cwd()) in sys.path:
            raise
    sys.path.append(str(Path.cwd()))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(Path.cwd()))


def _function(name: str) -> Callable[[], Any]:
    match = _NAME.match(name)
    assert match is not None
    try:
        module = _import(match["module"])
    except ImportError as exc:
        raise HiddenCostError(f"model {name}: cannot import {match['module']} ({exc})") from None
    function = getattr(module, match["function"], None)
    if not callable(function):
        raise HiddenCostError(f"model {name}: {match['module']} has no function "
                              f"{match['function']!r}")
    return function


def _call(name: str) -> tuple[nn.Module, Preprocessing]:
    """Call the factory and check what it returned (one-line errors)."""
    try:
        built = _function(name)()
    except HiddenCostError:
        raise
    except Exception as exc:  # the user's code: any failure is one line naming it
        raise HiddenCostError(f"model {name} failed: {exc.__class__.__name__}: {exc}") from None
    if not (isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module)):
        raise HiddenCostError(f"model {name} must return (nn.Module, preprocessing), not "
                              f"{type(built).__name__}")
    model, prep = built
    try:
        prep = prep if isinstance(prep, Preprocessing) else Preprocessing.model_validate(prep)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise HiddenCostError(f"model {name}: preprocessing "
                              f"{'.'.join(map(str, err['loc'])) or ''}: {err['msg']}") from None
    return model, prep


@functools.cache
def _describe(name: str) -> tuple[Preprocessing, tuple[str, ...]]:
    """The factory's preprocessing and source class names (one call, one probe pass)."""
    model, prep = _call(name)
    if prep.class_names is not None:
        return prep, tuple(prep.class_names)
    probe = torch.zeros(1, 3, prep.input_size, prep.input_size)
    with torch.no_grad():
        out = model.eval()(probe)
    if not (isinstance(out, torch.Tensor) and out.ndim == 2):
        raise HiddenCostError(f"model {name} must return logits (batch, classes); it returned "
                              f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
    n = out.shape[1]
    return prep, tuple(imagenet_class_names() if n == 1000 else [f"class {i}" for i in range(n)])


def factory_entry(name: str) -> BackboneEntry | None:
    """The entry of a ``module:function`` name (None for any other name)."""
    if not is_factory_name(name):
        return None
    prep, classes = _describe(name)
    return BackboneEntry(
        name=name, timm_arch=name, family=FAMILY,
        cfg=PretrainedCfg(source=FAMILY, input_size=prep.input_size, mean=prep.mean,
                          std=prep.std, num_classes=len(classes),
                          description=f"built by the Python function {name}"))


def _build(entry: BackboneEntry, num_classes: int | None) -> nn.Module:
    if num_classes not in (None, entry.cfg.num_classes):
        raise HiddenCostError(f"model {entry.name} has {entry.cfg.num_classes} outputs; it "
                              f"cannot be built with {num_classes}")
    return _call(entry.name)[0]


class FactoryWeights:
    """The weights the factory function built (a checkpoint file goes to the state-dict source,
    which loads it strictly into the function's architecture)."""

    name = FAMILY
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return request.entry.family == FAMILY and request.checkpoint is None

    def load(self, request: WeightRequest) -> LoadedWeights:
        if request.weights == "random":
            raise HiddenCostError(f"model {request.entry.name} builds its own weights; "
                                  "--weights random does not apply")
        return LoadedWeights(build_network(request.entry).eval(), f"python:{request.entry.name}")


register_family(NetworkFamily(FAMILY, _build, lambda entry: list(_describe(entry.name)[1])))
register_weight_source(FactoryWeights(), PRIORITY_FORMAT)
register_name_resolver(factory_entry)
