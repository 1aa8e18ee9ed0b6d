"""hiddencost: the hidden cost of model compression for visual prompting and linear probing.

``import hiddencost`` loads no torch: the names of :mod:`hiddencost.api` (``run_one``,
``run_study``, ``load_results``, ``build_report``, ...) load on first use, and reading a
finished study's results (``load_results``, ``build_report``) needs no torch (the report's PIE
thumbnails read test images through the datasets, which do: ``thumbnails=False`` skips them).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: Where each public name lives (``module:attribute``), imported on first access (PEP 562):
#: reading results (``parse_study``, ``load_results``, ``build_report``) loads no torch.
_API: dict[str, str] = {
    "RunConfig": "hiddencost.config:RunConfig", "make_config": "hiddencost.config:make_config",
    "RunRecord": "hiddencost.records:RunRecord", "StudySpec": "hiddencost.study.spec:StudySpec",
    "parse_study": "hiddencost.study.spec:parse_spec",
    "load_study": "hiddencost.study.catalog:load_spec",
    "load_results": "hiddencost.study.results:load_results",
    "build_report": "hiddencost.report:build_report",
    "run_study": "hiddencost.study.driver:run_study", "run_one": "hiddencost.run:run_one",
    "models": "hiddencost.api:models", "datasets": "hiddencost.api:datasets",
    "methods": "hiddencost.api:methods",
}


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'hiddencost' has no attribute {name!r}")
    module, _, attr = _API[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["__version__", *_API]
