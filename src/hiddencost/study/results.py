"""Reading a study back: the runs and rows of a study, the result records of its done runs,
status counts with an ETA, and flat exports (CSV or Parquet).

:func:`read_study` is the one place that reads which runs of a study the store holds and in
what state; everything else (the driver's fidelity step, :func:`load_records`, status, export,
the report's tables) reads a study through it.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import stat
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from hiddencost.errors import HiddenCostError
from hiddencost.records import RunRecord
from hiddencost.spreadsheet import safe_cell
from hiddencost.study.catalog import load_spec
from hiddencost.study.cell_forgetting import FORGETTING_COLUMNS, forgetting_columns
from hiddencost.study.layout import RESULT_FILE, STORE_FILE, StudyPaths
from hiddencost.study.spec import PlannedRun, StudySpec, expand, spec_fingerprint
from hiddencost.study.store import STATUSES, RunRow, StoreLocation
from hiddencost.study.worker import checked_record

EXPORT_FORMATS: tuple[str, ...] = ("csv", "parquet")
#: File suffixes read as a results store (even before the file exists: "does not exist" is a
#: clearer error than "no such study").
STORE_SUFFIXES: tuple[str, ...] = (".sqlite", ".db", ".sqlite3")


@dataclass(frozen=True)
class StudyRuns:
    """The runs of a study in expansion order with their store rows (a run missing from the
    store has no row; ``store_exists`` is False when there is no store yet)."""

    paths: StudyPaths
    runs: list[PlannedRun]
    rows: dict[str, RunRow]
    store_exists: bool

    def status(self, run: PlannedRun) -> str:
        """The run's status; a run missing from the store is pending."""
        row = self.rows.get(run.key)
        return row.status if row is not None else "pending"

    def done(self) -> Iterator[tuple[PlannedRun, RunRow]]:
        """The done runs and their rows, in expansion order."""
        for run in self.runs:
            row = self.rows.get(run.key)
            if row is not None and row.status == "done":
                yield run, row

    def missing_results(self, read: bool = True) -> list[str]:
        """The keys of done runs without a ``result.json`` that reads back as a record (see
        :func:`read_record`: gone with a deleted artifacts folder, garbled, not a record, a
        symbolic link): the report shows them from the store's metrics, and `study run
        --verify` runs them again. ``read=False`` only looks (:func:`has_record`)."""
        return [run.key for run, _ in self.done()
                if not has_record(self.paths.run_dir(run.key) / RESULT_FILE, read)]


def read_study(spec: StudySpec, out: str | Path | None = None,
               store: str | Path | None = None) -> StudyRuns:
    """The runs of ``spec`` and their rows in the store (which is not created when absent).
    A spec the store's driver ran is read as the store recorded its expansion (one query, no
    torch); any other is expanded here."""
    paths = StudyPaths.resolve(spec, out, store)
    if not paths.location.exists():
        return StudyRuns(paths, expand(spec), {}, False)
    with paths.location.open(readonly=True) as db:
        if db.needs_rekey:
            raise HiddenCostError(f"{paths.store} holds the run keys of an older hiddencost: "
                                  f"re-key it once with `hiddencost study migrate {spec.name}` "
                                  "(or any `hiddencost study run`); nothing is re-run")
        entries = db.expansion(spec.name, spec_fingerprint(spec))
        if entries is not None:  # identities from the rows: one read, nothing resolved
            rows = db.rows(key for key, _ in entries)
            if len(rows) == len(entries):
                runs = [PlannedRun(key, rows[key].config, tags) for key, tags in entries]
                return StudyRuns(paths, runs, rows, True)
        runs = expand(spec)
        return StudyRuns(paths, runs, db.rows(r.key for r in runs), True)


