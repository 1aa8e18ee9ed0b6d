"""Data budgets: the N-shot argument and the ILM-VP protocol's batch size per budget.

A leaf module (torch-free): study specs and run configurations parse budgets with it, and
:mod:`hiddencost.data.few_shot` samples them.
"""

from __future__ import annotations

import bisect

from hiddencost.errors import HiddenCostError

#: Batch size by N-shot (ILM-VP protocol); full data uses 128.
BATCH_SIZE_BY_SHOT: dict[int, int] = {1: 8, 2: 8, 5: 16, 10: 32, 20: 32, 50: 64, 100: 128}
FULL_DATA_BATCH_SIZE = 128
_FULL_WORDS = frozenset({"full", "all"})


def parse_n_shot(value: object) -> int | None:
    """``"full"``/``"all"``/``None`` → ``None`` (full data); a positive integer (or its
    string) → that integer. Anything else raises :class:`HiddenCostError`."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _FULL_WORDS:
            return None
        if text.isdigit() and int(text) > 0:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise HiddenCostError(f"invalid N-shot {value!r}: give a positive integer (examples per class) "
                          "or 'full'")


def batch_size_for(n_shot: int | None) -> int:
    """The batch size for an N-shot run: the table entry of the largest tabulated N ≤ ``n_shot``
    (so 3-shot uses 2-shot's 8, 60-shot uses 50-shot's 64); full data (``None``) uses 128."""
    if n_shot is None:
        return FULL_DATA_BATCH_SIZE
    if isinstance(n_shot, bool) or n_shot <= 0:
        raise HiddenCostError(f"invalid N-shot {n_shot!r}: give a positive integer or None (full)")
    shots = sorted(BATCH_SIZE_BY_SHOT)
    return BATCH_SIZE_BY_SHOT[shots[max(bisect.bisect_right(shots, n_shot) - 1, 0)]]
