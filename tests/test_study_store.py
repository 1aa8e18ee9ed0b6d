"""The SQLite results store: idempotent inserts, claims, guarded records, the reclaim rule."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from hiddencost.errors import HiddenCostError
from hiddencost.study.outcome import RunOutcome
from hiddencost.study.spec import PlannedRun
from hiddencost.study.store import Owner, SQLiteStore, open_store, owner_alive


def _runs(n: int) -> list[PlannedRun]:
    return [PlannedRun(f"k{i:02d}", {"i": i}, {"family": "dense"}) for i in range(n)]


def _outcome(key: str, status: str = "done", **kw) -> RunOutcome:
    return RunOutcome(key=key, status=status, metrics={"accuracy": 0.5} if status == "done"
                      else None, error=None if status == "done" else "Boom: x", host="h",
                      started_at=1.0, finished_at=2.0, wall_time_s=1.0, **kw)


def test_schema_wal_and_idempotent_pending(tmp_path):
    with SQLiteStore(tmp_path / "s.sqlite") as db:
        assert db.journal_mode == "wal"
        assert db.add_pending("a", _runs(5)) == 5
        assert db.add_pending("b", _runs(7)) == 2  # only the new ones
        rows = db.rows()
        assert len(rows) == 7 and {r.status for r in rows.values()} == {"pending"}
        assert rows["k00"].study == "a" and rows["k06"].study == "b"
        assert rows["k03"].config == {"i": 3} and rows["k03"].tags == {"family": "dense"}


def test_a_store_holds_one_precision(tmp_path):
    with SQLiteStore(tmp_path / "s.sqlite") as db:
        db.add_pending("a", _runs(4))
        assert db.precision is None
        assert db.record(_outcome("k00"))  # a record without precision (custom runner) sets none
        assert db.precision is None
        assert db.record(_outcome("k01", precision="fp32")) and db.precision == "fp32"
        assert db.record(_outcome("k02", precision="bf16"))  # written, but as a failure
        assert db.record(_outcome("k03", precision="fp32"))
        rows = db.rows()
    assert [rows[k].status for k in ("k01", "k02", "k03")] == ["done", "failed", "done"]
    assert rows["k02"].metrics is None
    assert rows["k02"].error == ("this run trained in bf16 but the store holds fp32 results: "
                                 "run the study with --precision fp32, or in another --out")
    with SQLiteStore(tmp_path / "s.sqlite", readonly=True) as db:
        assert db.precision == "fp32"


def test_claim_record_and_guarded_writes(tmp_path):
    me = Owner.current()
    with SQLiteStore(tmp_path / "s.sqlite") as db:
        db.add_pending("a", _runs(3))
        assert db.claim("k00", me) and not db.claim("k00", me)  # already running
        row = db.rows(["k00"])["k00"]
        assert row.status == "running" and row.owner == str(me) and row.attempts == 1
        assert db.record(_outcome("k00"))
        assert not db.record(_outcome("k00", "failed"))  # never overwrite a finished row
        assert not db.record(_outcome("zzz"))  # unknown key: nothing written
        done = db.rows(["k00"])["k00"]
        assert (done.status, done.metrics, done.owner, done.wall_time_s) == (
            "done", {"accuracy": 0.5}, None, 1.0)
        assert db.claim("k01", me)
        db.record(_outcome("k01", "failed"))
        assert db.rows(["k01"])["k01"].error == "Boom: x"
        assert db.reset_failed(["k01", "k00"]) == ["k01"]
        assert db.rows(["k01"])["k01"].status == "pending"
        assert db.claim("k02", me)
        db.release(["k02"], me)
        assert db.rows(["k02"])["k02"].status == "pending"
        counts = db.counts(["k00", "k01", "k02", "never-inserted"])
        assert counts == {"done": 1, "pending": 3, "running": 0, "failed": 0}
    # a second connection sees the committed state (only the driver writes, readers may read)
    with SQLiteStore(tmp_path / "s.sqlite") as db2:
        assert db2.rows(["k00"])["k00"].status == "done"


def test_reclaim_rule(tmp_path):
    me = Owner.current()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # exited and reaped: its pid is gone
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = socket.gethostname()
        owners = {
            "k00": str(Owner(host, dead.pid, None, "t1")),  # dead process
            "k01": str(Owner(host, alive.pid, None, "t2")),  # live driver: leave it
            "k02": str(Owner(host, os.getpid(), me.start, "old-session")),  # earlier session
            "k03": str(Owner("other-host", 1, None, "t3")),  # unknown: other host
            "k04": str(Owner(host, alive.pid, "1", "t4")),  # pid reused by a newer process
            "k05": "garbage",
        }
        assert owner_alive(Owner.parse(owners["k01"]), me) is True
        assert owner_alive(Owner.parse(owners["k03"]), me) is None
        with SQLiteStore(tmp_path / "s.sqlite") as db:
            db.add_pending("a", _runs(6))
            for key, owner in owners.items():
                db._db.execute("UPDATE runs SET status='running', owner=? WHERE key=?",
                               (owner, key))
            assert sorted(db.reclaim_stale(me)) == ["k00", "k02", "k04", "k05"]
            assert db.rows(["k01"])["k01"].status == "running"
            assert db.reclaim_stale(me, include_foreign=True) == ["k03"]
            assert db.rows(["k01"])["k01"].status == "running"
    finally:
        alive.kill()
        alive.wait()


def test_open_store_locations(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/a.sqlite") as db:
        assert db.path == tmp_path / "a.sqlite"
    with pytest.raises(HiddenCostError, match="unknown store"):
        open_store("postgresql://user@host/db")
    with pytest.raises(HiddenCostError, match="unknown store"):
        open_store("mongodb://x")
    bad = tmp_path / "bad.sqlite"
    bad.write_text("this is not a database" * 100)
    with pytest.raises(HiddenCostError, match="not a usable SQLite store"):
        open_store(bad)


def _open_after(barrier, path, errors) -> None:
    barrier.wait()
    try:
        SQLiteStore(path).close()
    except HiddenCostError as exc:
        errors.put(str(exc))


def test_processes_opening_a_fresh_store_at_once(tmp_path):
    """Switching a new file to WAL is not covered by the busy timeout; opening must retry."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for trial in range(10):
        barrier = ctx.Barrier(4)
        procs = [ctx.Process(target=_open_after,
                             args=(barrier, str(tmp_path / f"s{trial}.sqlite"), errors))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0] * 4
    assert errors.empty()
