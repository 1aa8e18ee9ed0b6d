"""Compression recipes end to end on small data: GMP, IMP (open_lth layout), structured pruning,
and the safetensors + JSON artifact that ``--checkpoint`` accepts."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from hiddencost.backbones import create_model
from hiddencost.compression import layer_sparsities, measure_sparsity
from hiddencost.data import load_dataset
from hiddencost.errors import HiddenCostError
from hiddencost.recipes import (
    FinetuneConfig,
    GMPConfig,
    IMPConfig,
    StructuredConfig,
    TrainData,
    count_params_flops,
    cubic_sparsity,
    gmp_prune,
    imp_prune,
    load_artifact,
    save_artifact,
    structured_prune,
)
from hiddencost.zoo.open_lth import load_open_lth

torch.set_num_threads(2)
SIZE = 16  # training input size of the tiny CNN


class TinyResNet(nn.Module):
    """A small CNN with a residual addition (what GMP / IMP / Torch-Pruning must handle),
    10 outputs: the recipes are architecture-generic, and this keeps the tests fast."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.conv3 = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(x)))
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def digits_data() -> TrainData:
    task = load_dataset("digits")
    return TrainData(task.train_images[:48], task.train_labels[:48], SIZE,
                     (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _tiny(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    return TinyResNet().eval()


def _resnet18(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("resnet18", weights="random")[0]


FT = FinetuneConfig(batch_size=16, lr=1e-3, seed=0)


def test_cubic_schedule_matches_zhu_gupta():
    # s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 with s_i=0.1, s_f=0.9, t0=10, n=4, dt=5
    args = dict(final_sparsity=0.9, initial_sparsity=0.1, start=10, n_events=4, frequency=5)
    assert cubic_sparsity(10, **args) == pytest.approx(0.1)
    assert cubic_sparsity(20, **args) == pytest.approx(0.9 - 0.8 * 0.5**3)  # half-way: 0.8
    assert cubic_sparsity(15, **args) == pytest.approx(0.9 - 0.8 * 0.75**3)
    assert cubic_sparsity(30, **args) == pytest.approx(0.9)
    assert cubic_sparsity(99, **args) == pytest.approx(0.9)
    assert cubic_sparsity(0, **args) == pytest.approx(0.1)


def test_gmp_follows_schedule_and_keeps_pruned_weights_zero(digits_data):
    model = _tiny()
    cfg = GMPConfig(final_sparsity=0.8, n_events=4, frequency=2, total_steps=10,
                    finetune=FinetuneConfig(batch_size=16, lr=0.05, loss="ce"))
    zero_sets = []

    def on_event(step, target, measured):
        zero_sets.append({n: (m.weight == 0).clone() for n, m in model.named_modules()
                          if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))})

    result = gmp_prune(model, digits_data, cfg, on_event=on_event)
    steps = [e[0] for e in result.events]
    assert steps == [0, 2, 4, 6, 8]
    for step, target, measured in result.events:
        assert target == pytest.approx(cubic_sparsity(step, 0.8, 0.0, 0, 4, 2))
        assert measured == pytest.approx(target, abs=2e-4)  # exact count round(s * n)
    assert result.final_sparsity == pytest.approx(0.8, abs=2e-4)
    assert len(result.losses) == 10 and all(math.isfinite(x) for x in result.losses)
    final = {n: m.weight == 0 for n, m in model.named_modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    for zeros in zero_sets:  # once pruned, always pruned (masks re-applied every step)
        for name, z in zeros.items():
            assert bool((final[name] | ~z).all()), name
    assert result.losses[-1] < result.losses[0] * 1.5  # training went on between events


def test_gmp_layer_scope(digits_data):
    model = _tiny()
    cfg = GMPConfig(final_sparsity=0.5, n_events=2, frequency=1, total_steps=3, scope="layer",
                    exclude_first_conv=True, exclude_classifier=True, finetune=FT)
    gmp_prune(model, digits_data, cfg)
    per_layer = layer_sparsities(model, exclude_first_conv=True, exclude_classifier=True)
    assert all(abs(s - 0.5) < 1e-3 for s in per_layer.values())
    assert layer_sparsities(model)["conv1"] == 0.0 and layer_sparsities(model)["fc"] == 0.0
    assert set(per_layer) == {"conv2", "conv3"}


def test_imp_levels_follow_0_8_power_and_load_as_open_lth(digits_data, tmp_path):
    model = _tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = IMPConfig(levels=3, fraction=0.2, rewind_step=0, train_steps=2, finetune=FT)
    levels = imp_prune(model, digits_data, cfg, tmp_path / "lth")
    total = levels[0].total
    expected = total
    for lv in levels:
        if lv.level > 0:
            expected -= math.ceil(0.2 * expected)
        assert lv.remaining == expected
        assert lv.sparsity == pytest.approx(1 - expected / total)
    assert levels[3].sparsity == pytest.approx(1 - 0.8**3, abs=1e-3)
    level3 = tmp_path / "lth" / "replicate_1" / "level_3" / "main"
    files = sorted(p.name for p in level3.iterdir())
    assert files == ["mask.pth", "model_ep0_it0.pth", "model_ep0_it2.pth",
                     "sparsity_report.json"]
    saved = torch.load(level3 / "model_ep0_it2.pth", weights_only=True)
    assert all(k.startswith("model.") for k in saved)
    # the rewound start is the initial weights times the level's mask
    start = torch.load(level3 / "model_ep0_it0.pth", weights_only=True)
    mask = torch.load(level3 / "mask.pth", weights_only=True)
    assert torch.equal(start["model.conv2.weight"],
                       init["conv2.weight"] * mask["model.conv2.weight"])
    # our own ticket goes through the published-ticket loader
    ticket = _tiny(seed=1)
    report = load_open_lth(ticket, level3)
    assert report.claimed_sparsity == pytest.approx(levels[3].sparsity, abs=1e-9)
    for k, v in model.state_dict().items():
        assert torch.equal(ticket.state_dict()[k], v.cpu()), k


def test_imp_rewinds_to_an_early_checkpoint(digits_data, tmp_path):
    model = _tiny()
    cfg = IMPConfig(levels=1, fraction=0.5, rewind_step=2, train_steps=1, finetune=FT)
    imp_prune(model, digits_data, cfg, tmp_path)
    run = tmp_path / "replicate_1"
    pre = torch.load(run / "level_pretrain" / "main" / "model_ep0_it2.pth", weights_only=True)
    start1 = torch.load(run / "level_1" / "main" / "model_ep0_it2.pth", weights_only=True)
    mask = torch.load(run / "level_1" / "main" / "mask.pth", weights_only=True)
    key = "model.conv3.weight"
    assert torch.equal(start1[key], pre[key] * mask[key])
    assert (run / "level_1" / "main" / "model_ep1_it0.pth").is_file()  # 48 / 16 = 3 it per ep


def test_structured_pruning_makes_a_smaller_model_that_reloads(digits_data, tmp_path):
    model = _resnet18()
    params0, flops0 = count_params_flops(model, 32)
    cfg = StructuredConfig(target_ratio=0.5, target="params", max_steps=10, max_channel_ratio=0.8,
                           input_size=32, finetune_steps=1, finetune=FT)
    result = structured_prune(model, cfg, digits_data)
    assert result.params_before == params0 and result.flops_before == flops0
    assert result.reduction >= 0.5 and result.params_after <= 0.5 * params0
    assert result.reduction < 0.5 + 0.2  # stops at the first step past the target
    assert model.fc.out_features == 1000 and model.conv1.out_channels < 64
    path = save_artifact(model, tmp_path / "s", "resnet18", "structured", cfg.to_dict())
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["structure"]["conv1"]["attrs"]["out_channels"] == model.conv1.out_channels
    loaded, _ = load_artifact(path)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
    # the JSON is data: a tampered shape fails the strict load, naming the key
    meta["structure"]["conv1"]["tensors"]["weight"][0] += 1
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(HiddenCostError, match=r"shape keys: conv1\.weight|does not match"):
        load_artifact(path)


def test_structured_flops_target():
    model = _tiny()
    result = structured_prune(model, StructuredConfig(target_ratio=0.3, target="flops",
                                                      max_steps=20, max_channel_ratio=0.8,
                                                      input_size=SIZE))
    assert model.fc.out_features == 10 and model.conv3.out_channels < 32
    assert result.flops_after <= 0.7 * result.flops_before


def test_artifact_errors(tmp_path):
    model = create_model("efficientnet_lite0", weights="random")[0]
    path = save_artifact(model, tmp_path / "a", "efficientnet_lite0", "magnitude")
    with pytest.raises(HiddenCostError, match="from efficientnet_lite0.in1k, not resnet34"):
        create_model("resnet34", checkpoint=path)
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["report"]["n_zero_weights"] = 5
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(HiddenCostError, match="weights are zero"):
        load_artifact(path)
    with open(path, "r+b") as fh:  # corrupt the weights: the hash no longer matches
        fh.seek(200)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(HiddenCostError, match="sha256"):
        load_artifact(path)


def _cli():
    from hiddencost.cli import app
    return app


def test_cli_compress_quantize_with_activations_round_trips(tmp_path):
    out = tmp_path / "q"
    result = CliRunner().invoke(_cli(), [
        "compress", "--model", "efficientnet_lite0", "--weights", "random", "--recipe", "quantize",
        "--weight-bits", "4", "--activation-bits", "8", "--limit", "8", "--device", "cpu",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, info = create_model("efficientnet_lite0", checkpoint=out / "model.safetensors")
    meta = info.compression
    assert meta["recipe"] == "quantize" and meta["activation_quantization"]["bits"] == 8
    assert meta["report"]["max_distinct_values_per_channel"] <= 16
    with torch.inference_mode():
        y = model(torch.randn(1, 3, 64, 64))
    assert torch.isfinite(y).all()


def test_cli_compress_gmp_and_errors(tmp_path):
    out = tmp_path / "g"
    result = CliRunner().invoke(_cli(), [
        "compress", "--model", "efficientnet_lite0", "--weights", "random", "--recipe", "gmp",
        "--sparsity", "0.6", "--n-events", "2", "--frequency", "1", "--steps", "3",
        "--limit", "32", "--input-size", "32", "--batch-size", "16", "--device", "cpu",
        "--out", str(out)])
    assert result.exit_code == 0, result.output
    model, _ = create_model("efficientnet_lite0", checkpoint=out)
    assert measure_sparsity(model) == pytest.approx(0.6, abs=1e-6)
    bad = CliRunner().invoke(_cli(), ["compress", "--recipe", "prune-it-all"])
    assert bad.exit_code == 2 and "unknown --recipe" in bad.output


def _one_line(result) -> str:
    text = (result.stderr or result.output).strip()
    assert result.exit_code == 2 and len(text.splitlines()) == 1, text
    return text


def _no_model(monkeypatch):
    """Fail the test if a command builds a model: its refusals must come before any work."""
    import hiddencost.backbones as backbones

    def built(*args, **kwargs):
        raise AssertionError("a model was built before the input was refused")

    monkeypatch.setattr(backbones, "create_model", built)


def test_compress_refuses_an_out_it_would_clobber_before_any_work(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    taken = tmp_path / "taken"
    taken.write_text("keep me")
    text = _one_line(CliRunner().invoke(_cli(), ["compress", "--out", str(taken)]))
    assert f"--out {taken} is a file; give a folder" in text and taken.read_text() == "keep me"
    held = tmp_path / "held"
    held.mkdir()
    (held / "model.safetensors").write_bytes(b"earlier weights")
    (held / "model.json").write_text("{}")
    text = _one_line(CliRunner().invoke(_cli(), ["compress", "--out", str(held)]))
    assert text == (f"error: {held} already holds a compressed model (model.safetensors); give "
                    "another --out, or --overwrite to replace it")
    assert (held / "model.safetensors").read_bytes() == b"earlier weights"
    assert sorted(p.name for p in held.iterdir()) == ["model.json", "model.safetensors"]


def test_compress_refuses_a_sequence_dataset_naming_the_image_ones(tmp_path, monkeypatch):
    _no_model(monkeypatch)
    out = tmp_path / "c"
    text = _one_line(CliRunner().invoke(_cli(), ["compress", "--dataset", "splice",
                                                 "--out", str(out)]))
    assert text.startswith("error: compress --dataset splice: splice holds sequence data, not "
                           "images; use an image dataset: digits, cifar10, ")
    assert text.endswith(", imagefolder:PATH") and "bbc_news" not in text
    assert not out.exists()


def test_compress_overwrite_replaces_an_artifact_whole(tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"earlier weights")
    (out / "model.json").write_text("{}")
    again = CliRunner().invoke(_cli(), [
        "compress", "--model", "efficientnet_lite0", "--weights", "random", "--recipe",
        "magnitude", "--sparsity", "0.8", "--device", "cpu", "--out", str(out), "--overwrite"])
    assert again.exit_code == 0, again.output
    meta = json.loads((out / "model.json").read_text())
    assert meta["report"]["measured_sparsity"] == pytest.approx(0.8, abs=1e-6)
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]
    model, _ = load_artifact(out)  # the hash in the new JSON is that of the new weights
    assert measure_sparsity(model) == pytest.approx(0.8, abs=1e-6)


def test_an_interrupted_save_leaves_the_earlier_artifact_whole(tmp_path, monkeypatch):
    import hiddencost.recipes.artifact as artifact

    model, _ = create_model("efficientnet_lite0", weights="random")
    path = save_artifact(model, tmp_path / "a", "efficientnet_lite0", "magnitude")
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}

    def killed(state, filename):  # half the file written, then the process is stopped
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(artifact, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        save_artifact(model, tmp_path / "a", "efficientnet_lite0", "random")
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before  # no temp left
    load_artifact(path)


def test_a_structure_larger_than_the_architecture_is_refused_before_allocating(tmp_path):
    model, _ = create_model("efficientnet_lite0", weights="random")
    path = save_artifact(model, tmp_path / "a", "efficientnet_lite0", "magnitude")
    meta = json.loads(path.with_suffix(".json").read_text())
    huge = [10**6, 10**6, 3, 3]  # 36 TB of float32 zeros, were it built
    meta["structure"] = {"conv_stem": {"attrs": {}, "tensors": {"weight": huge}}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(HiddenCostError) as err:
        load_artifact(path)
    assert str(err.value) == ("structure gives conv_stem.weight the shape [1000000, 1000000, 3, "
                              "3], larger than the architecture's [32, 3, 3, 3] (structured "
                              "pruning only removes)")
