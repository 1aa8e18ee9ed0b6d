"""CSV cells that a spreadsheet shows as text, never runs as a formula.

Class names, dataset and model names come from user files; a CSV cell starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return is read as a formula by Excel, LibreOffice and
Google Sheets (``=HYPERLINK(...)`` runs when the file is opened). Such a text cell is written
with a leading apostrophe, as OWASP's "CSV injection" advice says; numbers (``-0.5``) and text
that reads as a number stay as they are.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def safe_cell(value: Any) -> Any:
    """``value`` with an apostrophe before it if it is text a spreadsheet would run."""
    if isinstance(value, str) and value.startswith(FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def safe_table(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` with :func:`safe_cell` applied to its text cells and its header."""
    out = table.copy(deep=False)
    for i, c in enumerate(table.columns):
        if table[c].dtype == object or pd.api.types.is_string_dtype(table[c]):
            out.isetitem(i, table[c].map(safe_cell))
    out.columns = [safe_cell(c) for c in table.columns]
    return out
