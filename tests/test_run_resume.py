"""Kill-safe runs: a VP run saves its state at every epoch end (``state.pt`` in its folder) and
a run killed mid-way resumes from its last finished epoch, ending bitwise where the
uninterrupted run ends (on one CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hiddencost.prompting.run_state import STATE_FILE, StateFile
from hiddencost.run import RunCache, make_config, run_one

RUN = {"method": "ilm", "n_shot": 10, "epochs": 4, "canvas_size": 48, "inner_size": 16,
       "device": "cpu", "save_prompt_history": True}
CLI = ["run", "--method", "ilm", "--n-shot", "10", "--epochs", "4", "--canvas-size", "48",
       "--inner-size", "16", "--device", "cpu", "--save-prompt-history"]


class Preempted(Exception):
    """Stands in for a kill at an epoch end (after the state was saved)."""


def _numbers(folder: Path) -> dict:
    record = json.loads((folder / "result.json").read_text())
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in record["history"]]
    return {"metrics": [record[k] for k in ("accuracy", "ece", "nll", "brier", "paper_ece")],
            "per_class": record["per_class_accuracy"], "mappings": record["mapping_history"],
            "history": history}


def _tensors(folder: Path) -> dict:
    out = {}
    for name in ("weights.safetensors", "prompt_history.safetensors"):
        out.update({f"{name}:{k}": v for k, v in load_file(str(folder / name)).items()})
    return out


def _same(a: Path, b: Path) -> None:
    assert _numbers(a) == _numbers(b)
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert ta[k].equal(tb[k]), k


@pytest.fixture(scope="module")
def cache() -> RunCache:
    return RunCache()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, cache) -> Path:
    folder = tmp_path_factory.mktemp("whole")
    run_one(make_config(**RUN), out_dir=folder, cache=cache)
    assert not (folder / STATE_FILE).exists()  # removed once the result is written
    return folder


def test_a_run_stopped_at_an_epoch_end_resumes_to_the_same_result(uninterrupted, cache,
                                                                    tmp_path):
    def stop(record):
        if record.epoch == 2:
            raise Preempted

    with pytest.raises(Preempted):
        run_one(make_config(**RUN), out_dir=tmp_path, cache=cache, on_epoch=stop)
    assert (tmp_path / STATE_FILE).is_file() and not (tmp_path / "result.json").exists()
    seen = []
    run_one(make_config(**RUN), out_dir=tmp_path, cache=cache, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [3, 4]  # epochs 1-2 were not trained again
    _same(uninterrupted, tmp_path)


def test_a_state_of_another_configuration_or_a_torn_file_is_not_resumed(tmp_path):
    mine = StateFile(tmp_path / STATE_FILE, "run a")
    mine.save({"next_epoch": 2, "x": torch.arange(3)})
    assert mine.load()["next_epoch"] == 2 and mine.load()["x"].tolist() == [0, 1, 2]
    assert StateFile(tmp_path / STATE_FILE, "run b").load() is None
    (tmp_path / STATE_FILE).write_bytes(b"torn")
    assert mine.load() is None
    mine.remove()
    assert not (tmp_path / STATE_FILE).exists() and mine.load() is None


def test_a_killed_subprocess_resumes_to_the_same_result(uninterrupted, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "hiddencost", *CLI, "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "COLUMNS": "120"})
    deadline = time.monotonic() + 300
    while not (out / STATE_FILE).exists():  # the first epoch end
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert not (out / "result.json").exists()  # killed mid-run
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not (out / STATE_FILE).exists()
    _same(uninterrupted, out)
