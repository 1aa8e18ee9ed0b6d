"""A CLIP study end to end: UPop-format checkpoints of a tiny random CLIP as a checkpoint
family (dense file + a 2×-narrower file), VP runs through `study run`, and the report's
Table 2-style section."""

from __future__ import annotations

import json

import pytest
import torch
from clip_tiny import TINY_NAME, tiny_clip_entry
from typer.testing import CliRunner

from hiddencost.backbones import create_model

SPEC = f"""
name: clip-tiny
model: [{TINY_NAME}]
dataset: [digits]
compression:
  - name: dense
    checkpoint: "upop/tiny.pth"
    unit: compression_ratio
    levels: [1]
  - name: upop
    checkpoint: "upop/tiny_{{level}}x.pth"
    unit: compression_ratio
    levels: [2]
method: [vp, zero-shot]
n_shot: [2]
seed: [0, 1]
params: {{epochs: 1}}
"""


def _write_checkpoints(root):
    """The tiny model's (seeded) weights, and a copy whose every MLP keeps its even hidden
    units (c_fc rows, c_proj columns), each as a UPop file: {"model": state dict}."""
    tiny_clip_entry()
    torch.manual_seed(0)
    model, _ = create_model(TINY_NAME, weights="random")
    state = model.clip.state_dict()
    (root / "upop").mkdir(parents=True)
    torch.save({"model": state}, root / "upop" / "tiny.pth")
    pruned = dict(state)
    for key in [k for k in state if k.endswith("mlp.c_fc.weight")]:
        prefix = key.removesuffix("c_fc.weight")
        keep = torch.arange(0, state[key].shape[0], 2)
        pruned[key] = state[key][keep]
        pruned[prefix + "c_fc.bias"] = state[prefix + "c_fc.bias"][keep]
        pruned[prefix + "c_proj.weight"] = state[prefix + "c_proj.weight"][:, keep]
    torch.save({"model": pruned}, root / "upop" / "tiny_2x.pth")
    return sum(v.numel() for v in state.values()), sum(v.numel() for v in pruned.values())


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_a_clip_study_runs_and_its_report_has_the_table_2_section(tmp_path):
    from hiddencost.cli import app
    from hiddencost.report.analyses import clip_table
    from hiddencost.report.table import table_from_spec
    from hiddencost.study.spec import parse_spec

    dense_n, pruned_n = _write_checkpoints(tmp_path / "ck")
    spec_file = tmp_path / "clip.yaml"
    spec_file.write_text(SPEC)
    out = tmp_path / "study"
    result = CliRunner().invoke(app, [
        "study", "run", str(spec_file), "--out", str(out), "--device", "cpu", "--no-progress",
        "--checkpoint-root", str(tmp_path / "ck")])
    assert result.exit_code == 0, result.output
    assert "8 done" in result.output
    # fidelity of the 2× file against the study's dense point (the dense family's file)
    [entry] = json.loads((out / "fidelity.json").read_text())["entries"]
    assert entry["error"] is None and entry["compression"] == "upop-2"
    assert entry["n_images"] == 256 and entry["mean_kl"] > 0

    df = table_from_spec(parse_spec(SPEC), out)
    assert set(df["parameters"]) == {dense_n, pruned_n}  # as the UPop source measured them
    t = clip_table(df)
    assert len(t) == 4  # digits × {vp, zero-shot} × {dense, 2×}
    dense = t[t["family"] == "dense"]
    assert list(dense["compression_name"]) == ["dense", "dense"]
    upop = t[t["family"] == "upop"]
    assert list(upop["compression_name"]) == ["upop 2× smaller"] * 2
    assert upop["parameters_m"].tolist() == pytest.approx([pruned_n / 1e6] * 2)
    merged = upop.merge(dense, on="method", suffixes=("", "_dense"))
    assert merged["delta"].tolist() == pytest.approx(merged["mean_dense"] - merged["mean"])

    report = tmp_path / "report"
    result = CliRunner().invoke(app, ["report", str(spec_file), "--results", str(out),
                                      "--out", str(report)])
    assert result.exit_code == 0, result.output
    html = (report / "index.html").read_text()
    assert "the paper&#x27;s Table 2" in html or "the paper's Table 2" in html
    assert "digits · vp" in html and "upop 2× smaller" in html
    assert (report / "tables" / "clip.csv").is_file()


def test_clip_fidelity_is_zero_shot_agreement_over_imagenet_classes(tmp_path):
    from hiddencost.clip.towers import ZeroShotScores
    from hiddencost.fidelity.measure import FidelityRequest, measure_fidelity

    _write_checkpoints(tmp_path)
    dense, pruned = str(tmp_path / "upop" / "tiny.pth"), str(tmp_path / "upop" / "tiny_2x.pth")
    same = measure_fidelity(FidelityRequest(model=TINY_NAME, checkpoint=dense,
                                            compressed_checkpoint=dense, limit=24))
    assert same.top1_agreement == 1.0 and same.mean_kl == pytest.approx(0.0, abs=1e-9)
    other = measure_fidelity(FidelityRequest(model=TINY_NAME, checkpoint=dense,
                                             compressed_checkpoint=pruned, limit=24))
    assert other.mean_kl > 0 and other.compression["method"] == "upop"
    model, _ = create_model(TINY_NAME, checkpoint=dense)
    scores = ZeroShotScores(model)(torch.rand(3, 3, 64, 64))
    assert scores.shape == (3, 1000)  # one column per ImageNet class


def test_the_paper_clip_preset_is_table_2s_grid(tmp_path):
    from hiddencost.cli import app
    from hiddencost.study.catalog import load_preset
    from hiddencost.study.spec import expand

    runs = expand(load_preset("paper-clip"))
    assert len(runs) == 1008  # 3 models × 7 datasets × 8 budgets × {vp, ilm} × 3 seeds
    assert {r.identity["model"] for r in runs} == {"clip_vit_l14_336.openai"}
    files = {r.identity["checkpoint"] for r in runs}
    assert files == {"upop/clip_large_retrieval_coco.pth",
                     "upop/clip_large_retrieval_coco_2x_compressed.pth",
                     "upop/clip_large_retrieval_coco_4x_compressed.pth"}
    first = runs[0].identity
    assert (first["method"], first["lr"], first["batch_size"], first["epochs"],
            first["canvas_size"]) == ("vp", 40.0, 16, 10, 336)
    assert {r.tags["family"] for r in runs} == {"dense", "upop"}
    # Table 2's texts and CLIP's own transform, in every run
    assert {(r.identity["options"]["class_texts"], r.identity["options"]["preprocess"])
            for r in runs} == {("reference", "clip")}
    res = CliRunner().invoke(app, ["study", "run", "paper-clip", "--out", str(tmp_path / "o"),
                                   "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "1008 runs · 0 done · 0 failed · 1008 to run" in " ".join(res.output.split())


@pytest.mark.slow
@pytest.mark.parametrize("method", ["vp", "ilm"])
def test_clip_vit_b32_runs_from_the_command_line(method, tmp_path):
    from hiddencost.cli import app

    res = CliRunner().invoke(app, ["run", "--model", "clip_vit_b32", "--weights", "random",
                                   "--dataset", "digits", "--method", method, "--n-shot", "2",
                                   "--epochs", "1", "--device", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["config"]["model"] == "clip_vit_b32.openai" and record["n_test"] == 450
    assert (record["label_mapping"] is None) == (method == "vp")
