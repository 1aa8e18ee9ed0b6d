"""Display order of a run table's compression points and data budgets.

A leaf of :mod:`hiddencost.report` (it imports nothing of the package): the analyses sort their
tables with it and the figures lay out their axes with it, so both agree on one order.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def compression_order(df: pd.DataFrame) -> list[str]:
    """Compression labels in display order: dense first, then families in order of first
    appearance, each from least to most compressed (``severity``; a NaN severity sorts last,
    in order of appearance)."""
    if df.empty:
        return []
    first: dict[str, int] = {}
    for i, fam in enumerate(df["family"]):
        first.setdefault(fam, i)
    meta = df.drop_duplicates("compression")[["compression", "family", "severity"]]
    appear = {c: i for i, c in enumerate(df["compression"].drop_duplicates())}

    def key(row: Any) -> tuple:
        sev = row.severity if row.severity == row.severity else math.inf  # NaN → last
        return (row.family != "dense", first[row.family], sev, appear[row.compression])

    return [r.compression for r in sorted(meta.itertuples(index=False), key=key)]


def budget_order(df: pd.DataFrame) -> list[str]:
    """Budget labels from fewest shots to full data (by ``budget_rank``; full = inf)."""
    pairs = df.drop_duplicates("budget")[["budget", "budget_rank"]]
    return [b for b, _ in sorted(pairs.itertuples(index=False), key=lambda p: p[1])]


def budget_positions(df: pd.DataFrame) -> tuple[list[str], dict[str, int]]:
    """:func:`budget_order` and each budget's index in it (its x position on a budget axis)."""
    order = budget_order(df)
    return order, {b: i for i, b in enumerate(order)}
