"""Which transfer methods a backbone family has: one method registry per network family.

``ilm`` on a timm classifier is ILM-VP (pad prompt, ImageNet classes as sources); ``ilm`` on
CLIP is ILM-TP-VP (frame prompt, template texts as sources). A run's method is looked up in its
backbone family's registry (:func:`method_for`); a new family adds its registry here.
"""

from __future__ import annotations

import hiddencost.prompting.tune_methods  # noqa: F401  (registers ft, bitfit and lora)
from hiddencost.errors import HiddenCostError
from hiddencost.prompting.clip_methods import CLIP_METHODS
from hiddencost.prompting.methods import METHODS, TransferMethod
from hiddencost.records import MethodCard
from hiddencost.registry import Registry

#: Network family (:class:`~hiddencost.model_table.NetworkFamily` name) → its methods.
#: A user's Python factory (``python``) builds an image classifier, so it has the timm methods.
METHOD_TABLES: dict[str, Registry[TransferMethod]] = {
    "timm": METHODS, "python": METHODS, "open_clip": CLIP_METHODS}


def method_names() -> tuple[str, ...]:
    """Every method name of any family, each once, in registration order."""
    return tuple(dict.fromkeys(n for table in METHOD_TABLES.values() for n in table))


def method_for(name: str, family: str) -> TransferMethod:
    """The method ``name`` of backbones of ``family``; a name the family lacks is one line
    naming the ones it has."""
    table = METHOD_TABLES.get(family)
    if table is None:
        raise HiddenCostError(f"no transfer methods are registered for family {family!r}")
    if name not in table:
        raise HiddenCostError(f"method {name!r} does not apply to {family} backbones; "
                              f"use {', '.join(table)}")
    return table.get(name)


def methods_reading(modality: str) -> list[str]:
    """The method names that read ``modality`` data (image or sequence), any family."""
    return [n for n in method_names()
            if any(n in t and t.get(n).modality == modality for t in METHOD_TABLES.values())]


def method_card(name: str, family: str) -> MethodCard:
    """The :class:`~hiddencost.records.MethodCard` of method ``name`` of ``family`` backbones."""
    return card_of(method_for(name, family), family)


def card_of(method: TransferMethod, family: str) -> MethodCard:
    """The :class:`~hiddencost.records.MethodCard` of a method of ``family`` backbones."""
    return MethodCard(name=method.name, id=f"{family}/{method.name}",
                      display_name=method.display_name or method.name, marker=method.marker,
                      learns_prompt=method.learns_prompt, modality=method.modality)
