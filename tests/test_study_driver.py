"""The study driver on the synthetic runner: resume, failure isolation, retry, interruption,
merging unrecorded outcomes, the CLI, and submitit's debug / local clusters."""

from __future__ import annotations

import csv
import json
import os

import pytest
import typer
from hiddencost_test_runners import synthetic_runner
from rich.console import Console
from support import SYNTHETIC
from typer.testing import CliRunner

from hiddencost.cli.study import app as study_app
from hiddencost.study.driver import run_study
from hiddencost.study.identity import run_key
from hiddencost.study.layout import StudyPaths
from hiddencost.study.results import export_rows, load_records, study_status
from hiddencost.study.spec import expand, parse_spec
from hiddencost.study.store import Owner, open_store
from hiddencost.study.worker import Task, execute_task, register_runner

SPEC = f"""
name: syn
compression:
  - method: none
  - method: magnitude
    sparsity: [0.5, 0.9]
method: [ilm, lp]
n_shot: [1, full]
params: {{epochs: 2}}
runner: {SYNTHETIC}
"""
INTERRUPT_ENV = "HIDDENCOST_TEST_INTERRUPT_KEY"


def interrupting_runner(cfg, out_dir=None, cache=None, on_epoch=None):
    """The synthetic runner, but Ctrl-C arrives during the run named by INTERRUPT_ENV."""
    if run_key(cfg) == os.environ.get(INTERRUPT_ENV):
        raise KeyboardInterrupt
    return synthetic_runner(cfg, out_dir, cache, on_epoch)


def invalid_record_runner(cfg, out_dir=None, cache=None, on_epoch=None):
    """A runner whose record lacks required fields (nll, wall_time_s, ...)."""
    return {"config": cfg.model_dump(mode="json"), "accuracy": 0.5, "ece": 0.1}


# runners of these tests, registered by name in this process (the driver runs in it)
register_runner("interrupting", interrupting_runner)
register_runner("invalid-record", invalid_record_runner)


def _quiet() -> Console:
    return Console(quiet=True)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(study_app, name="study")

    @app.callback()
    def main() -> None:
        """test app"""

    return app


def _db_rows(out):
    with open_store(out / "study.sqlite") as db:
        return db.rows()


def test_runs_everything_once_and_rerun_does_nothing(tmp_path):
    spec = parse_spec(SPEC)
    report = run_study(spec, out=tmp_path, console=_quiet())
    assert report.total == 12 and report.executed == 12 and report.counts["done"] == 12
    again = run_study(spec, out=tmp_path, console=_quiet())
    assert again.executed == 0 and again.new == 0 and again.counts["done"] == 12
    rows = _db_rows(tmp_path)
    assert sorted(rows) == sorted(r.key for r in expand(spec))
    assert all(r.attempts == 1 and r.metrics["n_train"] is None for r in rows.values())
    records = load_records(spec, tmp_path)
    assert [r.config["method"] for r in records[:2]] == ["ilm", "ilm"]
    for run in expand(spec):
        assert (tmp_path / "artifacts" / run.key / "result.json").is_file()
        assert (tmp_path / "artifacts" / run.key / "outcome.json").is_file()
    # a changed hyper-parameter names new runs; the old ones stay
    more = run_study(spec.with_params(epochs=3), out=tmp_path, console=_quiet())
    assert more.executed == 12 and len(_db_rows(tmp_path)) == 24


def test_one_failure_does_not_stop_the_study_and_retry_reruns_it(tmp_path):
    spec = parse_spec(f"""
name: fail
compression:
  - method: none
  - name: broken
    checkpoint: missing.pth
    levels: [1]
  - method: magnitude
    sparsity: 0.5
method: [ilm]
checkpoint_root: {tmp_path}
runner: {SYNTHETIC}
""")
    report = run_study(spec, out=tmp_path / "out", console=_quiet())
    assert report.counts == {"done": 2, "failed": 1, "pending": 0, "running": 0}
    status = study_status(spec, tmp_path / "out")
    [(key, label, error)] = status.failed
    assert "broken-1" in label and error.startswith("HiddenCostError: checkpoint file")
    assert (tmp_path / "out" / "artifacts" / key / "error.txt").read_text().startswith(
        "Traceback")
    # without --retry-failed nothing is rerun; with it the fixed run succeeds
    assert run_study(spec, out=tmp_path / "out", console=_quiet()).executed == 0
    (tmp_path / "missing.pth").write_bytes(b"")
    retry = run_study(spec, out=tmp_path / "out", retry_failed=True, console=_quiet())
    assert retry.retried == 1 and retry.executed == 1 and retry.counts["done"] == 3
    assert _db_rows(tmp_path / "out")[key].attempts == 2


