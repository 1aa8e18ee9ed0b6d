"""Fidelity of a study's compressed backbones: which targets, their dense originals, the
measured entries (on the packaged EfficientNet-Lite0), failures and the cache."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from safetensors.torch import save_file
from support import SYNTHETIC

from hiddencost.backbones import create_model
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity import FidelityMetrics
from hiddencost.study import fidelity as study_fidelity_module
from hiddencost.study.fidelity import (
    FIDELITY_CACHE,
    FIDELITY_FILE,
    FidelityEntry,
    entry_of,
    fidelity_rows,
    fidelity_targets,
    read_fidelity,
    record_study_fidelity,
)
from hiddencost.study.fidelity import run_target_key as _run_key
from hiddencost.study.spec import expand, parse_spec

torch.set_num_threads(2)

GRID = """
name: fid
model: [resnet18, resnet50]
dataset: [digits]
compression:
  - method: none
  - method: magnitude
    sparsity: 0.5
  - name: acdc
    tag: "acdc-s{level}"
    checkpoint: "acdc/{arch}_s{level}.pth"
    levels: [90]
    unit: sparsity_percent
method: [ilm, lp]
n_shot: [1, full]
"""


def test_targets_one_per_compressed_backbone_and_dataset():
    spec = parse_spec(GRID)
    targets = fidelity_targets(spec)
    assert [(t.model, t.tags["compression"]) for t in targets] == [
        ("resnet18.tv_in1k", "magnitude-global-s0.50"),
        ("resnet18.acdc-s90", "acdc-90"),
        ("resnet50.tv_in1k", "magnitude-global-s0.50"),
        ("resnet50.acdc-s90", "acdc-90"),
    ]
    mag, acdc = targets[2], targets[3]
    assert mag.dense_model == acdc.dense_model == "resnet50.tv_in1k"
    assert mag.compression is not None and mag.compression.sparsity == 0.5
    assert mag.checkpoint is None
    assert acdc.compression is None and acdc.checkpoint == "acdc/resnet50_s90.pth"
    assert acdc.tags == {"family": "acdc", "compression": "acdc-90", "level": 90,
                         "unit": "sparsity_percent"}
    # every target's key is the key of its runs (4 per target: 2 methods × 2 budgets)
    runs = expand(spec)
    for t in targets:
        assert sum(_run_key(r) == t.run_key() for r in runs) == 4
    # only the targets with a run in the given runs
    only = [r for r in runs if r.identity["model"] == "resnet50.acdc-s90"][:1]
    assert [t.model for t in fidelity_targets(spec, only)] == ["resnet50.acdc-s90"]
    dense_runs = [r for r in runs if r.tags["family"] == "dense"]
    assert fidelity_targets(spec, dense_runs) == []


def test_study_fidelity_on_the_packaged_model(tmp_path):
    dense, _ = create_model("efficientnet_lite0")
    save_file({k: v.contiguous() for k, v in dense.state_dict().items()},
              str(tmp_path / "same.safetensors"))
    spec = parse_spec("""
name: fidreal
compression:
  - method: none
  - method: magnitude
    sparsity: 0.5
  - name: copy
    checkpoint: same.safetensors
    levels: [0]
  - name: gone
    checkpoint: missing.pth
    levels: [0]
