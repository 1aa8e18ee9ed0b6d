"""Where a study keeps things: its output folder, its results store and one folder per run.

Layout of a study's output folder (default ``hiddencost-results/<name>``)::

    study.sqlite            the store (``--store`` elsewhere, e.g. on local disk)
    artifacts/<key>/        result.json, weights.safetensors, outcome.json (error.txt)
    slurm/                  submitit's job files and logs (Slurm executor)
    fidelity.json           upstream fidelity of each compressed backbone (see
    fidelity/               :mod:`hiddencost.study.fidelity`) and its cache
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hiddencost.study.spec import StudySpec
from hiddencost.study.store import StoreLocation

DEFAULT_RESULTS = Path("hiddencost-results")
STORE_FILE = "study.sqlite"
#: The result record of a run, in its artifact folder (see :mod:`hiddencost.records`).
RESULT_FILE = "result.json"


@dataclass(frozen=True)
class StudyPaths:
    """Where a study keeps its store and artifacts (``location`` is the parsed store)."""

    root: Path
    location: StoreLocation
    artifacts: Path

    @classmethod
    def resolve(cls, spec: StudySpec, out: str | Path | None = None,
                store: str | Path | None = None) -> StudyPaths:
        """The paths of ``spec``: ``out`` defaults to ``hiddencost-results/<name>``, the store
        to ``<out>/study.sqlite``."""
        root = Path(out) if out is not None else DEFAULT_RESULTS / spec.name
        location = StoreLocation.parse(store if store is not None else root / STORE_FILE)
        return cls(root, location, root / "artifacts")

    @property
    def store(self) -> str:
        """The store's path or URL as given."""
        return self.location.text

    def run_dir(self, key: str) -> Path:
        """The artifact folder of run ``key``."""
        return self.artifacts / key