def test_nan_loss_is_recorded_as_failed(tmp_path):
    spec = parse_spec(f"method: [ilm, flm]\nparams: {{lr: 5.0}}\nrunner: {SYNTHETIC}\n")
    report = run_study(spec, out=tmp_path, console=_quiet())
    assert report.counts["failed"] == 2
    assert all(r.error.startswith("TrainingDivergedError: training loss became nan")
               for r in _db_rows(tmp_path).values())


def test_ctrl_c_releases_the_run_and_a_rerun_finishes_only_the_missing(tmp_path, monkeypatch):
    spec = parse_spec(SPEC.replace(SYNTHETIC, "interrupting"))
    runs = expand(spec)
    monkeypatch.setenv(INTERRUPT_ENV, runs[5].key)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, out=tmp_path, console=_quiet())
    rows = _db_rows(tmp_path)
    assert [rows[r.key].status for r in runs[:6]] == ["done"] * 5 + ["pending"]
    assert {rows[r.key].status for r in runs[5:]} == {"pending"}
    monkeypatch.delenv(INTERRUPT_ENV)
    report = run_study(spec, out=tmp_path, console=_quiet())
    assert report.executed == len(runs) - 5 and report.counts["done"] == len(runs)


def test_unrecorded_outcomes_are_merged_not_rerun(tmp_path):
    """A driver killed after a run finished but before recording it: the outcome file is
    merged at the next start, and the run is not executed again."""
    spec = parse_spec(SPEC)
    runs = expand(spec)
    paths = StudyPaths.resolve(spec, tmp_path)
    with open_store(paths.store) as db:
        db.add_pending(spec.name, runs)
        assert db.claim(runs[0].key, Owner("gone-host", 1, None, "x"))
    execute_task(Task(runs[0].key, {**runs[0].identity}, str(paths.run_dir(runs[0].key)),
                      SYNTHETIC))
    report = run_study(spec, out=tmp_path, console=_quiet())
    assert report.merged == 1 and report.executed == len(runs) - 1
    assert _db_rows(tmp_path)[runs[0].key].status == "done"


