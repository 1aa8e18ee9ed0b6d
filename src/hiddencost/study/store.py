"""The results store: one row per run, keyed by the run's content hash.

The store is :class:`SQLiteStore`: one file, WAL journal, busy timeout. Each row holds the run
key, the study that first asked for it, its environment-free configuration (JSON), tags
(compression family, level), ``status`` ∈ {pending, running, done, failed}, the scalar metrics
(JSON), timings, the host that ran it, the error text of a failure, the number of attempts and,
while running, its *owner*. Beside the runs, ``expansions`` keeps which runs each spec a driver
ran expands to (:meth:`SQLiteStore.record_expansion`), so its results read back without torch.

Only the driver process writes. Every state change is one transaction, which makes a study
safe to SIGKILL at any instant:

- all pending rows are inserted in one transaction with ``INSERT … ON CONFLICT(key) DO
  NOTHING``, so expanding a spec again never duplicates a run and never touches a finished one;
- a run is claimed (pending → running, owner set, attempts + 1) before it executes;
- its result and ``status = done`` (or ``failed`` and the error) are written together, and only
  over a pending or running row, so a result is never written twice;
- on start, :meth:`ResultStore.reclaim_stale` resets to pending every running row whose owner is
  gone (the reclaim rule, see :func:`owner_alive`).

An owner is ``host:pid:start:token``: the driver's host name, process id, process start time
(Linux ``/proc``; ``-`` elsewhere) and a random token per driver session.

SQLite must not be shared over NFS or other network filesystems (its locks are unreliable
there, and WAL needs shared memory): keep the store file on the driver's local disk. The Slurm
executor is built for that setup: jobs write one result file per run on the shared filesystem
and only the driver merges them into the store.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hiddencost.errors import HiddenCostError
from hiddencost.study.identity import canonical_json
from hiddencost.study.outcome import RunOutcome
from hiddencost.study.spec import PlannedRun

STATUSES: tuple[str, ...] = ("pending", "running", "done", "failed")
#: 2: run keys hash identity version 2 (:data:`hiddencost.config.IDENTITY_VERSION`);
#: a store of schema 1 (keys of identity version 1) opens with ``needs_rekey`` and is re-keyed
#: once by :func:`hiddencost.study.migrate.rekey_store`.
SCHEMA_VERSION = 2
#: Older schemas this store still opens (and re-keys).
REKEYED_SCHEMAS = frozenset({1})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    config TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    metrics TEXT,
    error TEXT,
    host TEXT,
    owner TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    wall_time_s REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS expansions (
    study TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    keys TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (study, fingerprint)
);
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
#: Keys per ``key IN (...)`` query (SQLite allows 32,766 parameters; smaller chunks are as fast).
_IN_CHUNK = 500


def process_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@dataclass(frozen=True)
class Owner:
    """Who claimed a running row: one driver session on one host."""

    host: str
    pid: int
    start: str | None
    token: str

    @classmethod
    def current(cls) -> Owner:
        """A new owner for this process (a fresh token each call: one per driver session)."""
        pid = os.getpid()
        return cls(socket.gethostname(), pid, process_start_time(pid), uuid.uuid4().hex[:12])

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start or '-'}:{self.token}"

    @classmethod
    def parse(cls, text: str) -> Owner | None:
        """Inverse of ``str(owner)``; None for text that is not an owner."""
        try:
            host, pid, start, token = text.rsplit(":", 3)
            return cls(host, int(pid), None if start == "-" else start, token)
        except ValueError:
            return None


def owner_alive(owner: Owner | None, me: Owner) -> bool | None:
    """The reclaim rule. True: the owner may still be running the row, leave it. False: it is
    gone, reclaim. None: unknown (another host), left alone unless the user reclaims all.

    On this host an owner is gone when it is an earlier session of this very process (same
    pid, other token), when its pid no longer exists or is a zombie, or when the pid now
    belongs to a process started at another time (pid reuse).
    """
    if owner is None:
        return False
    if owner.host != me.host:
        return None
    if owner.pid == me.pid:
        return owner.token == me.token
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if _is_zombie(owner.pid):
        return False
    start = process_start_time(owner.pid)
    return not (owner.start and start and start != owner.start)


@dataclass(frozen=True)
class RunRow:
    """One row of the store."""

    key: str
    study: str
    config: dict[str, Any]
    tags: dict[str, Any]
    status: str
    metrics: dict[str, Any] | None
    error: str | None
    host: str | None
    owner: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    wall_time_s: float | None


def _inspect(uri: str, timeout_s: float) -> tuple[sqlite3.Connection, set[str], int]:
    """Connect to ``uri``; its table names and schema version."""
    db = sqlite3.connect(uri, uri=True, timeout=timeout_s, isolation_level=None)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    return db, tables, db.execute("PRAGMA user_version").fetchone()[0]


class SQLiteStore:
    """The results store, one SQLite file (WAL journal, busy timeout, one transaction per
    state change). ``timeout_s`` bounds how long a write waits for another connection."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            self._db = self._connect_readonly(timeout_s)
            self.journal_mode = "read-only"
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            mode = self._enable_wal(timeout_s)
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._tx():
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version == 0:
                    version = SCHEMA_VERSION
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION and version not in REKEYED_SCHEMAS:
                    raise HiddenCostError(f"{self.path} has store schema {version}; this "
                                          f"hiddencost reads schema {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise HiddenCostError(f"{self.path} is not a usable SQLite store: {exc}") from None
        self.journal_mode = mode
        self.needs_rekey = version in REKEYED_SCHEMAS

    def _connect_readonly(self, timeout_s: float) -> sqlite3.Connection:
        """A connection that cannot write (``mode=ro``), to a file that must already be a
        hiddencost store of this schema: reading never creates, converts or changes a file."""
        if not self.path.is_file():
            raise HiddenCostError(f"results store {self.path} does not exist")
        uri = f"{self.path.absolute().as_uri()}?mode=ro"
        try:
            try:
                db, tables, version = _inspect(uri, timeout_s)
            except sqlite3.OperationalError:
                # a WAL store on read-only media: SQLite cannot make its -shm index there, and
                # no writer can be active, so the file is read as immutable
                db, tables, version = _inspect(uri + "&immutable=1", timeout_s)
        except sqlite3.DatabaseError as exc:
            raise HiddenCostError(f"{self.path} is not a usable SQLite store: {exc}") from None
        self.needs_rekey = version in REKEYED_SCHEMAS
        if "runs" not in tables or (version != SCHEMA_VERSION and not self.needs_rekey):
            db.close()
            raise HiddenCostError(f"{self.path} is not a hiddencost results store (schema "
                                  f"{version}, tables: {', '.join(sorted(tables)) or 'none'})")
        return db

    def _enable_wal(self, timeout_s: float) -> str:
        # Switching a fresh file to WAL while another process opens it can fail at once with
        # "database is locked": SQLite does not call the busy handler for this pragma.
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def add_pending(self, study: str, runs: Iterable[PlannedRun]) -> int:
        """Insert missing runs as pending (one transaction); return how many were new."""
        now = time.time()
        rows = [(r.key, study, canonical_json(r.identity), canonical_json(r.tags), now)
                for r in runs]
        with self._tx() as db:
            before = db.total_changes
            db.executemany(
                "INSERT INTO runs (key, study, config, tags, status, created_at) "
                "VALUES (?, ?, ?, ?, 'pending', ?) ON CONFLICT(key) DO NOTHING", rows)
            return db.total_changes - before

    def reclaim_stale(self, me: Owner, include_foreign: bool = False) -> list[str]:
        """Reset running rows whose owner is gone (see :func:`owner_alive`) to pending;
        ``include_foreign`` also resets rows owned on other hosts. Return their keys."""
        with self._tx() as db:
            running = db.execute("SELECT key, owner FROM runs WHERE status = 'running'").fetchall()
            stale = []
            for key, owner in running:
                alive = owner_alive(Owner.parse(owner or ""), me)
                if alive is False or (alive is None and include_foreign):
                    stale.append(key)
            db.executemany("UPDATE runs SET status = 'pending', owner = NULL "
                           "WHERE key = ? AND status = 'running'", [(k,) for k in stale])
        return stale

    def reset_failed(self, keys: Iterable[str]) -> list[str]:
        """Reset failed rows among ``keys`` to pending (for ``--retry-failed``)."""
        return self.reset(keys, "failed")

    def reset(self, keys: Iterable[str], status: str) -> list[str]:
        """Rows among ``keys`` with ``status`` back to pending (failed runs to retry, done runs
        whose results were deleted); returns their keys."""
        wanted = set(keys)
        with self._tx() as db:
            found = [k for (k,) in db.execute("SELECT key FROM runs WHERE status = ?", (status,))
                     if k in wanted]
            db.executemany("UPDATE runs SET status = 'pending', error = NULL, owner = NULL "
                           "WHERE key = ? AND status = ?", [(k, status) for k in found])
        return found

    def claim(self, key: str, me: Owner) -> bool:
        """pending → running owned by ``me``; False when the row was not pending."""
        return self.claim_many([key], me) == [key]

    def claim_many(self, keys: Iterable[str], me: Owner) -> list[str]:
        """:meth:`claim` of several rows in one transaction (a pack's runs are claimed
        together); returns the keys it claimed, in the given order."""
        claimed = []
        with self._tx() as db:
            for key in keys:
                cur = db.execute(
                    "UPDATE runs SET status = 'running', owner = ?, started_at = ?, "
                    "attempts = attempts + 1 WHERE key = ? AND status = 'pending'",
                    (str(me), time.time(), key))
                if cur.rowcount == 1:
                    claimed.append(key)
        return claimed

    def release(self, keys: Iterable[str], me: Owner) -> None:
        """running (owned by ``me``) → pending, for runs interrupted before they finished."""
        with self._tx() as db:
            db.executemany("UPDATE runs SET status = 'pending', owner = NULL "
                           "WHERE key = ? AND status = 'running' AND owner = ?",
                           [(k, str(me)) for k in keys])

    @property
    def precision(self) -> str | None:
        """The precision of the store's done runs (``fp32``/``bf16``), None before the first
        one that recorded it. A store holds one precision (see :meth:`record`)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = 'precision'").fetchone() \
            if self._has_meta() else None
        return None if row is None else str(row[0])

    def _has_meta(self) -> bool:
        return self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = 'meta'").fetchone() is not None

    def record(self, outcome: RunOutcome) -> bool:
        """Write a worker outcome (status done/failed, metrics or error, timings) over a pending
        or running row; False (and nothing written) when the row is finished or absent. A
        pending outcome (the disk was full) only returns the row to pending, with its error.

        A store holds results of one precision: the first done run that says its precision
        sets it, and a done run of another precision is written as failed, with a one-line
        error naming both (a study resumed on other hardware never mixes bf16 and fp32)."""
        with self._tx() as db:
            if outcome.status == "pending":
                cur = db.execute("UPDATE runs SET status = 'pending', owner = NULL, error = ? "
                                 "WHERE key = ? AND status IN ('pending', 'running')",
                                 (outcome.error, outcome.key))
                return cur.rowcount == 1
            outcome = self._one_precision(db, outcome)
            metrics = outcome.metrics
            cur = db.execute(
                "UPDATE runs SET status = ?, metrics = ?, error = ?, host = ?, "
                "started_at = COALESCE(?, started_at), finished_at = ?, wall_time_s = ?, "
                "owner = NULL WHERE key = ? AND status IN ('pending', 'running')",
                (outcome.status, None if metrics is None else json.dumps(metrics),
                 outcome.error, outcome.host, outcome.started_at, outcome.finished_at,
                 outcome.wall_time_s, outcome.key))
            return cur.rowcount == 1

    @staticmethod
    def _one_precision(db: sqlite3.Connection, outcome: RunOutcome) -> RunOutcome:
        if outcome.status != "done" or outcome.precision is None:
            return outcome
        db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('precision', ?)",
                   (outcome.precision,))
        held = db.execute("SELECT value FROM meta WHERE name = 'precision'").fetchone()[0]
        if held == outcome.precision:
            return outcome
        return outcome.model_copy(update={"status": "failed", "metrics": None, "error": (
            f"this run trained in {outcome.precision} but the store holds {held} results: "
            f"run the study with --precision {held}, or in another --out")})

    def rows(self, keys: Iterable[str] | None = None) -> dict[str, RunRow]:
        """Rows by key (all rows, or those of ``keys`` that exist; read with ``key IN``, a
        chunk of keys per query, not a scan of the whole store)."""
        select = ("SELECT key, study, config, tags, status, metrics, error, host, owner, "
                  "attempts, created_at, started_at, finished_at, wall_time_s FROM runs")
        if keys is None:
            found = self._db.execute(select).fetchall()
        else:
            wanted = list(dict.fromkeys(keys))
            found = []
            for i in range(0, len(wanted), _IN_CHUNK):
                chunk = wanted[i:i + _IN_CHUNK]
                found += self._db.execute(
                    f"{select} WHERE key IN ({','.join('?' * len(chunk))})", chunk).fetchall()
        out = {}
        for row in found:
            out[row[0]] = RunRow(
                key=row[0], study=row[1], config=json.loads(row[2]), tags=json.loads(row[3]),
                status=row[4], metrics=None if row[5] is None else json.loads(row[5]),
                error=row[6], host=row[7], owner=row[8], attempts=row[9], created_at=row[10],
                started_at=row[11], finished_at=row[12], wall_time_s=row[13])
        return out

    def record_expansion(self, study: str, fingerprint: str, runs: Sequence[PlannedRun]) -> None:
        """Remember which runs (keys and tags), in which order, the spec with ``fingerprint``
        expands to, so reading its results later needs no expansion (which resolves names
        against the registries and loads torch)."""
        entries = json.dumps([[r.key, r.tags] for r in runs])
        with self._tx() as db:
            db.execute("INSERT INTO expansions (study, fingerprint, keys, updated_at) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT(study, fingerprint) DO UPDATE SET "
                       "keys = excluded.keys, updated_at = excluded.updated_at",
                       (study, fingerprint, entries, time.time()))

    def expansion(self, study: str, fingerprint: str) -> list[tuple[str, dict[str, Any]]] | None:
        """The runs :meth:`record_expansion` kept for this spec, as (key, tags) in order, or
        None: never run with this spec, or a store written before expansions were kept."""
        try:
            row = self._db.execute("SELECT keys FROM expansions WHERE study = ? AND "
                                   "fingerprint = ?", (study, fingerprint)).fetchone()
        except sqlite3.OperationalError:  # a store older than the table, opened read-only
            return None
        return None if row is None else [(key, tags) for key, tags in json.loads(row[0])]

    def rekey(self, moves: Mapping[str, tuple[str, dict[str, Any]]]) -> int:
        """Give rows new keys and identities (``old key → (new key, identity)``) in one
        transaction, forget recorded expansions (their keys are old) and mark the store as of
        this schema. A row whose new key is already taken (two old identities of one run) is
        dropped, the row there kept; returns how many rows were dropped so."""
        dropped = 0
        with self._tx() as db:
            taken = {k for (k,) in db.execute("SELECT key FROM runs")} - moves.keys()
            for old, (new, identity) in moves.items():
                if new in taken:
                    db.execute("DELETE FROM runs WHERE key = ?", (old,))
                    dropped += 1
                    continue
                db.execute("UPDATE runs SET key = ?, config = ? WHERE key = ?",
                           (new, canonical_json(identity), old))
                taken.add(new)
            db.execute("DELETE FROM expansions")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self.needs_rekey = False
        return dropped

    def counts(self, keys: Iterable[str]) -> Counter[str]:
        """Rows of ``keys`` by status; keys not in the store count as pending."""
        keys = list(keys)
        rows = self.rows(keys)
        counts: Counter[str] = Counter({s: 0 for s in STATUSES})
        for k in keys:
            counts[rows[k].status if k in rows else "pending"] += 1
        return counts

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SQLiteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class StoreLocation:
    """Where a results store lives, parsed once from a path or URL: ``results.sqlite``,
    ``sqlite:///rel.sqlite``, ``sqlite:////abs.sqlite``. ``text`` is the location as given."""

    text: str
    scheme: str
    path: Path  # the SQLite file

    @classmethod
    def parse(cls, location: str | Path | StoreLocation) -> StoreLocation:
        """Parse a path or URL; an unknown scheme is a one-line error."""
        if isinstance(location, StoreLocation):
            return location
        text = str(location)
        if "://" not in text:
            return cls(text, "sqlite", Path(text))
        scheme, rest = text.split("://", 1)
        if scheme == "sqlite":
            return cls(text, scheme, Path(rest[1:] if rest.startswith("/") else rest))
        raise HiddenCostError(f"unknown store {text!r}: give a file path or sqlite:///PATH")

    def exists(self) -> bool:
        """Whether the store holds anything yet: its SQLite file exists."""
        return self.path.is_file()

    def open(self, readonly: bool = False) -> SQLiteStore:
        """Connect (a SQLite file is created when missing); ``readonly`` for commands that only
        read: the file must exist and be a hiddencost store, and nothing is written to it."""
        return SQLiteStore(self.path, readonly=readonly)

    def __str__(self) -> str:
        return self.text


def open_store(location: str | Path | StoreLocation) -> SQLiteStore:
    """Open a store from a path or URL (see :class:`StoreLocation`)."""
    return StoreLocation.parse(location).open()
