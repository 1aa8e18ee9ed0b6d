"""Upstream fidelity: agreement and KL(p_dense || p_compressed), hand-checked and cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from hiddencost.errors import HiddenCostError
from hiddencost.fidelity import cached_fidelity, fidelity_report, load_fidelity_images
from hiddencost.zoo_cli import parse_compression

torch.set_num_threads(2)


class FixedLogits(nn.Module):
    """Returns the logits row whose index is stored in pixel (0, 0, 0) of each input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()] + 0 * self.dummy


def test_fidelity_report_by_hand():
    dense = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    comp = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.5]])
    images = torch.zeros(3, 3, 4, 4)
    images[:, 0, 0, 0] = torch.arange(3)
    rep = fidelity_report(FixedLogits(dense), FixedLogits(comp), images, batch_size=2)
    assert rep["n_images"] == 3 and rep["top1_agreement"] == pytest.approx(1 / 3)
    assert rep["top5_agreement"] == 1.0  # 3 classes: everything is in the top 5
    pd, pc = dense.double().softmax(1), comp.double().softmax(1)
    by_hand = (pd * (pd.log() - pc.log())).sum(1)
    assert rep["mean_kl"] == pytest.approx(float(by_hand.mean()), rel=1e-9)
    assert rep["max_kl"] == pytest.approx(float(by_hand.max()), rel=1e-9)
    # independent reference: torch.distributions, same direction KL(dense || compressed)
    ref = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=pd),
                                            torch.distributions.Categorical(probs=pc))
    assert rep["mean_kl"] == pytest.approx(float(ref.mean()), rel=1e-9)
    reverse = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=pc),
                                                torch.distributions.Categorical(probs=pd))
    assert rep["mean_kl"] != pytest.approx(float(reverse.mean()), rel=1e-3)
    assert rep["kl_direction"] == "KL(p_dense || p_compressed)"
    same = fidelity_report(FixedLogits(dense), FixedLogits(dense), images)
    assert same["top1_agreement"] == 1.0 and same["mean_kl"] == pytest.approx(0.0, abs=1e-12)
    assert same["dense_mean_confidence"] == pytest.approx(float(pd.max(1).values.mean()))
    with pytest.raises(HiddenCostError, match="N x 3 x H x W"):
        fidelity_report(FixedLogits(dense), FixedLogits(comp), torch.zeros(3, 4))


def test_images_from_folder_and_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        sub = tmp_path / f"class{i}"
        sub.mkdir()
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(sub / "a.png")
    (tmp_path / "notes.txt").write_text("not an image")
    x = load_fidelity_images(str(tmp_path), 16, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    d = load_fidelity_images("digits", 24, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), limit=5)
    assert d.shape == (5, 3, 24, 24)
    with pytest.raises(HiddenCostError, match="holds no image files"):
        load_fidelity_images(str(tmp_path / "class0" / ".."), 16, (0.5,) * 3, (0.5,) * 3,
                             limit=0)


def test_parse_compression():
    assert parse_compression("dense") == {"method": "none"}
    assert parse_compression("magnitude:0.9") == {"method": "magnitude", "scope": "global",
                                                  "sparsity": 0.9}
    assert parse_compression("random-layer:50%")["sparsity"] == 0.5
    assert parse_compression("magnitude-global-s0.80")["sparsity"] == 0.8
    assert parse_compression("w4a4") == {"method": "quantize", "weight_bits": 4,
                                         "activation_bits": 4}
    assert parse_compression("a8")["weight_bits"] is None
    with pytest.raises(HiddenCostError, match="cannot read compression"):
        parse_compression("prune-lots")


def test_cached_fidelity_and_cli(tmp_path):
    kw = dict(model="resnet18", weights="random", images="digits", limit=6,
              cache_dir=tmp_path / "cache", device="cpu")
    first = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.5}, **kw)
    assert first["cached"] is False and first["n_images"] == 6
    assert first["compression"]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
    again = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.5}, **kw)
    assert again["cached"] is True and again["mean_kl"] == first["mean_kl"]
    assert len(list((tmp_path / "cache").glob("fidelity-*.json"))) == 1
    dense = cached_fidelity(compression={"method": "none"}, **kw)
    assert dense["top1_agreement"] == 1.0 and dense["mean_kl"] == pytest.approx(0, abs=1e-9)

    import typer

    from hiddencost.zoo_cli import register

    app = typer.Typer()
    register(app)
    out = tmp_path / "fid.json"
    result = CliRunner().invoke(app, [
        "fidelity", "--model", "resnet18", "--weights", "random", "--images", "digits",
        "--limit", "6", "--compressed", "magnitude:0.5", "--compressed", "dense",
        "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert [r["compressed"] for r in rows] == ["magnitude:0.5", "dense"]
    assert rows[0]["cached"] is True and rows[0]["mean_kl"] == first["mean_kl"]
    bad = CliRunner().invoke(app, ["fidelity", "--compressed", "nonsense"])
    assert bad.exit_code == 2 and "cannot read compression" in bad.output


@pytest.mark.slow
def test_lite0_fidelity_degrades_with_compression():
    """The packaged EfficientNet-Lite0 on scikit-image's photos: more compression, less
    fidelity (8-bit weights keep every top-1 prediction)."""
    pytest.importorskip("skimage")
    shared: dict = {}
    kw = dict(model="efficientnet_lite0", images="skimage", device="cpu", dense_cache=shared)
    w8 = cached_fidelity(compression={"method": "quantize", "weight_bits": 8}, **kw)
    w2 = cached_fidelity(compression={"method": "quantize", "weight_bits": 2}, **kw)
    s50 = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.5}, **kw)
    s90 = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.9}, **kw)
    assert w8["top1_agreement"] == 1.0 and w8["mean_kl"] < 0.05
    assert w2["mean_kl"] > w8["mean_kl"] and s90["mean_kl"] > s50["mean_kl"]
