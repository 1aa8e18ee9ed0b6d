"""A name → object registry (a leaf module; each registry lives beside what it registers): the
transfer methods, label mappings, recipes and executors use it. The model table, the weight
sources, the datasets and the zoo keep tables of their own, whose entries say more than a
name (an architecture's preprocessing, a source's ``accepts``, a dataset's splits)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from hiddencost.errors import HiddenCostError

T = TypeVar("T")


class Registry(Generic[T]):
    """Objects of one kind by name, in registration order; ``kind`` names them in errors
    (``unknown transfer method 'x'; known: ilm, flm, ...``)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` as ``name`` (twice is an error)."""
        if name in self._items:
            raise HiddenCostError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The object called ``name``; unknown names are a one-line error listing the known."""
        if name not in self._items:
            raise HiddenCostError(f"unknown {self.kind} {name!r}; known: {', '.join(self)}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
