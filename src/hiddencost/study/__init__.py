"""Studies at scale: grid specs, a results store, kill-safe resume, local / Ray / Slurm.

- :mod:`~hiddencost.study.spec`: YAML study files, validation, expansion into runs.
- :mod:`~hiddencost.study.identity`: run keys (hash of the resolved configuration).
- :mod:`~hiddencost.study.store`: the results store (SQLite) and the reclaim rule.
- :mod:`~hiddencost.study.layout`: a study's output folder, store and artifact folders.
- :mod:`~hiddencost.study.worker`: what a worker does with one run.
- :mod:`~hiddencost.study.executors`: the executor registry: local, Ray and Slurm (submitit).
- :mod:`~hiddencost.study.driver`: :func:`run_study`, the resumable driver.
- :mod:`~hiddencost.study.results`: reading a study back (its done runs and their records),
  status and CSV / Parquet export.
- :mod:`~hiddencost.study.catalog`: presets (the quickstart and the paper's grids) and
  :func:`load_spec` (a study file or a preset).
- :mod:`~hiddencost.study.cli`: the ``hiddencost study`` commands.

Importing this package is cheap: the names below load their modules (and torch) on first use,
so ``hiddencost --help`` stays fast with the ``study`` sub-app mounted.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_preset": "catalog", "load_spec": "catalog", "preset_names": "catalog",
    "EVENTS": "driver", "StudyReport": "driver", "run_preset": "driver", "run_study": "driver",
    "EXECUTORS": "executors", "run_key": "identity", "StudyPaths": "layout",
    "done_runs": "results", "export_study": "results", "load_records": "results",
    "read_study": "results", "study_status": "results", "PlannedRun": "spec",
    "StudySpec": "spec", "expand": "spec", "parse_spec": "spec", "run_configs": "spec",
    "SQLiteStore": "store", "open_store": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"hiddencost.study.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'hiddencost.study' has no attribute {name!r}")
