"""Studies at scale: grid specs, a results store, kill-safe resume, local / Ray / Slurm.

- :mod:`~hiddencost.study.spec`: YAML study files, validation, expansion into runs.
- :mod:`~hiddencost.study.identity`: run keys (hash of the resolved configuration).
- :mod:`~hiddencost.study.store`: the results store (SQLite) and the reclaim rule.
- :mod:`~hiddencost.study.worker`: what a worker does with one run.
- :mod:`~hiddencost.study.executors`: local, Ray and Slurm (submitit) executors.
- :mod:`~hiddencost.study.driver`: :func:`run_study`, the resumable driver.
- :mod:`~hiddencost.study.results`: status and CSV / Parquet export.
- :mod:`~hiddencost.study.catalog`: presets (the quickstart and the paper's grids).
- :mod:`~hiddencost.study.cli`: the ``hiddencost study`` commands.

Importing this package is cheap: the names below load their modules (and torch) on first use,
so ``hiddencost --help`` stays fast with the ``study`` sub-app mounted.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_preset": "catalog", "preset_names": "catalog", "quickstart_spec": "catalog",
    "StudyReport": "driver", "load_records": "driver", "run_preset": "driver",
    "run_study": "driver", "run_key": "identity", "export_study": "results",
    "study_status": "results", "PlannedRun": "spec", "StudySpec": "spec", "expand": "spec",
    "load_spec": "spec", "parse_spec": "spec", "SQLiteStore": "store", "open_store": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hiddencost.study.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hiddencost.study' has no attribute {name!r}")
