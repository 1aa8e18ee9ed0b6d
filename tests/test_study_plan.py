"""The cost plan: backbone work per run by hand, the arithmetic of device and wall time, the
profile file, and `study plan` on a real (tiny) study."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from hiddencost.cli.study import app as study_app
from hiddencost.errors import HiddenCostError
from hiddencost.study.catalog import load_preset
from hiddencost.study.plan import (
    Throughput,
    make_plan,
    measure_throughput,
    read_profile,
    run_cost,
)
from hiddencost.study.spec import expand, parse_spec

SPEC = """
name: plan-test
model: [efficientnet_lite0]
dataset: [digits]
compression: [{method: none}, {method: magnitude, sparsity: 0.5}]
method: [ilm, flm, lp]
n_shot: [2, full]
seed: [0]
params: {epochs: 3, canvas_size: 48, inner_size: 16, lp_image_size: 32}
"""


def _identity(**kw):
    base = {"model": "efficientnet_lite0", "dataset": "digits", "epochs": 3,
            "canvas_size": 48, "inner_size": 16, "lp_image_size": 32, "n_shot": 2}
    return {**base, **kw}


def test_run_cost_by_hand():
    # digits: 10 classes, 1,347 / 450; 2-shot → n = 20
    ilm = run_cost(_identity(method="ilm"))
    assert ilm.throughput_key == "efficientnet_lite0@48"
    assert (ilm.train_images, ilm.eval_images) == (3 * 20, 3 * 20 + 450)
    flm = run_cost(_identity(method="flm"))
    assert (flm.train_images, flm.eval_images) == (60, 20 + 450)
    rlm_full = run_cost(_identity(method="rlm", n_shot=None))
    assert (rlm_full.train_images, rlm_full.eval_images) == (3 * 1347, 450)
    lp = run_cost(_identity(method="lp"))
    assert lp.throughput_key == "efficientnet_lite0@32"
    assert (lp.train_images, lp.eval_images) == (0, 1347 + 450) and lp.shared is not None
    xmr = run_cost({"model": "efficientnet_lite0", "dataset": "splice", "method": "xmr",
                    "n_shot": 10, "epochs": 4, "max_steps": 5})
    assert (xmr.train_images, xmr.eval_images) == (5 * 4, 637)  # 5 steps × batch 4 < 4·30


def test_plan_arithmetic_and_shared_lp_features():
    runs = expand(parse_spec(SPEC))
    tp = {"efficientnet_lite0@48": Throughput(10.0, 100.0),
          "efficientnet_lite0@32": Throughput(20.0, 200.0)}
    plan = make_plan(runs, packs=8, gpus=2, throughputs=tp, pack_speedup=4.0,
                     measure=lambda key: pytest.fail(f"measured {key}"))
    by = {(r["method"], r["n_shot"]): r for r in plan.rows}
    assert plan.total_runs == 12 and len(plan.rows) == 6
    # ilm 2-shot, 2 compressions: 2 × (60/10 + 510/100)
    assert by[("ilm", 2)]["device_s"] == pytest.approx(2 * (6 + 5.1))
    # lp: one feature set per compression, 1797/200 s, shared by its 2-shot and full runs
    assert by[("lp", 2)]["device_s"] == pytest.approx(1797 / 200)
    assert by[("lp", "full")]["device_s"] == pytest.approx(1797 / 200)
    vp = sum(r["device_s"] for r in plan.rows if r["method"] != "lp")
    assert plan.packable_s == pytest.approx(vp)
    assert plan.wall_s == pytest.approx((2 * 1797 / 200 + vp / 4) / 2)
    with pytest.raises(HiddenCostError, match="--gpus"):
        make_plan(runs, 1, gpus=0, throughputs=tp)


def test_profile_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"resnet50@224": {"train_img_s": 900, "eval_img_s": 3000},
                                "pack_speedup": 4.5}))
    tps, speedup = read_profile(path)
    assert tps == {"resnet50@224": Throughput(900.0, 3000.0)} and speedup == 4.5
    path.write_text(json.dumps({"resnet50@224": {}}))
    with pytest.raises(HiddenCostError, match="cannot read profile"):
        read_profile(path)


def test_measured_throughput_is_real():
    tp = measure_throughput("efficientnet_lite0@32", "cpu", steps=1)
    assert tp.train_img_s > 0 and tp.eval_img_s > tp.train_img_s / 10


def test_cli_plan_prints_counts_packs_and_wall_time(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(study_app, ["plan", str(spec), "--out", str(tmp_path / "o"),
                                            "--device", "cpu", "--pack", "4", "--gpus", "2"])
    assert result.exit_code == 0, result.output
    assert "12 runs to do" in result.output
    assert "packs of up to 4" in result.output and "on 2 device(s)" in result.output
    assert not (tmp_path / "o").exists()  # a plan writes nothing


def test_paper_lth_plan_expands_every_run():
    runs = expand(load_preset("paper-lth"))
    tp = {"resnet50@224": Throughput(100.0, 300.0)}
    plan = make_plan(runs, packs=len(runs), throughputs=tp,
                     measure=lambda key: pytest.fail(f"measured {key}"))
    assert plan.total_runs == len(runs) and not plan.unknown
    assert sum(r["runs"] for r in plan.rows) == len(runs)
