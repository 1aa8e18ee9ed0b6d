"""Upstream fidelity: agreement and KL(p_dense || p_compressed), hand-checked and cached."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from torch import nn
from typer.testing import CliRunner

from hiddencost.compression import compression_or_error
from hiddencost.compression.parse import short_form_fields as parse_compression
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity import (
    KL_DIRECTION,
    SKIMAGE_PHOTOS,
    FidelityMetrics,
    FidelityRequest,
    FidelityResult,
    FidelityRow,
    cached_fidelity,
    fidelity_metrics,
    fidelity_report,
    load_fidelity_images,
    print_fidelity_table,
    read_images,
)
from hiddencost.fidelity import images as images_module
from hiddencost.fidelity.cache import cache_path, read_cached, write_cached

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
    rep = fidelity_report(FixedLogits(dense), FixedLogits(comp), images, batch_size=2).model_dump()
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
    same = fidelity_report(FixedLogits(dense), FixedLogits(dense), images).model_dump()
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
    first = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.5}, **kw).model_dump()
    assert first["cached"] is False and first["n_images"] == 6
    assert first["compression"]["measured_sparsity"] == pytest.approx(0.5, abs=1e-6)
    again = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.5}, **kw).model_dump()
    assert again["cached"] is True and again["mean_kl"] == first["mean_kl"]
    assert len(list((tmp_path / "cache").glob("fidelity-*.json"))) == 1
    dense = cached_fidelity(compression={"method": "none"}, **kw).model_dump()
    assert dense["top1_agreement"] == 1.0 and dense["mean_kl"] == pytest.approx(0, abs=1e-9)

    from hiddencost.cli import app
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
    w8 = cached_fidelity(compression={"method": "quantize", "weight_bits": 8}, **kw).model_dump()
    w2 = cached_fidelity(compression={"method": "quantize", "weight_bits": 2}, **kw).model_dump()
    s50 = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.5}, **kw).model_dump()
    s90 = cached_fidelity(compression={"method": "magnitude", "sparsity": 0.9}, **kw).model_dump()
    assert w8["top1_agreement"] == 1.0 and w8["mean_kl"] < 0.05
    assert w2["mean_kl"] > w8["mean_kl"] and s90["mean_kl"] > s50["mean_kl"]


def test_metrics_of_logits_and_their_validation():
    dense = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    m = fidelity_metrics(dense, torch.tensor([[3.0, 0.0], [3.0, 0.0]]))
    assert isinstance(m, FidelityMetrics) and m.n_images == 2 and m.top1_agreement == 0.5
    assert m.kl_direction == KL_DIRECTION
    with pytest.raises(HiddenCostError, match="disagree on the number of classes"):
        fidelity_metrics(dense, torch.zeros(2, 3))
    with pytest.raises(HiddenCostError, match="N > 0"):
        fidelity_metrics(torch.zeros(0, 2), torch.zeros(0, 2))


def test_a_corrupt_image_is_one_line_naming_the_file(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    with pytest.raises(HiddenCostError, match=r"cannot read image .*bad\.jpg"):
        load_fidelity_images(str(tmp_path), 8, (0.5,) * 3, (0.5,) * 3)


def test_skimage_photos_that_cannot_be_had_are_skipped_and_named(monkeypatch):
    photo = np.full((10, 12, 4), 200, dtype=np.uint8)  # RGBA: alpha is dropped

    def needs_pooch():
        raise ModuleNotFoundError("requires the optional dependency pooch")

    def offline():
        raise ConnectionError("no internet connection is available")

    loaders = {"astronaut": lambda: photo, "chelsea": needs_pooch, "coffee": offline,
               "rocket": lambda: photo[..., 0]}  # grayscale becomes RGB; the rest are absent
    monkeypatch.setattr(images_module, "_skimage_loaders", lambda: loaders)
    got = read_images("skimage", 6)
    assert got.images.shape == (2, 3, 6, 6) and got.images.dtype == torch.uint8
    assert got.skipped == ("chelsea", "coffee", *SKIMAGE_PHOTOS[4:])
    assert read_images("skimage", 6, limit=1).images.shape[0] == 1
    x = got.normalised(4, (0.5,) * 3, (0.25,) * 3)  # the shared ResizeNormalize
    assert x.shape == (2, 3, 4, 4) and x.is_contiguous(memory_format=torch.channels_last)
    assert float(x[0].mean()) == pytest.approx((200 / 255 - 0.5) / 0.25, rel=1e-5)

    def broken():
        raise ValueError("a bug, not a missing download")

    monkeypatch.setattr(images_module, "_skimage_loaders", lambda: {"astronaut": broken})
    with pytest.raises(ValueError, match="a bug"):  # only the documented errors are skipped
        read_images("skimage", 6)
    monkeypatch.setattr(images_module, "_skimage_loaders", lambda: {"astronaut": offline})
    with pytest.raises(HiddenCostError, match="no scikit-image sample photo"):
        read_images("skimage", 6)


def test_cache_file_round_trip_and_corrupt_file(tmp_path):
    request = FidelityRequest("resnet18", compression_or_error("magnitude:0.5"))
    assert FidelityRequest("resnet18", compressed_checkpoint="x.pth").label == "resnet18"
    with pytest.raises(HiddenCostError, match="compression spec or a compressed checkpoint"):
        FidelityRequest("resnet18")
    path = cache_path(tmp_path, request)
    assert read_cached(path) is None
    result = FidelityResult(n_images=4, top1_agreement=0.75, top5_agreement=1.0, mean_kl=0.1,
                            max_kl=0.3, dense_mean_confidence=0.6,
                            compressed_mean_confidence=0.5, model="resnet18.tv_in1k",
                            weights="random", images="digits", label=request.label,
                            compression={"measured_sparsity": 0.5}, skipped_images=("cat",))
    write_cached(path, result)
    assert "cached" not in json.loads(path.read_text())
    back = read_cached(path)
    assert back == result.model_copy(update={"cached": True})
    assert back.metrics == FidelityMetrics(**result.model_dump(
        include=set(FidelityMetrics.model_fields)))
    path.write_text("{half a file")
    with pytest.raises(HiddenCostError, match="unreadable; delete it"):
        read_cached(path)


def test_one_fidelity_table_for_both_clis():
    m = FidelityMetrics(n_images=8, top1_agreement=0.875, top5_agreement=1.0, mean_kl=0.0123,
                        max_kl=0.5, dense_mean_confidence=0.7, compressed_mean_confidence=0.6)
    console = Console(record=True, width=120)
    print_fidelity_table(console, [FidelityRow("w4", "digits", m, sparsity=0.25),
                                   FidelityRow("gone-0", "digits", error="no such file")],
                         "fidelity of x")
    text = console.export_text()
    assert "fidelity of x (KL(p_dense || p_compressed), nats)" in text
    assert "digits (8)" in text and "0.8750" in text and "0.0123" in text and "0.2500" in text
    assert "not measured gone-0 on digits: no such file" in text
    plain = Console(record=True, width=120)
    print_fidelity_table(plain, [FidelityRow("w4", "digits", m)])
    assert "sparsity" not in plain.export_text() and "not measured" not in plain.export_text()


def _app():
    from hiddencost.cli import app
    return app


def _png_header(width: int, height: int) -> bytes:
    """A 65-byte PNG that declares ``width`` × ``height`` RGB pixels (and holds none)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, pixels", [
    (50_000, 2_500_000_000),  # beyond twice Pillow's limit: Pillow raises
    (10_000, 100_000_000),    # beyond its limit only: Pillow warns, and would decode it
])
def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, side, pixels):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    bomb = tmp_path / "b.png"
    bomb.write_bytes(_png_header(side, side))
    with pytest.raises(HiddenCostError) as err:
        read_images(str(tmp_path), 8)
    message = str(err.value)
    assert message.startswith(f"cannot read image {bomb}: Image size ({pixels} pixels) exceeds "
                              "limit of ") and "decompression bomb" in message
    assert "\n" not in message
    result = CliRunner().invoke(_app(), ["fidelity", "--model", "resnet18", "--weights",
                                         "random", "--images", str(tmp_path), "--compressed",
                                         "w8", "--device", "cpu"])
    text = (result.stderr or result.output).strip()
    assert result.exit_code == 2 and text == f"error: {message}"


def test_fidelity_refuses_bad_images_or_out_before_building_a_model(tmp_path, monkeypatch):
    import hiddencost.fidelity.measure as measure

    def built(*args, **kwargs):
        raise AssertionError("a model was built before --images was refused")

    monkeypatch.setattr(measure, "create_model", built)
    out = tmp_path / "fid.json"
    result = CliRunner().invoke(_app(), ["fidelity", "--images", "splice", "--compressed", "w8",
                                         "--out", str(out)])
    text = (result.stderr or result.output).strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1, text
    assert text.startswith("error: --images splice: splice holds sequence data, not images; "
                           "use an image dataset: digits, ") and not out.exists()
    with pytest.raises(HiddenCostError, match="--images bbc_news: bbc_news holds sequence"):
        read_images("bbc_news", 8)  # the library refuses it too
    folder = tmp_path / "taken"
    folder.mkdir()
    result = CliRunner().invoke(_app(), ["fidelity", "--compressed", "w8", "--out", str(folder)])
    text = (result.stderr or result.output).strip()
    assert result.exit_code == 2 and text == (f"error: --out {folder} is a folder; give the "
                                              "JSON file to write")
