"""Per-example predictions beside result.json: every metric of the record is recomputed from them
exactly, and a malformed file is a one-line error."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hiddencost.data import dataset_info
from hiddencost.errors import HiddenCostError
from hiddencost.metrics import calibration_summary, paper_ece
from hiddencost.predictions import PREDICTIONS_FILE, read_predictions, write_predictions
from hiddencost.run import RunCache, make_config, run_one

TINY = {"n_shot": 5, "epochs": 2, "canvas_size": 48, "inner_size": 16, "lp_image_size": 32,
        "device": "cpu"}


@pytest.mark.parametrize("method", ["ilm", "lp"])
def test_the_records_metrics_are_recomputed_exactly_from_the_predictions(tmp_path, method):
    run_one(make_config(method=method, **TINY), out_dir=tmp_path, cache=RunCache())
    record = json.loads((tmp_path / "result.json").read_text())
    saved = read_predictions(tmp_path)
    assert saved.logits.dtype == np.float32 and saved.logits.shape == (450, 10)
    assert saved.indices.tolist() == list(range(450))  # the whole test split, in order
    logits, labels = torch.from_numpy(saved.logits), torch.from_numpy(saved.labels)
    again = calibration_summary(logits.softmax(dim=1), labels)
    for name in ("accuracy", "ece", "nll", "brier", "per_class_accuracy"):
        assert again[name] == record[name], name
    batch = dataset_info("digits").reference_test_batch
    assert paper_ece(logits, labels, batch_size=batch) == record["paper_ece"]
    assert float(saved.correct.mean()) == record["accuracy"]


def test_a_folder_without_predictions_has_none_and_a_bad_file_is_one_line(tmp_path):
    assert read_predictions(tmp_path) is None  # a run of hiddencost before December 2026
    (tmp_path / PREDICTIONS_FILE).write_bytes(b"not safetensors")
    with pytest.raises(HiddenCostError, match=f"cannot read predictions .*{PREDICTIONS_FILE}"):
        read_predictions(tmp_path)
    write_predictions(tmp_path, np.zeros((3, 2)), np.zeros(3), indices=np.arange(2))
    with pytest.raises(HiddenCostError, match="do not agree"):
        read_predictions(tmp_path)
