"""Bad input gets one line (issue "Trust"): non-finite numbers, absurd learning rates, one-class
tasks, unreadable checkpoints, compressions on the fidelity command line."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import torch
from hiddencost_test_runners import synthetic_runner
from PIL import Image
from support import SYNTHETIC
from typer.testing import CliRunner

import hiddencost.run as run_module
from hiddencost.checkpoints import read_checkpoint_object
from hiddencost.cli import app
from hiddencost.compression import parse_compression
from hiddencost.data import DATASETS, few_shot_indices, load_dataset
from hiddencost.errors import HiddenCostError
from hiddencost.metrics import paper_ece
from hiddencost.run import make_config
from hiddencost.study.layout import StudyPaths
from hiddencost.study.spec import expand, parse_spec
from hiddencost.study.store import Owner, open_store
from hiddencost.study.worker import register_runner


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": float("inf")}, "invalid lr: Input should be a finite number"),
    ({"lr": float("nan")}, "invalid lr: Input should be a finite number"),
    ({"lr": 1e300}, "invalid lr: Input should be less than or equal to 1000000"),
    ({"compression": {"method": "magnitude", "sparsity": float("nan")}}, "finite number"),
])
def test_non_finite_and_absurd_numbers_are_refused(kwargs, match):
    with pytest.raises(HiddenCostError, match=match):
        make_config(**kwargs)


def test_a_spec_with_an_infinite_parameter_is_one_error():
    with pytest.raises(HiddenCostError, match=r"<spec>: invalid lr: .*finite"):
        parse_spec("name: x\nparams: {lr: .inf}\n")


def test_a_one_class_dataset_is_refused(tmp_path):
    for split in ("train", "test"):
        folder = tmp_path / split / "cat"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "a.png")
    with pytest.raises(HiddenCostError, match="has 1 class.*at least 2"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=8)


class _Code:
    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize("content", [b"not a checkpoint", pickle.dumps({"x": _Code()})])
def test_unreadable_checkpoints_are_one_line_without_unsafe_advice(tmp_path, content):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(HiddenCostError) as info:
        read_checkpoint_object(path)
    text = str(info.value)
    assert text.startswith(f"cannot read checkpoint {str(path)!r}: not a tensor-only checkpoint")
    assert "\n" not in text and "weights_only=False" not in text and "weights_only` set" not in text


@pytest.mark.parametrize("compressed, match", [
    ("w6", "invalid compression 'w6': weight_bits: bits must be one of"),
    ("magnitude:1.5", "sparsity 1.5 is not a fraction in (0, 1); write 0.015 or 1.5%"),
    ("magnitude:1.0", "sparsity 1.0 is not a fraction"),
    ("GARBAGE", "cannot read checkpoint"),
])
def test_fidelity_compressions_are_checked_like_run(tmp_path, compressed, match):
    if compressed == "GARBAGE":
        compressed = str(tmp_path / "garbage.pt")
        (tmp_path / "garbage.pt").write_bytes(b"garbage")
    result = CliRunner().invoke(app, ["fidelity", "--model", "resnet18", "--weights", "random",
                                      "--compressed", compressed, "--limit", "2",
                                      "--device", "cpu"])
    assert result.exit_code == 2
    text = (result.stderr or result.output).strip()
    assert len(text.splitlines()) == 1 and match in text.replace("\n", " "), text


def test_short_form_percentages_still_read(tmp_path):
    assert parse_compression("magnitude:90%").sparsity == pytest.approx(0.9)
    assert parse_compression("random-layer:0.5").scope == "layer"


def test_paper_ece_uses_the_reference_test_batch_not_the_training_batch(monkeypatch):
    seen = []

    def spy(logits, labels, batch_size):
        seen.append(batch_size)
        return paper_ece(logits, labels, batch_size=batch_size)

    monkeypatch.setattr(run_module, "paper_ece", spy)
    record = run_module.run_one(make_config(method="rlm", n_shot=1, epochs=1, canvas_size=48,
                                            inner_size=16, device="cpu"))
    assert record.config["batch_size"] == 8 and seen == [128]
    assert DATASETS["oxford_pets"][0].reference_test_batch == 64


@pytest.mark.parametrize("args", [
    ["run", "--method", "rlm", "--n-shot", "1", "--epochs", "1", "--out"],
    ["study", "run", "smoke", "--out"],
    ["report", "smoke", "--out"],
])
def test_an_output_that_is_a_file_is_refused_before_any_work(tmp_path, args):
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    result = CliRunner().invoke(app, [*args, str(taken)])
    assert result.exit_code == 2
    text = (result.stderr or result.output).strip()
    assert len(text.splitlines()) == 1 and "is a file; give a folder" in text, text
    assert taken.read_text() == "keep me"


def _two_run_study(tmp_path: Path, name: str) -> tuple[Path, Path, list[str]]:
    """A synthetic study of two runs: its file, its output folder, the `study run` arguments."""
    spec_file = tmp_path / f"{name}.yaml"
    spec_file.write_text(f"name: {name}\nmethod: [ilm, lp]\nparams: {{epochs: 1}}\n"
                         f"runner: {SYNTHETIC}\n")
    out = tmp_path / "out"
    return spec_file, out, ["study", "run", str(spec_file), "--out", str(out), "--no-progress"]


def test_study_run_exits_3_while_another_driver_holds_runs(tmp_path):
    spec_file, out, args = _two_run_study(tmp_path, "two")
    runs = expand(parse_spec(spec_file.read_text()))
    out.mkdir()
    with open_store(out / "study.sqlite") as db:  # a driver on another host holds one run
        db.add_pending("two", runs)
        assert db.claim(runs[0].key, Owner("elsewhere", 1, None, "token"))
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "1 done · 0 failed · 1 not run" in result.output
    assert "1 runs are not done: another driver holds them" in result.output


def test_n_shot_above_every_class_is_said_and_short_classes_recorded():
    labels = torch.tensor([0] * 6 + [1] * 3)
    every = few_shot_indices(labels, 7, seed=0)
    assert every.effective_counts == {0: 6, 1: 3}
    assert every.warnings() == ["N-shot 7 exceeds every class (largest 6): this run uses all "
                                "training data, under another run key than 'full'"]
    subset = few_shot_indices(labels, 5, seed=0)  # class 1 gives what it has
    assert subset.effective_counts == {0: 5, 1: 3} and subset.short_classes == [1]
    assert subset.warnings() == ["1 classes have fewer than 5 training examples and use what "
                                 "they have (effective counts are recorded)"]
    assert few_shot_indices(labels, 2, seed=0).warnings() == []


def test_a_corrupt_image_in_a_folder_is_named(tmp_path):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "a.jpg")
    bad = tmp_path / "train" / "dog" / "b.jpg"
    bad.write_bytes((tmp_path / "train" / "dog" / "a.jpg").read_bytes()[:40])  # truncated
    with pytest.raises(HiddenCostError, match=r"cannot read image .*b\.jpg.*--skip-unreadable"):
        load_dataset(f"imagefolder:{tmp_path}", image_size=8)
    # or left out, and counted
    task = load_dataset(f"imagefolder:{tmp_path}", image_size=8, skip_unreadable=True)
    assert len(task.train_labels) == 2 and task.skipped_images == [str(bad)]
    assert task.warnings() == [f"left out 1 unreadable image file(s): {bad}"]
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--dataset", f"imagefolder:{tmp_path}", "--skip-unreadable", "--method", "lp",
        "--epochs", "1", "--lp-image-size", "32", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: left out 1 unreadable image file(s)" in result.output
    refused = CliRunner().invoke(app, [
        "run", "--dataset", f"imagefolder:{tmp_path}", "--method", "lp", "--epochs", "1",
        "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "b.jpg" in (refused.stderr or refused.output)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["empty", "foreign"])
def test_report_refuses_a_file_that_is_not_a_store_and_leaves_it_alone(tmp_path, kind):
    db = tmp_path / "results.sqlite"
    if kind == "empty":
        db.write_bytes(b"")
    else:
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE notes (x)")
        con.commit()
        con.close()
    before = _digest(db)
    result = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "is not a hiddencost results store" in (result.stderr or result.output)
    assert _digest(db) == before and not (tmp_path / "r" / "index.html").exists()


def test_status_and_export_read_a_store_without_writing_it(tmp_path):
    spec_file, out, args = _two_run_study(tmp_path, "ro")
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    store = out / "study.sqlite"
    before = _digest(store)
    status = runner.invoke(app, ["study", "status", str(spec_file), "--out", str(out)])
    export = runner.invoke(app, ["study", "export", str(spec_file), "--out", str(out)])
    assert status.exit_code == 0 and export.exit_code == 0, status.output + export.output
    assert _digest(store) == before


def test_deleted_artifacts_are_noticed_and_verify_runs_them_again(tmp_path):
    _, out, args = _two_run_study(tmp_path, "v")
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    run_dirs = sorted((out / "artifacts").iterdir())
    shutil.rmtree(run_dirs[0])
    warned = runner.invoke(app, args)
    assert warned.exit_code == 0 and "1 done runs have no result.json" in warned.output
    assert "0 executed" in warned.output and not run_dirs[0].exists()
    spec_file = args[2]
    report = runner.invoke(app, ["report", spec_file, "--results", str(out), "--out",
                                 str(tmp_path / "report")])
    assert report.exit_code == 0, report.output
    assert "warning: 1 done run has no result.json" in report.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "1 done run has no result.json" in page and "--verify" in page
    export = runner.invoke(app, ["study", "export", spec_file, "--out", str(out)])
    assert "warning: 1 done runs have no result.json" in export.output
    rows = (out / f"{Path(spec_file).stem}.csv").read_text()
    assert rows.splitlines()[0].split(",")[-1] == "result_missing"
    verified = runner.invoke(app, [*args, "--verify"])
    assert verified.exit_code == 0 and "1 executed" in verified.output, verified.output
    assert (run_dirs[0] / "result.json").is_file()
    again = runner.invoke(app, args)
    assert "no result.json" not in again.output and "0 executed" in again.output


# --- item 6: a store or output folder that cannot be written ---------------------------------

def _immutable(path: Path, on: bool) -> bool:
    """``chattr ±i``: read-only even for root (file systems without it: False)."""
    try:
        done = subprocess.run(["chattr", "+i" if on else "-i", str(path)], capture_output=True)
    except FileNotFoundError:
        return False
    return done.returncode == 0


def test_unwritable_store_or_folder_errors_are_one_line(tmp_path):
    paths = StudyPaths.resolve(parse_spec("name: w\n"), tmp_path / "out")
    with pytest.raises(HiddenCostError, match=r"cannot write the study store .*readonly.*"
                                              r"restore write access"):
        with paths.writable():
            raise sqlite3.OperationalError("attempt to write a readonly database")
    with pytest.raises(HiddenCostError, match=r"cannot write .*fidelity.tmp: Permission denied"):
        with paths.writable():
            raise PermissionError(errno.EACCES, "Permission denied", "out/fidelity.tmp")
    with pytest.raises(FileNotFoundError):  # not a permission problem: left alone
        with paths.writable():
            raise FileNotFoundError(errno.ENOENT, "No such file", "x")


def test_rerun_on_a_read_only_store_is_one_line_and_changes_nothing(tmp_path):
    spec_file, out, args = _two_run_study(tmp_path, "rostore")
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    store = out / "study.sqlite"
    if not _immutable(store, True):
        pytest.skip("chattr +i is not available here (needs root on ext4-like file systems)")
    try:
        before = _digest(store)
        result = runner.invoke(app, [*args, "--verify"])
    finally:
        _immutable(store, False)
    assert result.exit_code == 2, result.output
    message = (result.stderr or result.output).strip()
    assert message.startswith("error: cannot write the study store") and "\n" not in message
    assert _digest(store) == before


def test_a_store_made_read_only_mid_study_is_one_line(tmp_path):
    out = tmp_path / "out"
    store = out / "study.sqlite"
    frozen = [str(out / "artifacts"), str(out)]

    def flipping(cfg, out_dir=None, **kwargs):
        """The synthetic run, then the output folder read-only: no new file can be made."""
        record = synthetic_runner(cfg, out_dir=out_dir, **kwargs)
        for path in frozen:
            subprocess.run(["chattr", "+i", path], check=True)
        return record

    register_runner("flipping", flipping)
    spec_file = tmp_path / "mid.yaml"
    spec_file.write_text("name: mid\nmethod: [ilm, lp]\nparams: {epochs: 1}\n"
                         "runner: flipping\n")
    out.mkdir()
    (out / "probe").write_text("")
    if not _immutable(out / "probe", True):
        pytest.skip("chattr +i is not available here (needs root on ext4-like file systems)")
    _immutable(out / "probe", False)
    try:
        result = CliRunner().invoke(app, ["study", "run", str(spec_file), "--out", str(out),
                                          "--no-progress"])
    finally:
        for path in frozen:
            _immutable(Path(path), False)
    assert result.exit_code == 2, result.output
    assert "error: cannot write" in (result.stderr or result.output)
    assert "Traceback" not in result.output and "failed:" not in result.output
    with open_store(store) as db:  # the first run is kept, the second is pending again
        assert sorted(r.status for r in db.rows().values()) == ["done", "pending"]
