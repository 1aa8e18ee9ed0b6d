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
