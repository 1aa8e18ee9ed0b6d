"""Calibration that survives recalibration: a seeded validation split held out of the training
pool (off by default: keys and records of runs without it are unchanged), the temperature
fitted on it, and the test metrics after temperature scaling."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hiddencost.data.few_shot import validation_split
from hiddencost.metrics import calibration_summary, fit_temperature
from hiddencost.run import RunCache, make_config, resolve, run_one, training_split
from hiddencost.study.identity import run_key

TINY = {"method": "ilm", "n_shot": 5, "epochs": 2, "canvas_size": 48, "inner_size": 16,
        "lp_image_size": 32, "device": "cpu"}


def test_the_validation_split_by_hand():
    labels = torch.tensor([0] * 10 + [1] * 4 + [2])
    pool, held = validation_split(labels, 0.2, seed=0)
    # class 0: round(2.0) = 2 held out; class 1: round(0.8) = 1; class 2 (one example): none
    assert torch.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]
    assert sorted(pool.tolist() + held.tolist()) == list(range(15))
    assert torch.equal(validation_split(labels, 0.2, seed=0)[1], held)  # seeded
    assert not torch.equal(validation_split(labels, 0.2, seed=1)[1], held)
    with pytest.raises(ValueError, match="must lie in"):
        validation_split(labels, 1.0, seed=0)


def test_the_fitted_temperature_is_the_nll_minimum():
    rng = np.random.default_rng(0)
    base = torch.from_numpy(rng.normal(0, 2, (4000, 5)))
    labels = torch.multinomial(base.softmax(1), 1, generator=torch.Generator().manual_seed(0))
    labels = labels[:, 0]
    overconfident = 2.5 * base  # the true temperature is 2.5
    t = fit_temperature(overconfident, labels)
    grid = np.exp(np.linspace(-1, 2, 3001))
    nll = [float(torch.nn.functional.cross_entropy(overconfident / g, labels)) for g in grid]
    assert t == pytest.approx(grid[int(np.argmin(nll))], rel=2e-3)
    assert t == pytest.approx(2.5, rel=0.1)


def test_runs_without_a_validation_split_keep_their_keys_and_records(tmp_path):
    cfg = make_config(**TINY)
    assert "validation_fraction" not in cfg.identity()
    assert run_key(make_config(**TINY, validation_fraction=0.2)) != run_key(cfg)
    run_one(cfg, out_dir=tmp_path, cache=RunCache())
    record = json.loads((tmp_path / "result.json").read_text())
    assert "recalibration" not in record and "validation_fraction" not in record["config"]


def test_a_run_with_a_validation_split_reports_the_test_calibration_after_scaling(tmp_path):
    cache = RunCache()
    cfg = make_config(**TINY, validation_fraction=0.2)
    record = run_one(cfg, out_dir=tmp_path, cache=cache)
    task = cache.dataset(resolve(cfg).config, 16)
    subset, held = training_split(task, cfg)
    assert not set(subset.indices.tolist()) & set(held.tolist())  # never trained on
    assert len(subset) == 50 and record.recalibration.n_validation == len(held) == 269
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["config"]["validation_fraction"] == 0.2
    # the record's recalibrated metrics are the test metrics of softmax(z / T)
    from hiddencost.predictions import read_predictions

    logits = torch.from_numpy(read_predictions(tmp_path).logits).double()
    t = record.recalibration.temperature
    again = calibration_summary((logits / t).softmax(1), task.test_labels)
    assert (again["ece"], again["nll"]) == (record.recalibration.ece, record.recalibration.nll)
    assert math.isfinite(t) and t > 0


@pytest.mark.parametrize("method", ["lp", "fm"])
def test_other_methods_score_their_validation_split_too(method):
    record = run_one(make_config(**{**TINY, "method": method}, validation_fraction=0.1),
                     cache=RunCache())
    # Σ_c round(0.1 · n_c) over digits' ten classes of the 1,347-image pool
    assert record.recalibration.n_validation == 136 and record.recalibration.temperature > 0


def test_the_report_compares_the_ece_gap_before_and_after_scaling():
    from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record

    from hiddencost.records import Recalibration
    from hiddencost.report.sections.calibration import recalibrated_ece
    from hiddencost.report.table import table_from_records

    records = []
    for comp, ece, scaled in ((DEFAULT_COMPRESSIONS[0], 0.10, 0.02),
                              (DEFAULT_COMPRESSIONS[1], 0.20, 0.05)):
        for seed in (0, 1):
            recal = Recalibration(n_validation=100, temperature=1.5, ece=scaled, nll=1.0,
                                  brier=0.5)
            records.append(make_record(seed=seed, compression=comp, ece=ece)
                           .model_copy(update={"recalibration": recal}))
    [row] = recalibrated_ece(table_from_records(records)).to_dict("records")
    assert row["delta_ece"] == pytest.approx(10.0) and row["delta_ts_ece"] == pytest.approx(3.0)
    assert recalibrated_ece(table_from_records([make_record()])).empty  # nothing held out