def read_record(path: str | Path) -> RunRecord:
    """A ``result.json``, checked against the record schema (:class:`RunRecord`): OSError when
    it cannot be read or is not a regular file (a symbolic link, which hiddencost never writes
    there, is not followed; a FIFO is not waited on), ValueError when it is not JSON,
    HiddenCostError when not a record."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not a result file", str(path)) from None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        text = fh.read()
    return checked_record(json.loads(text), str(path))


def has_record(path: str | Path, read: bool = True) -> bool:
    """Whether ``path`` reads back as a result record (:func:`read_record`); ``read=False``
    only looks: whether it is a regular file, not a link (no record is read: what every `study
    run` checks, where reading thousands of records, maybe on a shared file system, would cost
    its start minutes; `--verify` reads them)."""
    try:
        if not read:
            return stat.S_ISREG(os.lstat(path).st_mode)
        read_record(path)
    except (OSError, ValueError, HiddenCostError):
        return False
    return True


def record_or_metrics(folder: str | Path, row: RunRow) -> RunRecord | dict[str, Any]:
    """The record in a done run's artifact folder; when its ``result.json`` is missing or not
    a valid record, what the store kept instead: the row's configuration and scalar metrics
    (a partial record, without the list-valued fields, marked ``result_missing``)."""
    try:
        return read_record(Path(folder) / RESULT_FILE)
    except (OSError, ValueError, HiddenCostError):
        return {"config": row.config, **(row.metrics or {}), "result_missing": True}


def load_records(spec: StudySpec, out: str | Path | None = None,
                 store: str | Path | None = None) -> list[RunRecord]:
    """The result records of the study's done runs, in expansion order; a done run without a
    readable record is a one-line error."""
    study = read_study(spec, out, store)
    records = []
    for run, _ in study.done():
        path = study.paths.run_dir(run.key) / RESULT_FILE
        try:
            records.append(read_record(path))
        except (OSError, ValueError, HiddenCostError) as exc:
            raise HiddenCostError(f"run {run.key} is done but {path} is unreadable: "
                                  f"{exc}") from None
    return records


@dataclass
class StudyStatus:
    """Where a study stands. Runs missing from the store count as pending. ``eta_s`` is the
    mean wall time of its done runs times the runs left, i.e. for one run at a time (divide
    by the number of parallel workers); None before any run is done."""

    name: str
    store: str
    store_exists: bool
    total: int
    counts: Counter[str]
    mean_run_s: float | None = None
    eta_s: float | None = None
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # key, label, error
    running: list[tuple[str, str, str]] = field(default_factory=list)  # key, label, owner


def study_status(spec: StudySpec, out: str | Path | None = None,
                 store: str | Path | None = None) -> StudyStatus:
    """Counts by status, mean run time, ETA, failed and running runs of ``spec``."""
    study = read_study(spec, out, store)
    counts: Counter[str] = Counter({s: 0 for s in STATUSES})
    status = StudyStatus(spec.name, study.paths.store, study.store_exists, len(study.runs),
                         counts)
    times = []
    for run in study.runs:
        row = study.rows.get(run.key)
        counts[row.status if row else "pending"] += 1
        if row is None:
            continue
        if row.status == "done" and row.wall_time_s is not None:
            times.append(row.wall_time_s)
        elif row.status == "failed":
            status.failed.append((run.key, run.label, row.error or ""))
        elif row.status == "running":
            status.running.append((run.key, run.label, row.owner or ""))
    if times:
        status.mean_run_s = sum(times) / len(times)
        status.eta_s = status.mean_run_s * (counts["pending"] + counts["running"])
    return status


def format_duration(seconds: float | None) -> str:
    """``1h 02m``, ``3m 20s``, ``12s``; ``?`` for None."""
    if seconds is None or math.isnan(seconds):
        return "?"
    if math.isinf(seconds):
        return "∞"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def _flat(run: PlannedRun, row: RunRow | None, status: str, folder: Path,
          missing: bool) -> dict[str, Any]:
    """One run as a flat row (see :func:`load_results` for the columns)."""
    cfg = dict(run.identity)
    comp = cfg.pop("compression")
    flat: dict[str, Any] = {"key": run.key, "status": status}
    flat.update({k: run.tags.get(k) for k in ("family", "compression", "level", "unit")})
    flat.update(cfg)
    flat["n_shot_label"] = "full" if cfg["n_shot"] is None else str(cfg["n_shot"])
    flat.update({f"compression_{k}": v for k, v in comp.items()})
    for k, v in ((row.metrics or {}) if row else {}).items():
        flat.setdefault(k, v)
    flat.update({
        "error": row.error if row else None,
        "host": row.host if row else None,
        "attempts": row.attempts if row else 0,
        "started_at": row.started_at if row else None,
        "finished_at": row.finished_at if row else None,
        "elapsed_s": row.wall_time_s if row else None,
        "artifacts": str(folder),
        "result_missing": missing,
    })
    return flat


def export_rows(spec: StudySpec, out: str | Path | None = None,
                store: str | Path | None = None,
                statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One flat dict per run of ``spec`` in expansion order (see :func:`load_results`)."""
    return _rows(read_study(spec, out, store), statuses)


def _rows(study: StudyRuns, statuses: Sequence[str] | None) -> list[dict[str, Any]]:
    missing = set(study.missing_results())
    return [_flat(run, study.rows.get(run.key), study.status(run), study.paths.run_dir(run.key),
                  run.key in missing)
            for run in study.runs if not statuses or study.status(run) in statuses]


def read_store(location: str | Path, artifacts: str | Path | None = None,
               study: str | None = None) -> StudyRuns:
    """Every run of a results store file (or only those of ``study``), in the order they were
    added; artifact folders in ``artifacts`` (default ``artifacts/`` beside the store)."""
    where = StoreLocation.parse(location)
    if not where.exists():
        raise HiddenCostError(f"results store {location} does not exist")
    folder = where.path.parent
    paths = StudyPaths(folder, where,
                       Path(artifacts) if artifacts is not None else folder / "artifacts")
    with paths.location.open(readonly=True) as db:
        rows = db.rows()
    runs = [PlannedRun(r.key, r.config, r.tags)
            for r in sorted(rows.values(), key=lambda r: r.created_at)
            if study is None or r.study == study]
    return StudyRuns(paths, runs, rows, True)


