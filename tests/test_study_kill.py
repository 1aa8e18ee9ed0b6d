"""Kill-safety: a study SIGKILLed at any moment and started again ends with exactly the rows a
clean run has (none lost, none duplicated, none left running).

Drivers are real processes killed with SIGKILL. To keep the suite fast they are forked from a
forkserver that imported hiddencost once (a fresh interpreter pays ~10 s of torch import);
one test also kills the real ``python -m hiddencost study run`` command. Kill points are
deterministic (the driver SIGKILLs itself from ``run_study``'s ``on_event`` hook at a named
step, see :class:`support.faults.KillAt`: after inserting the pending rows, after claiming a
run, after a run finished but before it is recorded, right after recording; or the test kills
it once k runs are done) and random (seeded delays).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hiddencost_test_runners import LOG_ENV, SLEEP_ENV
from support import SYNTHETIC
from support.faults import drive
from typer.testing import CliRunner

import hiddencost
from hiddencost.cli.study import app as study_app
from hiddencost.study.catalog import load_spec
from hiddencost.study.driver import run_study
from hiddencost.study.spec import expand

SPEC = f"""
name: killme
compression:
  - method: none
  - method: magnitude
    sparsity: [0.5, 0.9]
  - method: quantize
    weight_bits: 4
method: [ilm, lp]
n_shot: [1, full]
seed: [0, 1]
params: {{epochs: 2}}
runner: "{SYNTHETIC}"
"""
SLEEP = "0.05"  # per epoch: 0.1 s per run, 32 runs
COMPARED = ("accuracy", "ece", "nll", "final_train_loss", "network_family")


@pytest.fixture(scope="module")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["hiddencost.study.driver", "hiddencost.records",
                                "hiddencost.run"])
    return ctx


@pytest.fixture
def study(tmp_path):
    spec_file = tmp_path / "killme.yaml"
    spec_file.write_text(SPEC)
    return spec_file, load_spec(spec_file)


def _done(db: Path) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _table(db: Path) -> dict[str, tuple]:
    con = sqlite3.connect(str(db))
    try:
        dup = con.execute("SELECT key FROM runs GROUP BY key HAVING COUNT(*) > 1").fetchall()
        assert dup == []
        rows = con.execute("SELECT key, status, metrics FROM runs").fetchall()
    except sqlite3.OperationalError:  # killed before the schema was created
        return {}
    finally:
        con.close()
    import json

    return {k: (s, tuple(json.loads(m)[c] for c in COMPARED) if m else None)
            for k, s, m in rows}


def _reference(tmp_path: Path, spec) -> dict[str, tuple]:
    from rich.console import Console

    os.environ[SLEEP_ENV] = "0"
    try:
        run_study(spec, out=tmp_path / "clean", console=Console(quiet=True), progress=False)
    finally:
        del os.environ[SLEEP_ENV]
    return _table(tmp_path / "clean" / "study.sqlite")


def _executions(log: Path) -> Counter:
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() \
        else Counter()


def _kill_and_resume(ctx, spec_file: Path, out: Path, log: Path, plan: list) -> list[dict]:
    """Run one driver per entry of ``plan`` and kill it there; return what each attempt saw."""
    db = out / "study.sqlite"
    history = []
    done_before: set[str] = set()
    for point in plan:
        env = {SLEEP_ENV: SLEEP, LOG_ENV: str(log)}
        kill_at = point if isinstance(point, str) else None  # the driver kills itself there
        proc = ctx.Process(target=drive, args=(str(spec_file), str(out), env, kill_at))
        proc.start()
        if isinstance(point, int):  # kill once `point` runs are done
            deadline = time.monotonic() + 60
            while _done(db) < point and proc.is_alive() and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(proc.pid, signal.SIGKILL)
        elif isinstance(point, float):  # kill after a delay
            time.sleep(point)
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGKILL)
        proc.join(60)
        assert proc.exitcode is not None
        table = _table(db) if db.exists() else {}
        done = {k for k, (s, _) in table.items() if s == "done"}
        assert done_before <= done, "a done run was lost"
        done_before = done
        history.append({"point": point, "exitcode": proc.exitcode, "done": len(done),
                        "running": sum(s == "running" for s, _ in table.values())})
    return history


def _check(final: dict, reference: dict, runs: list, log: Path, kills: int) -> dict:
    assert set(final) == set(reference) == {r.key for r in runs}  # none lost, none extra
    assert final == reference  # same statuses and metrics as a clean run
    executions = _executions(log)
    assert set(executions) == set(reference)
    repeated = sum(n - 1 for n in executions.values())
    assert repeated <= kills  # at most the one run in flight per kill is redone
    return {"rows": len(final), "repeated_executions": repeated}


def test_sigkill_at_deterministic_and_random_points_then_resume(forkserver, study, tmp_path):
    spec_file, spec = study
    runs = expand(spec)
    reference = _reference(tmp_path, spec)
    out, log = tmp_path / "out", tmp_path / "executions.log"
    rng = random.Random(0)
    plan = ["inserted:1", "claimed:2", "executed:2", "recorded:2", 9,
            *[round(rng.uniform(0.02, 0.4), 3) for _ in range(4)], None]
    history = _kill_and_resume(forkserver, spec_file, out, log, plan)
    kills = sum(h["exitcode"] == -signal.SIGKILL for h in history)
    assert [h["exitcode"] for h in history[:5]] == [-signal.SIGKILL] * 5
    assert history[-1]["exitcode"] == 0 and history[-1]["running"] == 0
    assert history[0]["done"] == 0 and history[4]["done"] >= 9
    summary = _check(_table(out / "study.sqlite"), reference, runs, log, kills)
    print(f"\nkill points {plan[:-1]}: {kills} kills, {summary}, history {history}")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_sigkill_at_many_random_points(forkserver, study, tmp_path, seed):
    spec_file, spec = study
    runs = expand(spec)
    reference = _reference(tmp_path, spec)
    out, log = tmp_path / "out", tmp_path / "executions.log"
    rng = random.Random(seed)
    plan = [round(rng.uniform(0.0, 0.5), 3) for _ in range(10)] + [None]
    history = _kill_and_resume(forkserver, spec_file, out, log, plan)
    kills = sum(h["exitcode"] == -signal.SIGKILL for h in history)
    summary = _check(_table(out / "study.sqlite"), reference, runs, log, kills)
    print(f"\nseed {seed}: {kills} kills, {summary}")


def test_sigkill_the_real_cli_and_run_it_again(study, tmp_path):
    """`python -m hiddencost study run` killed once 5 runs are done, then the same command run
    again (in this process, to spare a second ~10 s interpreter start)."""
    spec_file, spec = study
    out, log = tmp_path / "out", tmp_path / "executions.log"
    env = {**os.environ, SLEEP_ENV: SLEEP, LOG_ENV: str(log),
           "PYTHONPATH": os.pathsep.join([str(Path(hiddencost.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "hiddencost", "study", "run", str(spec_file), "--out",
           str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while _done(out / "study.sqlite") < 5 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done_at_kill = _done(out / "study.sqlite")
    assert 5 <= done_at_kill < len(expand(spec))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SLEEP_ENV, SLEEP)
        mp.setenv(LOG_ENV, str(log))
        again = CliRunner().invoke(study_app, cmd[4:])  # the same `run ...` arguments
    assert again.exit_code == 0, again.output
    assert f"{done_at_kill} done" in again.output
    final = _table(out / "study.sqlite")
    assert {s for s, _ in final.values()} == {"done"} and len(final) == len(expand(spec))
    assert sum(n - 1 for n in _executions(log).values()) <= 1


def test_two_drivers_share_one_store(forkserver, study, tmp_path):
    """Two live drivers on one study split the runs between them: claims are atomic, so every
    run executes exactly once and neither reclaims the other's running rows."""
    spec_file, spec = study
    out, log = tmp_path / "out", tmp_path / "executions.log"
    env = {SLEEP_ENV: SLEEP, LOG_ENV: str(log)}
    procs = [forkserver.Process(target=drive, args=(str(spec_file), str(out), env))
             for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    final = _table(out / "study.sqlite")
    assert {s for s, _ in final.values()} == {"done"} and len(final) == len(expand(spec))
    executions = _executions(log)
    assert set(executions) == set(final) and set(executions.values()) == {1}
    pids = Counter(line.split()[1] for line in log.read_text().splitlines())
    assert len(pids) == 2  # both drivers did part of the work