def test_cli_run_status_export_and_presets(tmp_path):
    spec_file = tmp_path / "syn.yaml"
    spec_file.write_text(SPEC)
    runner, app, out = CliRunner(), _app(), str(tmp_path / "out")
    res = runner.invoke(app, ["study", "run", str(spec_file), "--out", out, "--max-runs", "5",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "12 runs · 0 done · 0 failed · 5 to run now" in res.output
    res = runner.invoke(app, ["study", "run", str(spec_file), "--out", out, "--dry-run"])
    assert "12 runs · 5 done · 0 failed · 7 to run" in res.output
    res = runner.invoke(app, ["study", "status", str(spec_file), "--out", out])
    assert res.exit_code == 0 and "│   12 │    5 │      0 │       0 │       7 │" in res.output
    res = runner.invoke(app, ["study", "run", str(spec_file), "--out", out])
    assert res.exit_code == 0 and "12 done · 0 failed · 0 not run · 7 executed" in res.output
    res = runner.invoke(app, ["study", "export", str(spec_file), "--out", out])
    assert res.exit_code == 0 and "wrote 12 rows" in res.output
    with open(tmp_path / "out" / "syn.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 12 and {r["status"] for r in rows} == {"done"}
    assert {"key", "compression", "level", "method", "n_shot_label", "accuracy", "ece",
            "host", "elapsed_s", "compression_sparsity"} <= set(rows[0])
    pq = pytest.importorskip("pyarrow.parquet", reason="parquet export needs pyarrow")
    res = runner.invoke(app, ["study", "export", str(spec_file), "--out", out, "--format",
                              "parquet", "--output", str(tmp_path / "x.parquet")])
    assert res.exit_code == 0, res.output
    table = pq.read_table(tmp_path / "x.parquet")
    assert table.num_rows == 12
    assert table.column("accuracy").to_pylist() == [float(r["accuracy"]) for r in rows]
    res = runner.invoke(app, ["study", "list-presets"])
    assert res.exit_code == 0 and "quickstart" in res.output and "paper-lth" in res.output
    res = runner.invoke(app, ["study", "show-preset", "smoke"])
    assert res.exit_code == 0 and res.output.startswith("name: smoke")


@pytest.mark.parametrize("args, message", [
    (["run", "nope.yaml"], "error: study file nope.yaml does not exist and is not a preset"),
    (["status", "nope"], "error: study file nope does not exist"),
    (["show-preset", "nope"], "error: unknown preset 'nope'"),
    (["run", "smoke", "--executor", "dask"], "error: unknown executor 'dask'"),
    (["export", "smoke", "--format", "xlsx"], "error: unknown export format 'xlsx'"),
    (["run", "smoke", "--store", "postgresql://h/db"], "error: unknown store"),
])
def test_cli_errors_are_one_line(tmp_path, args, message):
    res = CliRunner().invoke(_app(), ["study", *args, "--out", str(tmp_path)]
                             if args[0] != "show-preset" else ["study", *args])
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith(message) and res.output.strip().count("\n") == 0


def test_cli_bad_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [a\nseed: {\n")
    res = CliRunner().invoke(_app(), ["study", "run", str(bad)])
    assert res.exit_code == 2 and "is not valid YAML" in res.output
    assert res.output.strip().count("\n") == 0


def test_cli_exit_status_1_when_runs_failed(tmp_path):
    spec_file = tmp_path / "nan.yaml"
    spec_file.write_text(f"params: {{lr: 5.0}}\nrunner: {SYNTHETIC}\n")
    res = CliRunner().invoke(_app(), ["study", "run", str(spec_file), "--out",
                                      str(tmp_path / "o"), "--no-progress"])
    assert res.exit_code == 1 and "TrainingDivergedError" in res.output
    res = CliRunner().invoke(_app(), ["study", "status", str(spec_file), "--out",
                                      str(tmp_path / "o"), "--failed"])
    assert "failed" in res.output and "TrainingDivergedError" in res.output


def test_slurm_executor_on_submitits_debug_cluster(tmp_path):
    pytest.importorskip("submitit", reason="the slurm extra (submitit) is not installed")
    spec = parse_spec(SPEC)
    report = run_study(spec, out=tmp_path, executor="slurm", console=_quiet(),
                       executor_options={"cluster": "debug", "runs_per_job": 5, "poll_s": 0.01})
    assert report.counts["done"] == 12 and report.executed == 12
    local = run_study(spec, out=tmp_path / "local", console=_quiet())
    assert local.counts["done"] == 12
    strip = ("elapsed_s", "started_at", "finished_at", "host", "wall_time_s", "artifacts")
    assert ([{k: v for k, v in r.items() if k not in strip} for r in export_rows(spec, tmp_path)]
            == [{k: v for k, v in r.items() if k not in strip}
                for r in export_rows(spec, tmp_path / "local")])


def test_slurm_executor_on_submitits_local_cluster(tmp_path):
    """Real subprocess jobs: each job writes its outcome files, the driver merges them."""
    pytest.importorskip("submitit", reason="the slurm extra (submitit) is not installed")
    spec = parse_spec(SPEC.replace("method: [ilm, lp]", "method: [ilm]")
                      .replace("sparsity: [0.5, 0.9]", "sparsity: 0.5"))
    report = run_study(spec, out=tmp_path, executor="slurm", console=_quiet(),
                       executor_options={"cluster": "local", "runs_per_job": 4, "poll_s": 0.2,
                                         "timeout_min": 5})
    assert report.counts["done"] == 4 and report.executed == 4
    assert all(r.metrics["n_train"] is None for r in _db_rows(tmp_path).values())
    outcomes = [json.loads((tmp_path / "artifacts" / r.key / "outcome.json").read_text())
                for r in expand(spec)]
    assert len({o["pid"] for o in outcomes}) == 1 and outcomes[0]["pid"] != os.getpid()
    assert len(list((tmp_path / "slurm").glob("*_result.pkl"))) == 1  # one array job


def test_on_event_reports_each_step_in_order(tmp_path):
    spec = parse_spec(SPEC)
    runs = expand(spec)
    events = []
    run_study(spec, out=tmp_path, console=_quiet(), max_runs=2,
              on_event=lambda step, key: events.append((step, key)))
    assert events == [("inserted", None)] + [
        (step, run.key) for run in runs[:2] for step in ("claimed", "executed", "recorded")]


def test_a_runner_record_is_checked_against_the_schema(tmp_path):
    spec = parse_spec(SPEC.replace(SYNTHETIC, "invalid-record")
                      .replace("method: [ilm, lp]", "method: [ilm]"))
    report = run_study(spec, out=tmp_path, console=_quiet())
    assert report.counts["failed"] == len(expand(spec))
    errors = {r.error for r in _db_rows(tmp_path).values()}
    assert all("is not a valid result record: nll: Field required" in e for e in errors)


def test_paper_crossmodal_dry_run_passes(tmp_path):
    res = CliRunner().invoke(_app(), ["study", "run", "paper-crossmodal", "--out",
                                      str(tmp_path / "out"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "120 runs · 0 done · 0 failed · 120 to run" in " ".join(res.output.split())


def test_a_study_refuses_to_add_runs_of_another_precision_before_running(tmp_path):
    from hiddencost.errors import HiddenCostError
    from hiddencost.study.outcome import RunOutcome
    from hiddencost.study.spec import PlannedRun

    spec = parse_spec(f"name: p\nrunner: {SYNTHETIC}\nmethod: [ilm]\nn_shot: [1, 2]\n")
    with open_store(tmp_path / "study.sqlite") as db:  # a store holding bf16 (GPU) results
        db.add_pending("gpu", [PlannedRun("g", {}, {})])
        db.record(RunOutcome(key="g", status="done", precision="bf16"))
    with pytest.raises(HiddenCostError, match=r"holds bf16 results but these runs would train "
                       r"in fp32 \(--precision auto, device cpu\): run with --precision bf16"):
        run_study(spec, out=tmp_path, environment={"device": "cpu"}, fidelity=False)
    assert study_status(spec, tmp_path).counts["done"] == 0


# --- issue 28: --verify, a full disk, --max-runs ---------------------------------------------

TWO_RUNS = f"name: two\nmethod: [ilm, lp]\nparams: {{epochs: 1}}\nrunner: {SYNTHETIC}\n"


def _break(result, how: str, elsewhere) -> None:
    """Make a done run's result.json unreadable as a record, ``how``."""
    if how == "symlink":  # to a valid record elsewhere: hiddencost never writes one there
        elsewhere.write_text(result.read_text())
        result.unlink()
        result.symlink_to(elsewhere)
    else:
        result.write_text({"garbage": "{not json", "list": "[]", "not-a-record": '{"a": 1}'}[how])


@pytest.mark.parametrize("how", ["garbage", "list", "not-a-record", "symlink"])
def test_verify_reruns_a_result_that_does_not_read_back_as_the_report_reads_it(tmp_path, how):
    from hiddencost.study.results import read_record, read_study, record_or_metrics

    spec = parse_spec(TWO_RUNS)
    out = tmp_path / "out"
    run_study(spec, out=out, console=_quiet())
    broken, kept = (out / "artifacts" / r.key for r in expand(spec))
    elsewhere = tmp_path / "elsewhere.json"
    _break(broken / "result.json", how, elsewhere)
    before = elsewhere.read_bytes() if how == "symlink" else None
    # the report, export and run all count it missing: the same reader
    study = read_study(spec, out)
    assert study.missing_results() == [broken.name]
    [(_, row), _] = list(study.done())
    assert record_or_metrics(broken, row)["result_missing"] is True
    assert [r["result_missing"] for r in export_rows(spec, out)] == [True, False]
    warned = run_study(spec, out=out, console=_quiet())  # looks at the files, reads none
    assert warned.missing == (how == "symlink") and warned.executed == 0
    verified = run_study(spec, out=out, console=_quiet(), verify=True)
    assert verified.verified == 1 and verified.executed == 1 and verified.counts["done"] == 2
    result = broken / "result.json"
    assert not result.is_symlink() and read_record(result).config["method"] == "ilm"
    assert read_study(spec, out).missing_results() == []
    assert _db_rows(out)[broken.name].attempts == 2 and _db_rows(out)[kept.name].attempts == 1
    if before is not None:  # the link's target is left as it was
        assert elsewhere.read_bytes() == before


DISK_FULL = {"errno": None}


def disk_full_runner(cfg, out_dir=None, cache=None, on_epoch=None):
    """The synthetic runner, but its result cannot be written while DISK_FULL names an errno."""
    if DISK_FULL["errno"] is not None:
        code = DISK_FULL["errno"]
        raise OSError(code, os.strerror(code), str(out_dir / "result.json.tmp"))
    return synthetic_runner(cfg, out_dir, cache, on_epoch)


register_runner("disk-full", disk_full_runner)


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT"])
def test_a_full_disk_leaves_runs_pending_and_the_same_command_finishes_them(tmp_path, code,
                                                                             monkeypatch):
    import errno

    monkeypatch.setitem(DISK_FULL, "errno", getattr(errno, code))
    spec_file = tmp_path / "full.yaml"
    spec_file.write_text(TWO_RUNS.replace(SYNTHETIC, "disk-full"))
    args = ["study", "run", str(spec_file), "--out", str(tmp_path / "out"), "--no-progress"]
    res = CliRunner().invoke(_app(), args)
    assert res.exit_code == 2, res.output
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "the disk is full" in error[0] and os.strerror(
        getattr(errno, code)) in error[0] and "run the same command again" in error[0]
    assert not any(line.startswith("failed ") for line in res.output.splitlines())
    rows = _db_rows(tmp_path / "out")
    assert {r.status for r in rows.values()} == {"pending"}
    # the first run found the disk full; the second was never started
    assert sorted(r.attempts for r in rows.values()) == [0, 1]
    assert not any((tmp_path / "out" / "artifacts" / k / "outcome.json").exists() for k in rows)
    monkeypatch.setitem(DISK_FULL, "errno", None)  # space freed
    again = CliRunner().invoke(_app(), args)
    assert again.exit_code == 0, again.output
    assert "2 done · 0 failed · 0 not run · 2 executed" in again.output
    assert {r.status for r in _db_rows(tmp_path / "out").values()} == {"done"}


def test_a_pack_that_finds_the_disk_full_is_pending_at_once(tmp_path, monkeypatch):
    """A full disk is not the pack's fault: its runs are not retried in halves, and none is
    failed; a library that reports the error as text (safetensors) counts too."""
    import hiddencost.run as run_module
    from hiddencost.study.outcome import disk_full
    from hiddencost.study.worker import execute_pack

    calls = []

    def full(configs, out_dirs, **kwargs):
        calls.append(len(configs))
        raise RuntimeError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                           'message: "No space left on device" })')

    monkeypatch.setattr(run_module, "run_pack", full)
    runs = expand(parse_spec("name: p\nmethod: [ilm]\nn_shot: [1, 2]\nparams: {epochs: 1}\n"))
    tasks = [Task(r.key, {**r.identity}, str(tmp_path / r.key)) for r in runs]
    outcomes = execute_pack(tasks)
    assert calls == [2] and [o.status for o in outcomes] == ["pending", "pending"]
    assert "No space left on device" in outcomes[0].error
    assert not any((tmp_path / r.key / "outcome.json").exists() for r in runs)
    assert not disk_full(RuntimeError("training loss became nan"))


@pytest.mark.parametrize("value", ["-1", "0"])
def test_max_runs_below_one_is_one_line_before_any_work(tmp_path, value):
    spec_file = tmp_path / "two.yaml"
    spec_file.write_text(TWO_RUNS)
    res = CliRunner().invoke(_app(), ["study", "run", str(spec_file), "--out",
                                      str(tmp_path / "out"), "--max-runs", value])
    assert res.exit_code == 2, res.output
    assert res.output.strip() == (f"error: --max-runs must be at least 1, got {value} "
                                  "(--dry-run shows what would run without running it)")
    assert not (tmp_path / "out").exists()
    from hiddencost.errors import HiddenCostError

    with pytest.raises(HiddenCostError, match="--max-runs must be at least 1"):
        run_study(parse_spec(TWO_RUNS), out=tmp_path / "out", max_runs=-1)


def test_a_full_disk_under_the_driver_itself_is_one_line(tmp_path):
    import errno

    from hiddencost.errors import HiddenCostError

    paths = StudyPaths.resolve(parse_spec("name: w\n"), tmp_path / "out")
    with pytest.raises(HiddenCostError, match=r"cannot write out/fidelity.tmp: No space left on "
                                              r"device; the disk is full: free some space"):
        with paths.writable():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "out/fidelity.tmp")
