"""The CLIP towers as a backbone: ViT-B/32 built at random, the tiny CLIP's text embeddings and
logit scale, OpenAI weights through open_clip (never downloaded without --download, offline
errors in one line), and the CLIP entries in ``hiddencost models``."""

from __future__ import annotations

import math

import open_clip
import pytest
import torch
import torch.nn.functional as F
from clip_tiny import TINY_CONFIG, tiny_clip_entry
from rich.console import Console
from typer.testing import CliRunner

import hiddencost.cli.run as cli_run
import hiddencost.clip.towers as towers_mod
from hiddencost.backbones import create_model
from hiddencost.cli import app
from hiddencost.clip.towers import ClipTowers
from hiddencost.errors import HiddenCostError

TEXTS = ["a photo of a cat", "a diagram of a bridge", "", "two dogs playing in the snow"]


@pytest.fixture(scope="module")
def tiny():
    model, _ = create_model(tiny_clip_entry().name, weights="random")
    return model


def test_vit_b32_random_image_embedding_shape():
    model, info = create_model("clip_vit_b32", weights="random")
    assert isinstance(model, ClipTowers) and not model.training
    assert info.name == "clip_vit_b32.openai" and info.input_size == 224
    assert info.weights == "random"
    assert info.class_names == []
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = model(images)
    assert out.shape == (2, 512)
    assert torch.isfinite(out).all() and not torch.allclose(out[0], out[1])
    assert model.clip.text_projection.shape == (512, 512)  # the text side is ViT-B/32's too


def test_timm_style_feature_interface_is_the_image_embedding(tiny):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = tiny.clip.encode_image(x)
        assert torch.equal(tiny(x), want)
        features = tiny.forward_features(x)
        assert torch.equal(features, want)
        assert torch.equal(tiny.forward_head(features), want)
    assert want.shape == (2, TINY_CONFIG["embed_dim"])


def test_encode_texts_unit_rows_equal_open_clip(tiny):
    got = tiny.encode_texts(TEXTS)
    assert got.dtype == torch.float32 and got.shape == (len(TEXTS), TINY_CONFIG["embed_dim"])
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(len(TEXTS)), atol=1e-6, rtol=0)
    with torch.no_grad():
        raw = tiny.clip.encode_text(open_clip.tokenize(TEXTS))
    assert (raw.norm(dim=-1) - 1).abs().min() > 1e-3  # normalising is not a no-op here
    torch.testing.assert_close(got, F.normalize(raw, dim=-1), atol=1e-6, rtol=1e-6)
    # one row per text, in order, whatever the batch size
    torch.testing.assert_close(tiny.encode_texts(TEXTS, batch_size=3), got, atol=1e-6,
                               rtol=1e-6)
    torch.testing.assert_close(tiny.encode_texts(TEXTS[::-1], batch_size=1), got.flip(0),
                               atol=1e-6, rtol=1e-6)
    assert (got @ got.T - torch.eye(len(TEXTS))).abs().max() > 1e-3  # distinct rows


def test_logit_scale_is_exp_clamped_to_100():
    model, _ = create_model(tiny_clip_entry().name, weights="random")
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)  # open_clip's init
    assert not model.logit_scale.requires_grad
    with torch.no_grad():
        model.clip.logit_scale.fill_(math.log(50.0))
        assert model.logit_scale.item() == pytest.approx(50.0, rel=1e-6)
        model.clip.logit_scale.fill_(math.log(200.0))
        assert model.logit_scale.item() == 100.0