def study_of(source: StudySpec | str | Path, out: str | Path | None = None,
             store: str | Path | None = None) -> StudyRuns:
    """The runs of any results source, read one way for :func:`load_results`, export and the
    report: a :class:`~hiddencost.study.spec.StudySpec`, a study file or preset name (its
    results in ``out`` or ``store``), a study's output folder, or a results store file."""
    if isinstance(source, StudySpec):
        return read_study(source, out, store)
    text = str(source)
    if Path(text).is_dir() and (Path(text) / STORE_FILE).is_file():
        return read_store(Path(text) / STORE_FILE)
    if is_store_source(text):
        return read_store(text)
    return read_study(load_spec(text, check=False), out, store)


def is_store_source(text: str) -> bool:
    """Whether a source names a results store (``sqlite://`` URL, ``.sqlite`` / ``.db`` /
    ``.sqlite3`` suffix, or a file with SQLite's header) rather than a study."""
    return text.startswith("sqlite://") or Path(text).suffix in STORE_SUFFIXES \
        or is_sqlite_file(text)


def is_sqlite_file(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with SQLite's magic header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def load_results(source: StudySpec | str | Path, status: str | Sequence[str] | None = "done",
                 *, out: str | Path | None = None,
                 store: str | Path | None = None, forgetting: bool = False) -> pd.DataFrame:
    """A study's runs as one tidy table, one row per run, read from its results store without
    torch (nothing is trained or resolved).

    ``source`` is a :class:`~hiddencost.study.spec.StudySpec`, a study file or preset name (its
    results in ``out``, default ``hiddencost-results/<name>``, or ``store``), a study's output
    folder, or a results store file (every run it holds). ``status``: ``"done"`` (default), a
    list of statuses, or None for every run.

    Columns: ``key``, ``status``; the study's compression tags ``family``, ``compression``,
    ``level``, ``unit``; every field of the run's configuration (``model``, ``dataset``,
    ``method``, ``n_shot``, ``seed``, ``epochs``, ``lr``, ...; ``compression_<field>`` for the
    compression spec) and ``n_shot_label`` (``"10"``, ``"full"``); the record's scalar fields
    (``accuracy``, ``ece``, ``nll``, ``brier``, ``paper_ece``, ``sparsity``, ``weight_bits``,
    ``network_family``, ``wall_time_s``, ...; None until the run is done); and ``error``,
    ``host``, ``attempts``, ``started_at``, ``finished_at``, ``elapsed_s``, ``artifacts`` (the
    run's folder), ``result_missing``.

    With ``forgetting=True`` (it reads every done run's ``predictions.safetensors``), each
    compressed run also carries its cell's ``pie_rate``, ``dense_disagreement``, ``lost_rate``
    and ``gained_rate`` (% of the test examples, over the seeds of the cell's dense runs and of
    its compression point: :mod:`hiddencost.study.cell_forgetting`); None on dense runs.
    """
    statuses = (status,) if isinstance(status, str) else status
    study = study_of(source, out, store)
    rows = _rows(study, statuses)
    if forgetting and rows:
        missing = set(study.missing_results())
        done = [(run, study.paths.run_dir(run.key)) for run in study.runs
                if study.status(run) == "done" and run.key not in missing]
        rates = forgetting_columns(done)
        for row in rows:
            row.update(rates.get(row["key"], dict.fromkeys(FORGETTING_COLUMNS)))
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["key", "status"])


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return list(columns)


def _harmonise(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """One type per column for Parquet: a column mixing text and numbers becomes text."""
    out = [{c: r.get(c) for c in columns} for r in rows]
    for c in columns:
        kinds = {type(r[c]) for r in out if r[c] is not None}
        if str in kinds and len(kinds) > 1:
            for r in out:
                if r[c] is not None:
                    r[c] = str(r[c])
        elif bool in kinds and len(kinds) > 1:
            for r in out:
                if r[c] is not None:
                    r[c] = float(r[c])
    return out


def export_study(spec: StudySpec, path: str | Path, fmt: str = "csv",
                 out: str | Path | None = None, store: str | Path | None = None,
                 statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Write :func:`export_rows` to ``path`` as CSV or Parquet; return the rows written."""
    if fmt not in EXPORT_FORMATS:
        raise HiddenCostError(f"unknown export format {fmt!r}; use {' or '.join(EXPORT_FORMATS)}")
    rows = export_rows(spec, out, store, statuses)
    columns = _columns(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows({c: "" if r.get(c) is None else safe_cell(r.get(c)) for c in columns}
                             for r in rows)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise HiddenCostError("Parquet export needs pyarrow: pip install pyarrow "
                                  "(or export --format csv)") from None
        pq.write_table(pa.Table.from_pylist(_harmonise(rows, columns)), str(path))
    return rows
