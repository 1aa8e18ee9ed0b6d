"""Card suites: the versioned grid a score card is measured on.

A suite is a YAML file with ``suite`` (its name), ``version`` (an integer: cards of different
versions are never merged), ``description``, the study axes a card fixes (``dataset``,
``method``, ``n_shot``, ``seed``) and optional ``params`` and ``runner``. The models are the
card's: the dense model and its compressed points. Built in: ``offline-mini`` and ``paper-8``
(``card/suites/``); any other YAML file is a suite too.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hiddencost.compression import parse_compression
from hiddencost.errors import HiddenCostError

_SUITES = resources.files("hiddencost") / "card" / "suites"


class Suite(BaseModel):
    """A card suite (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    suite: str = Field(min_length=1)
    version: int = Field(ge=1)
    description: str = ""
    dataset: list[str] = Field(min_length=1)
    method: list[str] = Field(min_length=1)
    n_shot: list[int | str] = Field(min_length=1)
    seed: list[int] = Field(min_length=2)  # a card's intervals and tests need two seeds
    params: dict[str, Any] = Field(default_factory=dict)
    runner: str | None = None

    def study_text(self, name: str, dense: str, points: list[str]) -> str:
        """The YAML of the card's study: this suite's axes over the dense model and its
        compressed points (``none`` first: the dense runs)."""
        spec: dict[str, Any] = {
            "name": name, "description": f"card of {dense} on suite {self.suite} "
                                         f"v{self.version}",
            "model": [dense], "dataset": self.dataset,
            "compression": [{"method": "none"}, *(point_entry(p)[0] for p in points)],
            "method": self.method, "n_shot": self.n_shot,
            "seed": self.seed}
        if self.params:
            spec["params"] = self.params
        if self.runner:
            spec["runner"] = self.runner
        return yaml.safe_dump(spec, sort_keys=False)


#: How a compressed point names a mask beside its checkpoint file: ``FILE,mask=MASK``.
MASK_SEPARATOR = ",mask="


def point_entry(point: str) -> tuple[dict[str, Any], str]:
    """A card's compressed point as a study's compression entry, and the label its runs carry.

    ``point`` is a compression name or recipe point (``magnitude:0.5``, ``w8``, ``w4a4``), or a
    model the user compressed with another tool: a state-dict file for the dense model's
    architecture (``.pth``, ``.pt``, ``.safetensors``), optionally ``FILE,mask=MASK`` with a
    0/1 mask applied as weight × mask. The file is loaded strictly (every key, every shape) and
    its sparsity and bits are measured like any backbone's; its label is
    ``checkpoint-<file stem>``."""
    path, _, mask = point.partition(MASK_SEPARATOR)
    file = Path(path).expanduser()
    if not file.is_file():
        if mask:
            raise HiddenCostError(f"checkpoint {path} of point {point!r} does not exist")
        spec = parse_compression(point)
        return spec.model_dump(mode="json"), spec.label
    if mask and not Path(mask).expanduser().is_file():
        raise HiddenCostError(f"mask {mask} of point {point!r} does not exist")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", file.stem)
    entry: dict[str, Any] = {"name": "checkpoint", "checkpoint": str(file.resolve()),
                             "levels": [stem]}
    if mask:
        entry["mask"] = str(Path(mask).expanduser().resolve())
    return entry, f"checkpoint-{stem}"


def suite_names() -> list[str]:
    """The built-in suites."""
    return sorted(p.name.removesuffix(".yaml") for p in _SUITES.iterdir()
                  if p.name.endswith(".yaml"))


def load_suite(source: str | Path) -> Suite:
    """A suite by built-in name or YAML file; a bad one is a one-line error."""
    path = Path(source)
    if path.is_file():
        text, where = path.read_text(), str(path)
    elif str(source) in suite_names():
        text, where = (_SUITES / f"{source}.yaml").read_text(), f"suite {source}"
    else:
        raise HiddenCostError(f"unknown suite {str(source)!r}: give a suite YAML file or one of "
                              f"{', '.join(suite_names())}")
    try:
        return Suite.model_validate(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise HiddenCostError(f"{where} is not YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "suite"
        raise HiddenCostError(f"{where}: {field}: {err['msg']}") from None