method: [ilm]
""")
    out = tmp_path / "out"
    kw = dict(images_per_dataset=8, checkpoint_root=str(tmp_path), device="cpu",
              console=Console(quiet=True), progress=False)
    entries = record_study_fidelity(spec, expand(spec), out, **kw)
    by = {e.tags["compression"]: e for e in entries}
    assert list(by) == ["magnitude-global-s0.50", "copy-0", "gone-0"]
    copy = by["copy-0"]  # the dense weights as a checkpoint: a perfect copy
    assert copy.error is None and copy.metrics.n_images == 8
    assert copy.metrics.top1_agreement == 1.0 and copy.metrics.mean_kl < 1e-6
    assert copy.dense_model == "efficientnet_lite0.in1k" and copy.images == "digits test split"
    mag = by["magnitude-global-s0.50"].metrics
    assert 0.0 <= mag.top1_agreement <= 1.0 and mag.mean_kl > copy.metrics.mean_kl
    assert "missing.pth" in by["gone-0"].error and by["gone-0"].metrics is None
    assert "top1_agreement" not in by["gone-0"].to_json()
    doc = json.loads((out / FIDELITY_FILE).read_text())
    assert doc["images_per_dataset"] == 8 and doc["study"] == "fidreal"
    assert read_fidelity(out) == entries
    assert len(list((out / FIDELITY_CACHE).glob("fidelity-*.json"))) == 2
    again = record_study_fidelity(spec, expand(spec), out, **kw)
    assert again == entries  # from the cache
    with pytest.raises(HiddenCostError, match="at least 2 images"):
        record_study_fidelity(spec, expand(spec), out, **{**kw, "images_per_dataset": 1})


def test_unreadable_fidelity_file(tmp_path):
    assert read_fidelity(tmp_path) == []
    (tmp_path / FIDELITY_FILE).write_text("{not json")
    with pytest.raises(HiddenCostError, match="unreadable"):
        read_fidelity(tmp_path)
    (tmp_path / FIDELITY_FILE).write_text('{"entries": 3}')
    with pytest.raises(HiddenCostError, match="no 'entries' list"):
        read_fidelity(tmp_path)
    (tmp_path / FIDELITY_FILE).write_text('{"entries": [{"model": "m"}]}')
    with pytest.raises(HiddenCostError, match="not a fidelity entry"):
        read_fidelity(tmp_path)


def test_study_fidelity_command_after_a_run_without_it(tmp_path):
    import typer
    from typer.testing import CliRunner

    from hiddencost.cli.study import app as study_app
    from hiddencost.study.driver import run_study

    text = (f"name: later\nrunner: \"{SYNTHETIC}\"\n"
            "compression:\n  - method: none\n  - method: magnitude\n    sparsity: 0.5\n"
            "params:\n  epochs: 1\n")
    (tmp_path / "later.yaml").write_text(text)
    out = tmp_path / "out"
    run_study(parse_spec(text), out=out, console=Console(quiet=True), progress=False)
    assert not (out / FIDELITY_FILE).exists()  # a custom runner: not measured by default
    app = typer.Typer()
    app.add_typer(study_app, name="study")

    @app.callback()
    def main() -> None:
        """test app"""

    args = ["study", "fidelity", str(tmp_path / "later.yaml"), "--images", "4", "--device",
            "cpu", "--no-progress"]
    res = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "1 of 1 compressed backbone" in res.output and "magnitude-global-s0.50" in res.output
    (e,) = read_fidelity(out)
    assert e.metrics.n_images == 4 and e.error is None and e.model == "efficientnet_lite0.in1k"
    res = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "no done runs" in res.output


def test_only_expected_errors_are_recorded_the_rest_propagate(tmp_path, monkeypatch):
    spec = parse_spec(GRID)
    calls = []

    def missing(*args, **kwargs):
        calls.append(kwargs["compressed_checkpoint"])
        raise HiddenCostError(f"checkpoint {kwargs['compressed_checkpoint']!r} does not exist")

    monkeypatch.setattr(study_fidelity_module, "cached_fidelity", missing)
    console = Console(record=True, width=200)
    entries = record_study_fidelity(spec, expand(spec), tmp_path, images_per_dataset=4,
                                    checkpoint_root="/ckpt", console=console, progress=False)
    assert len(entries) == len(calls) == 4  # one failure never stops the others
    assert [e.error for e in entries][1] == \
        "checkpoint '/ckpt/acdc/resnet18_s90.pth' does not exist"
    assert all(e.metrics is None for e in entries)
    assert "fidelity not measured" in console.export_text()
    assert read_fidelity(tmp_path) == entries
    rows = fidelity_rows(entries)
    assert [r.label for r in rows][:2] == ["magnitude-global-s0.50", "acdc-90"]
    assert rows[0].metrics is None and rows[1].error == entries[1].error

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory")  # not an expected error: a bug or the machine

    monkeypatch.setattr(study_fidelity_module, "cached_fidelity", out_of_memory)
    with pytest.raises(RuntimeError, match="out of memory"):
        record_study_fidelity(spec, expand(spec), tmp_path / "oom", images_per_dataset=4,
                              console=Console(quiet=True), progress=False)
    assert not (tmp_path / "oom" / FIDELITY_FILE).exists()


def test_entry_json_round_trip():
    spec = parse_spec(GRID)
    target = fidelity_targets(spec)[0]
    metrics = FidelityMetrics(n_images=4, top1_agreement=0.5, top5_agreement=1.0, mean_kl=0.2,
                              max_kl=0.4, dense_mean_confidence=0.9,
                              compressed_mean_confidence=0.8)
    entry = entry_of(target, metrics)
    flat = entry.to_json()
    assert flat["compression"] == "magnitude-global-s0.50" and flat["mean_kl"] == 0.2
    assert flat["images"] == "digits test split" and flat["error"] is None
    assert FidelityEntry.from_json(json.loads(json.dumps(flat))) == entry
    failed = entry_of(target, error="gone")
    assert FidelityEntry.from_json(failed.to_json()) == failed
