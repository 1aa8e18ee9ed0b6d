"""End to end: a tiny real study (the genuine EfficientNet-Lite0 on digits) through the
`study run` command, then status, export and a rerun that executes nothing."""

from __future__ import annotations

import csv
import json

import pandas as pd
import typer
from typer.testing import CliRunner

from hiddencost.cli.study import app as study_app
from hiddencost.study.catalog import load_preset
from hiddencost.study.spec import expand


def test_tiny_real_study_through_the_cli(tmp_path):
    app = typer.Typer()
    app.add_typer(study_app, name="study")

    @app.callback()
    def main() -> None:
        """test app"""

    spec = load_preset("smoke")  # efficientnet_lite0 → digits, 1-shot, 1 epoch, 2 runs
    runs = expand(spec)
    assert len(runs) == 2 and {r.identity["canvas_size"] for r in runs} == {32}
    runner, out = CliRunner(), str(tmp_path / "out")
    res = runner.invoke(app, ["study", "run", "smoke", "--out", out, "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "2 done · 0 failed · 0 not run · 2 executed" in res.output
    # upstream fidelity of the one compressed backbone, on 256 digits test images
    assert "fidelity: 1 of 1 compressed backbone × dataset pairs measured" in res.output
    (fid,) = json.loads((tmp_path / "out" / "fidelity.json").read_text())["entries"]
    assert fid["compression"] == "magnitude-global-s0.50" and fid["n_images"] == 256
    assert fid["model"] == runs[1].identity["model"] and fid["error"] is None
    assert 0.0 <= fid["top1_agreement"] <= 1.0 and fid["mean_kl"] > 0.0
    for run in runs:
        record = json.loads((tmp_path / "out" / "artifacts" / run.key / "result.json")
                            .read_text())
        assert record["config"]["n_shot"] == 1 and record["n_test"] == 450
        assert 0.0 <= record["accuracy"] <= 1.0 and len(record["label_mapping"]) == 10
    sparsity = [json.loads((tmp_path / "out" / "artifacts" / r.key / "result.json")
                           .read_text())["sparsity"] for r in runs]
    assert sparsity[0] < 0.01 and abs(sparsity[1] - 0.5) < 1e-6  # dense has a few zeros
    res = runner.invoke(app, ["study", "status", "smoke", "--out", out])
    assert "│    2 │    2 │      0 │       0 │       0 │" in res.output
    res = runner.invoke(app, ["study", "export", "smoke", "--out", out])
    assert res.exit_code == 0
    with open(tmp_path / "out" / "smoke.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["compression"] for r in rows] == ["dense", "magnitude-global-s0.50"]
    assert all(r["status"] == "done" and float(r["accuracy"]) >= 0 for r in rows)
    res = runner.invoke(app, ["study", "run", "smoke", "--out", out, "--device", "cpu",
                              "--no-progress"])
    assert res.exit_code == 0 and "0 executed" in res.output
    # one seed per point: PIEs are the examples the two runs predict differently
    from hiddencost import load_results
    from hiddencost.predictions import read_predictions

    dense, pruned = (read_predictions(tmp_path / "out" / "artifacts" / r.key) for r in runs)
    table = load_results("smoke", out=out, forgetting=True)
    assert pd.isna(table["pie_rate"].iloc[0]) and table["dense_disagreement"].iloc[1] == 0.0
    assert table["pie_rate"].iloc[1] == 100 * (dense.predicted != pruned.predicted).mean()
    assert table["lost_rate"].iloc[1] == 100 * (dense.correct & ~pruned.correct).mean()
    assert table["gained_rate"].iloc[1] == 100 * (~dense.correct & pruned.correct).mean()
    assert "pie_rate" not in load_results("smoke", out=out)
