"""End to end on the real packaged EfficientNet-Lite0 and digits, kept tiny (few shots, 1-2
epochs, small canvas), plus the CLI's one-line errors."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from hiddencost.cli import app
from hiddencost.errors import HiddenCostError
from hiddencost.run import RunCache, make_config, run_one

TINY = {"canvas_size": 48, "inner_size": 16, "lp_image_size": 32, "device": "cpu"}
RESULT_KEYS = {
    "config", "accuracy", "ece", "mce", "nll", "brier", "mean_confidence_correct",
    "kl_to_uniform_incorrect", "per_class_accuracy", "label_mapping", "sparsity", "weight_bits",
    "activation_bits", "history", "wall_time_s", "reliability", "paper_ece", "compression",
}


@pytest.fixture(scope="module")
def cache():
    return RunCache()


def test_ilm_run_writes_everything(tmp_path, cache):
    cfg = make_config(method="ilm", n_shot=2, epochs=2, save_prompt_history=True, **TINY,
                      compression={"method": "magnitude", "sparsity": 0.5})
    record = run_one(cfg, out_dir=tmp_path, cache=cache)
    on_disk = json.loads((tmp_path / "result.json").read_text())
    assert RESULT_KEYS <= set(on_disk)
    assert on_disk["config"]["batch_size"] == 8  # 2-shot row of the batch-size table
    assert on_disk["config"]["canvas_size"] == 48
    assert on_disk["n_train"] == 20 and on_disk["n_test"] == 450
    assert 0.0 <= record.accuracy <= 1.0
    assert len(record.per_class_accuracy) == 10
    assert record.sparsity == pytest.approx(0.5, abs=1e-6)
    assert [h.epoch for h in record.history] == [1, 2]
    mapping = record.label_mapping
    assert [m.target for m in mapping] == list(range(10))
    assert len({m.source for m in mapping}) == 10
    assert all(isinstance(m.source_name, str) and m.source_name for m in mapping)
    weights = load_file(str(tmp_path / "weights.safetensors"))
    assert weights["prompt.delta"].shape == (3, 48, 48)
    history = load_file(str(tmp_path / "prompt_history.safetensors"))["delta"]
    assert history.shape == (2, 3, 48, 48)
    assert (history[-1] == weights["prompt.delta"]).all()


def test_lp_and_quantized_runs(cache):
    lp = run_one(make_config(method="lp", n_shot=10, epochs=20, **TINY), cache=cache)
    assert lp.label_mapping is None
    assert lp.accuracy > 0.5  # real ImageNet features separate digits well above chance
    q = run_one(make_config(method="rlm", n_shot=1, epochs=1, **TINY,
                            compression={"method": "quantize", "weight_bits": 4}), cache=cache)
    assert q.weight_bits == 4
    assert q.compression.max_distinct_values_per_channel <= 16


def test_same_config_same_result(cache):
    cfg = make_config(method="flm", n_shot=1, epochs=1, **TINY)
    a, b = run_one(cfg, cache=cache), run_one(cfg, cache=cache)
    assert a.accuracy == b.accuracy and a.nll == b.nll


def test_resolved_identity_fills_defaults():
    spelled = make_config(n_shot=10, batch_size=32, canvas_size=224, inner_size=32)
    implicit = make_config(n_shot=10)
    assert spelled.identity() == implicit.identity()
    assert make_config(n_shot=10, device="cpu").identity() == implicit.identity()
    assert make_config(n_shot=10, lr=0.02).identity() != implicit.identity()


@pytest.mark.parametrize("kwargs, match", [
    ({"n_shot": 0}, "n_shot"),
    ({"method": "xyz"}, "method"),
    ({"compression": {"method": "magnitude", "sparsity": 1.5}}, "sparsity"),
    ({"compression": {"method": "quantize", "weight_bits": 5}}, "bits"),
])
def test_bad_config_is_one_clear_error(kwargs, match):
    with pytest.raises(HiddenCostError, match=match):
        make_config(**kwargs)


runner = CliRunner()


@pytest.mark.parametrize("args, match", [
    (["--model", "resnet19"], "unknown model 'resnet19'"),
    (["--dataset", "mnist2"], "unknown dataset 'mnist2'"),
    (["--method", "xyz"], "invalid method"),
    (["--n-shot", "0"], "n-shot|N-shot|n_shot"),
    (["--prune", "magnitude", "--sparsity", "1.5"], "--sparsity must be in"),
    (["--weight-bits", "5"], "bits must be one of"),
    (["--dataset", "cifar10"], "--download"),
    (["--dataset", "eurosat", "--data-root", "/nonexistent"], "--download"),
    (["--set", "nope=1"], "method 'ilm' on efficientnet_lite0.in1k has no option 'nope'"),
    (["--set", "mapping_interval"], "give KEY=VALUE"),
    (["--method", "lp", "--mapping-interval", "2"], "method 'lp' .* has no option"),
])
def test_cli_errors_are_one_line(args, match, tmp_path):
    result = runner.invoke(app, ["run", "--out", str(tmp_path), *args])
    assert result.exit_code == 2
    text = result.stderr if result.stderr else result.output
    assert "Traceback" not in text
    assert len(text.strip().splitlines()) == 1, text
    import re
    assert re.search(match, text), text


def test_cli_run_end_to_end(tmp_path):
    result = runner.invoke(app, [
        "run", "--method", "ilm", "--n-shot", "1", "--epochs", "1", "--canvas-size", "48",
        "--inner-size", "16", "--prune", "magnitude", "--sparsity", "0.9", "--device", "cpu",
        "--out", str(tmp_path / "x"),
    ])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "x" / "result.json").read_text())
    assert record["sparsity"] == pytest.approx(0.9, abs=1e-6)
    assert record["compression"]["label"] == "magnitude-global-s0.90"


@pytest.mark.parametrize("content, message", [
    (b"[1, 2]", "holds an array, not a result record (a JSON object)"),
    (b"\xff\xfe\x00 not text", "is not valid JSON: 'utf-8' codec can't decode byte 0xff in "
                               "position 0: invalid start byte"),
])
def test_show_refuses_what_is_not_a_record_in_one_line(tmp_path, content, message):
    path = tmp_path / "result.json"
    path.write_bytes(content)
    result = runner.invoke(app, ["show", str(path)])
    text = (result.stderr or result.output).strip()
    assert result.exit_code == 2 and text == f"error: {path} {message}"
    assert path.read_bytes() == content


BEYOND_64_BITS = 2**70  # 1180591620717411303424


def test_integers_beyond_64_bits_are_refused_where_a_run_or_record_is_read():
    """Stores and Parquet hold signed 64-bit integers: a larger one is refused as bad input
    where it comes in, never met as an overflow at export."""
    limit = "does not fit in 64 bits (at most 9223372036854775807)"
    with pytest.raises(HiddenCostError) as err:
        make_config(options={"mapping_num": BEYOND_64_BITS})
    assert str(err.value) == f"invalid options.mapping_num: {BEYOND_64_BITS} {limit}"
    with pytest.raises(HiddenCostError, match=f"invalid seed: {2**63} does not fit"):
        make_config(seed=2**63)
    assert make_config(seed=2**63 - 1).seed == 2**63 - 1

    from support.synthetic_records import make_record

    from hiddencost.study.worker import checked_record

    record = make_record().to_json()
    record["config"]["options"] = {"mapping_num": BEYOND_64_BITS}
    with pytest.raises(HiddenCostError) as err:
        checked_record(record, "r/result.json")
    assert str(err.value) == ("r/result.json is not a valid result record: record: "
                              f"config.options.mapping_num: {BEYOND_64_BITS} {limit}")
    for field, value, why in [("n_test", 2**63, "less than or equal to 9223372036854775807"),
                              ("weight_bits", 2**64, "less than or equal to 64"),
                              ("n_train", -1, "greater than or equal to 0")]:
        with pytest.raises(HiddenCostError, match=f"record: {field}: Input should be {why}"):
            checked_record({**make_record().to_json(), field: value}, "r/result.json")


def test_a_study_with_a_64_bit_overflow_is_refused_before_export(tmp_path):
    from support import SYNTHETIC

    spec = tmp_path / "big.yaml"
    spec.write_text(f"name: big\nmethod: [ilm]\nparams: {{epochs: 1, mapping_num: "
                    f"{BEYOND_64_BITS}}}\nrunner: {SYNTHETIC}\n")
    out = tmp_path / "out"
    for args in (["run", "--no-progress"], ["export", "--format", "parquet"]):
        result = runner.invoke(app, ["study", args[0], str(spec), "--out", str(out), *args[1:]])
        text = (result.stderr or result.output).strip()
        assert result.exit_code == 2 and len(text.splitlines()) == 1, text
        assert text.startswith("error: ") and text.endswith(
            f"invalid options.mapping_num: {BEYOND_64_BITS} does not fit in 64 bits (at most "
            "9223372036854775807)")
    assert not out.exists()
