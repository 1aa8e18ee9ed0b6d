"""Units of a compression level: a closed set, each knowing its severity, label and axis label.

A study tags every compression point with a level and its unit (``0.9`` ``sparsity``, ``4``
``bits``, ``11.5`` ``remaining_percent`` for a lottery ticket). The report orders points by
**severity** (0 = dense, larger = more compressed) and labels them; both are properties of the
unit here, never an if-chain elsewhere.

=====================  ===================================  =======================  ==========
unit                   meaning of the level                 severity                 label
=====================  ===================================  =======================  ==========
``sparsity``           fraction of weights zeroed, [0, 1)   level                    90% sparse
``sparsity_percent``   percent of weights zeroed            level / 100              90% sparse
``remaining_percent``  percent of weights kept (IMP)        1 − level / 100          11.5% remaining
``bits``               bit-width                            1 − level / 32           4-bit
``compression_ratio``  dense / compressed parameters (UPop)  1 − 1 / level            2× smaller
``rank_ratio``         rank kept / full rank, (0, 1]        1 − level                rank 25%
``level``              an ordinal (e.g. an IMP round)       level                    3
``variant``            a name (SparseZoo ``moderate``)      NaN (order of listing)   moderate
=====================  ===================================  =======================  ==========
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any


class LevelUnit(StrEnum):
    """The unit of a compression level (see the module docstring)."""

    SPARSITY = "sparsity"
    SPARSITY_PERCENT = "sparsity_percent"
    REMAINING_PERCENT = "remaining_percent"
    BITS = "bits"
    COMPRESSION_RATIO = "compression_ratio"
    RANK_RATIO = "rank_ratio"
    LEVEL = "level"
    VARIANT = "variant"

    def severity(self, level: Any) -> float:
        """How compressed ``level`` is: comparable within one family (see the table)."""
        x = _number(level)
        if x is None:
            return math.nan
        return _SEVERITY[self](x)

    def label(self, level: Any) -> str:
        """A short text for ``level``: ``90% sparse``, ``4-bit``, ``11.571% remaining``."""
        x = _number(level)
        return str(level) if x is None else _LABEL[self](x)

    @property
    def axis_label(self) -> str:
        """The axis label of a level in this unit."""
        return _AXIS[self]

    @property
    def kind(self) -> str | None:
        """What the level measures: ``"sparsity"``, ``"quantization"``, or None (an ordinal or
        a named variant says neither)."""
        return _KIND.get(self)


def _number(level: Any) -> float | None:
    try:
        return float(level)
    except (TypeError, ValueError):
        return None


_SEVERITY = {
    LevelUnit.SPARSITY: lambda x: x,
    LevelUnit.SPARSITY_PERCENT: lambda x: x / 100.0,
    LevelUnit.REMAINING_PERCENT: lambda x: 1.0 - x / 100.0,
    LevelUnit.BITS: lambda x: 1.0 - x / 32.0,
    LevelUnit.COMPRESSION_RATIO: lambda x: 1.0 - 1.0 / x if x > 0 else math.nan,
    LevelUnit.RANK_RATIO: lambda x: 1.0 - x,
    LevelUnit.LEVEL: lambda x: x,
    LevelUnit.VARIANT: lambda x: x,
}
_LABEL = {
    LevelUnit.SPARSITY: lambda x: f"{100 * x:.4g}% sparse",
    LevelUnit.SPARSITY_PERCENT: lambda x: f"{x:.4g}% sparse",
    LevelUnit.REMAINING_PERCENT: lambda x: f"{x:.5g}% remaining",
    LevelUnit.BITS: lambda x: f"{x:g}-bit",
    LevelUnit.COMPRESSION_RATIO: lambda x: "uncompressed" if x == 1 else f"{x:g}× smaller",
    LevelUnit.RANK_RATIO: lambda x: f"rank {100 * x:.4g}%",
    LevelUnit.LEVEL: lambda x: f"{x:g}",
    LevelUnit.VARIANT: lambda x: f"{x:g}",
}
_KIND = {
    LevelUnit.SPARSITY: "sparsity",
    LevelUnit.SPARSITY_PERCENT: "sparsity",
    LevelUnit.REMAINING_PERCENT: "sparsity",
    LevelUnit.BITS: "quantization",
    LevelUnit.COMPRESSION_RATIO: "structured",
    LevelUnit.RANK_RATIO: "structured",
}
_AXIS = {
    LevelUnit.SPARSITY: "sparsity (% of weights zeroed)",
    LevelUnit.SPARSITY_PERCENT: "sparsity (% of weights zeroed)",
    LevelUnit.REMAINING_PERCENT: "weights remaining (%)",
    LevelUnit.BITS: "bit-width (bits)",
    LevelUnit.COMPRESSION_RATIO: "compression ratio (×)",
    LevelUnit.RANK_RATIO: "rank kept (% of full rank)",
    LevelUnit.LEVEL: "compression level (level)",
    LevelUnit.VARIANT: "compression level (variant)",
}
