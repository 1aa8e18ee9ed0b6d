"""Reading a study back: status counts with an ETA, and flat exports (CSV or Parquet)."""

from __future__ import annotations

import csv
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiddencost.errors import HiddenCostError
from hiddencost.study.driver import StudyPaths
from hiddencost.study.spec import StudySpec, expand
from hiddencost.study.store import STATUSES, RunRow, open_store

EXPORT_FORMATS: tuple[str, ...] = ("csv", "parquet")


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


def _rows(spec: StudySpec, out: str | Path | None, store: str | Path | None
          ) -> tuple[StudyPaths, list, dict[str, RunRow], bool]:
    paths = StudyPaths.resolve(spec, out, store)
    runs = expand(spec)
    exists = "://" in paths.store or Path(paths.store).exists()
    if not exists:
        return paths, runs, {}, False
    with open_store(paths.store) as db:
        return paths, runs, db.rows(r.key for r in runs), True


def study_status(spec: StudySpec, out: str | Path | None = None,
                 store: str | Path | None = None) -> StudyStatus:
    """Counts by status, mean run time, ETA, failed and running runs of ``spec``."""
    paths, runs, rows, exists = _rows(spec, out, store)
    counts: Counter[str] = Counter({s: 0 for s in STATUSES})
    status = StudyStatus(spec.name, paths.store, exists, len(runs), counts)
    times = []
    for run in runs:
        row = rows.get(run.key)
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
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s}s"


def export_rows(spec: StudySpec, out: str | Path | None = None,
                store: str | Path | None = None,
                statuses: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One flat dict per run of ``spec`` in expansion order: key, status, compression tags,
    every configuration field (``compression_*`` for the compression spec), every scalar
    metric, and error / host / timings / attempts / artifact folder."""
    paths, runs, rows, _ = _rows(spec, out, store)
    table = []
    for run in runs:
        row = rows.get(run.key)
        status = row.status if row else "pending"
        if statuses and status not in statuses:
            continue
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
            "artifacts": str(paths.run_dir(run.key)),
        })
        table.append(flat)
    return table


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
                 statuses: tuple[str, ...] | None = None) -> int:
    """Write :func:`export_rows` to ``path`` as CSV or Parquet; return the number of rows."""
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
            writer.writerows({c: "" if r.get(c) is None else r.get(c) for c in columns}
                             for r in rows)
    else:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise HiddenCostError("Parquet export needs pyarrow: pip install pyarrow "
                                  "(or export --format csv)") from None
        pq.write_table(pa.Table.from_pylist(_harmonise(rows, columns)), str(path))
    return len(rows)
