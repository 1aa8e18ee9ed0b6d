"""A study's ``fidelity.json``: written after its runs by :mod:`hiddencost.study.fidelity`,
read by the report. Torch-free, so a study's results read back without loading a model.

The file is ``{"version", "study", "images_per_dataset", "entries": [...]}``, one flat JSON
entry per compressed backbone × dataset (:class:`FidelityEntry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from hiddencost.errors import HiddenCostError
from hiddencost.fidelity.values import FidelityMetrics


class FidelityEntry(BaseModel):
    """The fidelity of one target: its metrics, or the error that kept it from being measured.
    Stored flat in ``fidelity.json`` (:meth:`to_json`, see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    dataset: str
    tags: dict[str, Any]
    dense_model: str
    images: str
    metrics: FidelityMetrics | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The flat JSON entry: head, tags, metric fields (when measured), ``error``."""
        metrics = self.metrics.model_dump(mode="json") if self.metrics is not None else {}
        return {"model": self.model, "dataset": self.dataset, **self.tags,
                "dense_model": self.dense_model, "images": self.images, **metrics,
                "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FidelityEntry:
        """The entry of a flat JSON entry (the inverse of :meth:`to_json`)."""
        head = {k: data[k] for k in ("model", "dataset", "dense_model", "images")}
        names = FidelityMetrics.model_fields
        tags = {k: v for k, v in data.items() if k not in head and k not in names
                and k != "error"}
        error = data.get("error")
        metrics = FidelityMetrics(**{k: data[k] for k in names if k in data}) \
            if error is None else None
        return cls(**head, tags=tags, metrics=metrics, error=error)


FIDELITY_FILE = "fidelity.json"
FIDELITY_CACHE = "fidelity"
FIDELITY_FILE_VERSION = 1
#: Test images per dataset: the binomial standard error of an agreement is then ≤ 3.1 pp.
DEFAULT_FIDELITY_IMAGES = 256


def write_fidelity(root: str | Path, study: str, images_per_dataset: int,
                   entries: Sequence[FidelityEntry]) -> Path:
    """Write ``root/fidelity.json`` (flat JSON entries, see :meth:`FidelityEntry.to_json`)
    atomically and return its path."""
    path = Path(root) / FIDELITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": FIDELITY_FILE_VERSION, "study": study,
           "images_per_dataset": images_per_dataset, "entries": [e.to_json() for e in entries]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
    tmp.replace(path)
    return path


def read_fidelity(root: str | Path) -> list[FidelityEntry]:
    """The entries of ``root/fidelity.json`` ([] when there is none); a file that is not one
    is a one-line error."""
    path = Path(root) / FIDELITY_FILE
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HiddenCostError(f"{path} is unreadable: {exc}") from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise HiddenCostError(f"{path} has no 'entries' list")
    try:
        return [FidelityEntry.from_json(e) for e in entries]
    except (KeyError, TypeError, AttributeError, ValidationError) as exc:
        raise HiddenCostError(f"{path} holds an entry that is not a fidelity entry: "
                              f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