class Recorder:
    """Stands in for ``open_clip.create_model``: records its calls, returns a tiny CLIP (or
    raises ``error``)."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[tuple[tuple, dict]] = []
        self.error = error
        self.returned: list[open_clip.CLIP] = []

    def __call__(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        if self.error is not None:
            raise self.error
        clip = open_clip.CLIP(TINY_CONFIG["embed_dim"], TINY_CONFIG["vision_cfg"],
                              TINY_CONFIG["text_cfg"], quick_gelu=True)
        self.returned.append(clip)
        return clip


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(towers_mod, "CACHE_DIR", tmp_path)
    return tmp_path


def _patch(monkeypatch, recorder):
    monkeypatch.setattr(open_clip, "create_model", recorder)


def test_pretrained_without_download_refuses_and_never_calls_open_clip(cache, monkeypatch):
    recorder = Recorder()
    _patch(monkeypatch, recorder)
    with pytest.raises(HiddenCostError) as err:
        create_model("clip_vit_b32")
    message = str(err.value)
    assert "\n" not in message and "--download" in message
    assert recorder.calls == []
    assert list(cache.iterdir()) == []


def test_pretrained_download_calls_open_clip_once_then_works_offline(cache, monkeypatch):
    recorder = Recorder()
    _patch(monkeypatch, recorder)
    model, info = create_model("clip_vit_b32", download=True)
    assert recorder.calls == [(("ViT-B-32",), {"pretrained": "openai", "force_quick_gelu": True,
                                               "cache_dir": str(cache)})]
    assert isinstance(model, ClipTowers) and model.clip is recorder.returned[0]
    assert not model.training and model.context_length == 77
    assert info.weights == "pretrained:open_clip:openai"
    assert info.name == "clip_vit_b32.openai" and info.compression is None
    assert (cache / "ViT-B-32.openai.done").is_file()
    # the marker lets a later run without --download use the cached weights
    again, info2 = create_model("clip_vit_b32")
    assert len(recorder.calls) == 2 and recorder.calls[1] == recorder.calls[0]
    assert again.clip is recorder.returned[1] and info2.weights == info.weights
    # the marker is per architecture: another entry still needs --download
    with pytest.raises(HiddenCostError, match="--download"):
        create_model("clip_vit_b16")
    assert len(recorder.calls) == 2


def test_open_clip_failure_is_one_line_and_leaves_no_marker(cache, monkeypatch):
    recorder = Recorder(ConnectionError("Failed to resolve 'huggingface.co'"))
    _patch(monkeypatch, recorder)
    with pytest.raises(HiddenCostError) as err:
        create_model("clip_vit_b32", download=True)
    message = str(err.value)
    assert "\n" not in message
    assert "ConnectionError" in message and "huggingface.co" in message
    assert len(recorder.calls) == 1
    assert list(cache.iterdir()) == []
    with pytest.raises(HiddenCostError, match="--download"):  # still nothing cached
        create_model("clip_vit_b32")
    assert len(recorder.calls) == 1


def test_open_clip_multiline_failure_is_still_one_line(cache, monkeypatch):
    # huggingface_hub's HTTP errors (what open_clip raises for a missing or unreachable file)
    # span several lines
    error = OSError("404 Client Error. (Request ID: Root=1-abc)\n\nEntry Not Found for url: "
                    "https://huggingface.co/timm/vit_base_patch32_clip_224.openai/resolve/main/"
                    "open_clip_pytorch_model.bin.")
    _patch(monkeypatch, Recorder(error))
    with pytest.raises(HiddenCostError) as err:
        create_model("clip_vit_b32", download=True)
    assert "\n" not in str(err.value)


CLIP_ROWS = (("clip_vit_b32.openai", 224), ("clip_vit_b16.openai", 224),
             ("clip_vit_l14.openai", 224), ("clip_vit_l14_336.openai", 336))


def _models_output(monkeypatch, width: int) -> str:
    # the command's console is made at import, its width fixed then; give it a known one
    monkeypatch.setattr(cli_run, "console", Console(width=width))
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    return result.output


def test_models_command_lists_the_clip_entries(monkeypatch):
    lines = _models_output(monkeypatch, 200).splitlines()
    for name, size in CLIP_ROWS:
        rows = [line for line in lines if f" {name} " in line]
        assert len(rows) == 1, (name, lines)
        cells = [cell.strip() for cell in rows[0].split("│")]
        assert name in cells and "open_clip" in cells and str(size) in cells


def test_models_command_names_survive_80_columns(monkeypatch):
    output = _models_output(monkeypatch, 80)
    for name, _ in CLIP_ROWS:
        assert f" {name} " in output, output


def test_activation_quantization_calibrates_both_towers(tiny):
    """Calibration images reach the image tower only; the text tower's quantizers calibrate on
    the fixed text prompts (250, one batch), so encoding texts works and is quantized."""
    import copy

    from hiddencost.compression import apply_compression, parse_compression
    from hiddencost.compression.quantization import ActivationFakeQuant

    model = copy.deepcopy(tiny)
    images = torch.randn(100, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    report = apply_compression(model, parse_compression("a4"), calibration_images=images)
    batches = {name: int(m.num_batches) for name, m in model.named_modules()
               if isinstance(m, ActivationFakeQuant)}
    text = {n: b for n, b in batches.items() if n.startswith("clip.transformer.")}
    assert len(towers_mod.calibration_texts()) == 250
    assert report.n_activation_quantizers == len(batches) == 9 and len(text) == 4
    assert set(text.values()) == {1}  # the prompts, in one batch of 256
    assert {b for n, b in batches.items() if n not in text} == {2}  # 100 images, batches of 64
    with torch.no_grad():
        quantized, exact = model.encode_texts(TEXTS), tiny.encode_texts(TEXTS)
        assert (quantized - exact).abs().max() > 1e-3
        assert (model(images[:2]) - tiny(images[:2])).abs().max() > 1e-3
    assert torch.equal(model.encode_texts(TEXTS), quantized)
