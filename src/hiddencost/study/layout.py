"""Where a study keeps things: its output folder, its results store and one folder per run.

Layout of a study's output folder (default ``hiddencost-results/<name>``)::

    study.sqlite            the store (``--store`` elsewhere, e.g. on local disk)
    artifacts/<key>/        result.json, weights.safetensors, predictions.safetensors,
                            outcome.json (error.txt)
    slurm/                  submitit's job files and logs (Slurm executor)
    fidelity.json           upstream fidelity of each compressed backbone (see
    fidelity/               :mod:`hiddencost.study.fidelity`) and its cache
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hiddencost.errors import HiddenCostError
from hiddencost.study.outcome import DISK_FULL
from hiddencost.study.spec import StudySpec
from hiddencost.study.store import StoreLocation

DEFAULT_RESULTS = Path("hiddencost-results")
STORE_FILE = "study.sqlite"
#: The result record of a run, in its artifact folder (see :mod:`hiddencost.records`).
RESULT_FILE = "result.json"


def check_key(key: str) -> None:
    """Refuse a run key that is not a plain folder name (``../x``, ``/abs``, ``.``): keys come
    from a store file, which may have been edited or crafted."""
    if not isinstance(key, str) or key in ("", ".", "..") or any(c in key for c in "/\\\0"):
        raise HiddenCostError(f"the results store holds the run key {key!r}, which is not a "
                              "plain folder name; it was not written by hiddencost")


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
        """The artifact folder of run ``key``: always a folder directly inside ``artifacts``
        (a key read from a store that names anything else is refused, never followed)."""
        check_key(key)
        return self.artifacts / key

    @contextlib.contextmanager
    def writable(self) -> Iterator[None]:
        """Turn "cannot write" failures of the store or the output folder (a read-only file,
        folder or file system, a full disk, before or during a study) into one-line errors;
        what was recorded before stays recorded."""
        advice = ("`study run` needs a writable output folder and store (what finished is "
                  "kept: restore write access and run it again)")
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise HiddenCostError(f"cannot write the study store {self.store}: {exc}; "
                                  f"{advice}") from None
        except OSError as exc:
            if exc.errno in DISK_FULL:
                advice = ("the disk is full: free some space and run the same command again "
                          "(what finished is kept)")
            elif exc.errno not in _UNWRITABLE:
                raise
            raise HiddenCostError(f"cannot write {exc.filename or self.root}: "
                                  f"{exc.strerror}; {advice}") from None


#: errno values that mean "not allowed to write here".
_UNWRITABLE = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
