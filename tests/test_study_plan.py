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
    Profile,
    Throughput,
    make_plan,
    measure_profile,
    measure_throughput,
    read_profile,
    run_cost,
    write_profile,
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


def _profile(tp: dict[str, Throughput], gain: float) -> Profile:
    return Profile({k: {16: t} for k, t in tp.items()}, {"*": gain})


def test_plan_arithmetic_and_shared_lp_features():
    runs = expand(parse_spec(SPEC))
    tp = {"efficientnet_lite0@48": Throughput(10.0, 100.0),
          "efficientnet_lite0@32": Throughput(20.0, 200.0)}
    plan = make_plan(runs, packs=8, gpus=2, profile=_profile(tp, 4.0),
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
        make_plan(runs, 1, gpus=0, profile=_profile(tp, 1.0))


def test_a_run_is_timed_at_its_batch_size_and_packs_gain_per_budget():
    # ilm on digits, epochs 3: 2-shot (batch 8) trains 60 images, full (batch 128) 4041;
    # forward passes are timed at the largest measured batch ≤ 256
    runs = [r for r in expand(parse_spec(SPEC)) if r.identity["method"] == "ilm"
            and r.identity["compression"]["method"] == "none"]
    profile = Profile({"efficientnet_lite0@48": {8: Throughput(10.0, 50.0),
                                                 128: Throughput(40.0, 400.0)}},
                      {"1": 6.0, "5": 3.0, "full": 1.5})
    plan = make_plan(runs, packs=2, profile=profile,
                     measure=lambda key: pytest.fail(f"measured {key}"))
    by = {r["n_shot"]: r["device_s"] for r in plan.rows}
    assert by[2] == pytest.approx(60 / 10 + (3 * 20 + 450) / 400)
    assert by["full"] == pytest.approx(3 * 1347 / 40 + (3 * 1347 + 450) / 400)
    # 2-shot takes the gain of the smallest measured budget above it (5-shot), full its own
    assert plan.wall_s == pytest.approx(by[2] / 3.0 + by["full"] / 1.5)
    assert profile.throughput("efficientnet_lite0@48", 32) == Throughput(10.0, 50.0)
    assert profile.throughput("efficientnet_lite0@48", 4) == Throughput(10.0, 50.0)
    assert profile.gain(50) == 1.5 and profile.gain(5) == 3.0 and profile.gain(1) == 6.0
    assert Profile({}).gain(1) == 1.0 and profile.throughput("resnet50@224", 8) is None


def test_profile_file(tmp_path):
    path = tmp_path / "p.json"
    profile = Profile({"resnet50@224": {8: Throughput(300.0, 900.0),
                                        128: Throughput(900.0, 3000.0)}},
                      {"1": 5.5, "10": 2.0, "full": 1.0}, "NVIDIA H100", "bf16")
    assert read_profile(write_profile(profile, path)) == profile
    # the first format: one batch size, one gain for every budget
    path.write_text(json.dumps({"resnet50@224": {"train_img_s": 900, "eval_img_s": 3000},
                                "pack_speedup": 4.5}))
    old = read_profile(path)
    assert old.throughput("resnet50@224", 64) == Throughput(900.0, 3000.0)
    assert old.gain(None) == old.gain(1) == 4.5
    path.write_text(json.dumps({"resnet50@224": {}}))
    with pytest.raises(HiddenCostError, match="cannot read profile"):
        read_profile(path)


def test_a_profile_measured_here_is_what_study_plan_reads(tmp_path):
    """The profile bench_gpu.py writes (measure_profile + write_profile), measured on this
    CPU at small sizes, read by `study plan --profile` for a paper grid."""
    profile = measure_profile(["resnet50@32"], device="cpu", batches=(8, 16), steps=1,
                              pack_gain={"1": 3.0, "full": 1.0})
    assert profile.device == "cpu" and profile.precision == "fp32"
    assert set(profile.throughputs["resnet50@32"]) == {8, 16}
    assert all(t.train_img_s > 0 and t.eval_img_s > 0
               for t in profile.throughputs["resnet50@32"].values())
    # the paper grid's key, with the numbers measured here (so no timing happens in the CLI)
    data = Profile({"resnet50@224": profile.throughputs["resnet50@32"]}, profile.pack_gain,
                   "NVIDIA test GPU", "bf16")
    path = write_profile(data, tmp_path / "gpu.json")
    result = CliRunner().invoke(study_app, ["plan", "paper-lth", "--profile", str(path),
                                            "--out", str(tmp_path / "o"), "--gpus", "8"])
    assert result.exit_code == 0, result.output
    assert f"profile {path}: NVIDIA test GPU, bf16" in " ".join(result.output.split())
    assert "packs of up to 9" in result.output  # sized for the profile's GPU
    assert not (tmp_path / "o").exists()


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
    plan = make_plan(runs, packs=len(runs), profile=_profile(tp, 1.0),
                     measure=lambda key: pytest.fail(f"measured {key}"))
    assert plan.total_runs == len(runs) and not plan.unknown
    assert sum(r["runs"] for r in plan.rows) == len(runs)


@pytest.mark.parametrize("bad", [
    {"train": {"16": 0}, "eval": {"16": 100}},
    {"train": {"16": 10}, "eval": {"16": -1}},
    {"train": {"0": 10}, "eval": {"0": 100}},
])
def test_a_profile_with_zero_or_negative_figures_is_one_line(tmp_path, bad):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "hiddencost-profile/2",
                                "throughput": {"resnet50@224": bad}, "pack_gain": {}}))
    with pytest.raises(HiddenCostError, match=f"cannot read profile {path}: "):
        read_profile(path)
    path.write_text(json.dumps({"format": "hiddencost-profile/2", "throughput": {},
                                "pack_gain": {"*": 0}}))
    with pytest.raises(HiddenCostError, match="must be finite and > 0, got 0"):
        read_profile(path)


