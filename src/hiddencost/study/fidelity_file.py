"""A study's ``fidelity.json``: written after its runs by :mod:`hiddencost.study.fidelity`,
read by the report. Torch-free, so a study's results read back without loading a model.

The file is ``{"version", "study", "images_per_dataset", "entries": [...]}``, one flat JSON
entry per compressed backbone × dataset (see
:class:`~hiddencost.study.fidelity.FidelityEntry`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hiddencost.errors import HiddenCostError

FIDELITY_FILE = "fidelity.json"
FIDELITY_CACHE = "fidelity"
FIDELITY_FILE_VERSION = 1
#: Test images per dataset: the binomial standard error of an agreement is then ≤ 3.1 pp.
DEFAULT_FIDELITY_IMAGES = 256


def write_fidelity(root: str | Path, study: str, images_per_dataset: int,
                   entries: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``root/fidelity.json`` (JSON entries, see :meth:`FidelityEntry.to_json`)
    atomically and return its path."""
    path = Path(root) / FIDELITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": FIDELITY_FILE_VERSION, "study": study,
           "images_per_dataset": images_per_dataset, "entries": list(entries)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
    tmp.replace(path)
    return path


def read_fidelity(root: str | Path) -> list[dict[str, Any]]:
    """The JSON entries of ``root/fidelity.json`` ([] when there is none)."""
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
    return entries
