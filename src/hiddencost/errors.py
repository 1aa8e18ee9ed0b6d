"""The one exception type the CLI turns into a one-line message and a non-zero exit."""

from __future__ import annotations

from pydantic import ValidationError


class HiddenCostError(Exception):
    """Bad user input or an unusable asset, explained in one actionable sentence."""


class TrainingDivergedError(HiddenCostError):
    """The training loss became NaN or infinite."""


def validation_message(exc: ValidationError, skip: int = 0) -> str:
    """The first problem of a pydantic error as ``where: what`` (``skip`` leading location parts
    dropped, e.g. a discriminated union's tag); unknown keys read ``unknown key 'x'``."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"][skip:])
    if err["type"] == "extra_forbidden":
        return f"unknown key {where!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