def test_cli_plan_with_a_bad_profile_exits_2_in_one_line(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"format": "hiddencost-profile/2", "throughput": {}, "pack_gain": '
                    '{"*": 0}}')
    result = CliRunner().invoke(study_app, ["plan", "quickstart", "--out", str(tmp_path / "o"),
                                            "--profile", str(path)])
    assert result.exit_code == 2 and "must be finite and > 0" in result.output
    assert not (tmp_path / "o").exists()


def test_durations_of_any_size_print():
    from hiddencost.study.results import format_duration

    assert (format_duration(float("inf")), format_duration(7261), format_duration(None)) == (
        "∞", "2h 01m", "?")


@pytest.mark.parametrize("entry, message", [
    ({"throughput": {"resnet50@224": {"train": {"16": float("nan")}, "eval": {"16": 100}}}},
     "throughput resnet50@224 train batch 16: throughputs and packing gains must be finite and "
     "> 0, got nan"),
    ({"throughput": {"resnet50@224": {"train": {"16": 10}, "eval": {"16": -3.5}}}},
     "throughput resnet50@224 eval batch 16: throughputs and packing gains must be finite and "
     "> 0, got -3.5"),
    ({"throughput": {}, "pack_gain": {"full": "fast"}},
     "pack_gain full: throughputs and packing gains must be finite and > 0, got 'fast'"),
    ({"throughput": {"resnet50@224": {"train": {"x": 10}, "eval": {"x": 10}}}},
     "throughput resnet50@224: batch sizes must be integers ≥ 1, got 'x'"),
])
def test_a_negative_or_nan_profile_entry_is_one_line_naming_it(tmp_path, entry, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"format": "hiddencost-profile/2", **entry}))  # NaN: JSON's NaN
    result = CliRunner().invoke(study_app, ["plan", "quickstart", "--out", str(tmp_path / "o"),
                                            "--profile", str(path)])
    assert result.exit_code == 2, result.output
    assert " ".join(result.output.split()) == f"error: cannot read profile {path}: {message}"


def test_a_partial_profile_says_which_architectures_were_timed_here(tmp_path):
    runs = expand(parse_spec(SPEC))
    profile = _profile({"efficientnet_lite0@48": Throughput(10.0, 100.0)}, 1.0)
    timed = []
    plan = make_plan(runs, packs=8, profile=profile,
                     measure=lambda key: timed.append(key) or Throughput(20.0, 200.0))
    assert timed == ["efficientnet_lite0@32"]
    assert (plan.profiled, plan.timed_here) == (["efficientnet_lite0@48"],
                                                ["efficientnet_lite0@32"])
    whole = make_plan(runs, packs=8, profile=_profile(
        {"efficientnet_lite0@48": Throughput(10.0, 100.0),
         "efficientnet_lite0@32": Throughput(20.0, 200.0)}, 1.0))
    assert (whole.profiled, whole.timed_here) == (
        ["efficientnet_lite0@32", "efficientnet_lite0@48"], [])
    # the command line: the LP architecture is timed on this CPU, and says so
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    path = write_profile(Profile({"efficientnet_lite0@48": {16: Throughput(10.0, 100.0)}},
                                 {}, "NVIDIA test GPU", "bf16"), tmp_path / "gpu.json")
    result = CliRunner().invoke(study_app, ["plan", str(spec), "--out", str(tmp_path / "o"),
                                            "--device", "cpu", "--profile", str(path)])
    assert result.exit_code == 0, result.output
    assert (f"(profile {path}: NVIDIA test GPU, bf16 for efficientnet_lite0@48; timed on this "
            "machine (cpu) for efficientnet_lite0@32, which the profile lacks)"
            ) in " ".join(result.output.split())
