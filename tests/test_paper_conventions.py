"""The paper's conventions by name, beside ours (issue "Trust", items 17-21): its lottery-ticket
files and masks, its sparsity convention, its KL-to-uniform, its ResNet-50 weights and ticket
levels, and the ILM-VP options its users expect."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hiddencost.backbones import available_backbones, create_model
from hiddencost.cli import app
from hiddencost.compression import paper_remaining_percent
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity import cached_fidelity
from hiddencost.model_table import build_network, table_entry
from hiddencost.run import make_config, run_one
from hiddencost.study.catalog import load_preset
from hiddencost.study.fidelity import fidelity_targets
from hiddencost.study.spec import execution_config, expand, parse_spec
from hiddencost.zoo import load_zoo_checkpoint, parse_zoo_name
from hiddencost.zoo.vgg_layout import remap_vgg, vgg_key_map

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return create_model("resnet18", weights="random")[0]


def _conv_masks(model: nn.Module, sparsity: float, skip: str = "conv1") -> dict:
    """0/1 masks over the convolution weights (the paper's tickets: conv1 and fc unmasked)."""
    gen = torch.Generator().manual_seed(1)
    return {f"{n}.weight": (torch.rand(m.weight.shape, generator=gen) >= sparsity).float()
            for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n != skip}


def _write_ticket(folder, model, masks, k=3, prefix=""):
    """The paper's two files of IMP round k: raw weights and conv masks, torchvision key names."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / f"resnet18_dyn4_{k}_checkpoint.pth"
    torch.save(OrderedDict((prefix + n, v.clone()) for n, v in model.state_dict().items()),
               weights)
    torch.save(OrderedDict((prefix + n, v) for n, v in masks.items()),
               folder / f"resnet18_dyn4_{k}_mask.pth")
    return weights


@pytest.mark.parametrize("prefix", ["", "model."])
def test_paper_ticket_is_weight_times_mask(tmp_path, resnet18, prefix):
    # item 17: the paper's file names; with model.-prefixed keys the reference's loader never
    # applied the mask (raw weights overwrote the masked ones); ours applies it either way
    masks = _conv_masks(resnet18, 0.6)
    weights = _write_ticket(tmp_path, resnet18, masks, prefix=prefix)
    model, info = create_model("resnet18.lth-paper", checkpoint=weights)
    state, raw = model.state_dict(), resnet18.state_dict()
    for name, value in raw.items():
        want = value * masks[name] if name in masks else value
        assert torch.equal(state[name], want), name
    assert info.compression["format"] == "paper_lth"
    assert info.compression["files"][1].endswith("resnet18_dyn4_3_mask.pth")
    # item 18: the paper's convention, % of conv weights remaining with conv1 excluded
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert paper_remaining_percent(model) == pytest.approx(100 * kept / total, abs=1e-9)


def test_paper_ticket_mask_option_and_one_line_errors(tmp_path, resnet18):
    masks = _conv_masks(resnet18, 0.5)
    weights = _write_ticket(tmp_path / "t", resnet18, masks)
    moved = tmp_path / "elsewhere.pth"
    (tmp_path / "t" / "resnet18_dyn4_3_mask.pth").rename(moved)
    with pytest.raises(HiddenCostError, match="mask .* does not exist"):
        create_model("resnet18.lth-paper", checkpoint=weights)
    model, _ = create_model("resnet18.lth-paper", checkpoint=weights, mask=moved)  # --mask
    assert float((model.layer1[0].conv1.weight == 0).float().mean()) > 0.4
    odd = tmp_path / "ticket.pth"
    weights.rename(odd)
    with pytest.raises(HiddenCostError, match="pass it with --mask PATH"):
        load_zoo_checkpoint("resnet18.lth-paper", odd)
    torch.save({**masks, "fc.weight": torch.ones(1000, 512)}, moved)
    with pytest.raises(HiddenCostError, match="not convolution weights: fc.weight"):
        load_zoo_checkpoint("resnet18.lth-paper", odd, mask=moved)
    # a mask is never silently ignored by a source that does not apply one
    plain = tmp_path / "plain.pth"
    torch.save(resnet18.state_dict(), plain)
    with pytest.raises(HiddenCostError, match="--mask is read only by the lottery-ticket"):
        create_model("resnet18", checkpoint=plain, mask=moved)
    with pytest.raises(HiddenCostError, match="--mask needs the --checkpoint"):
        create_model("resnet18", weights="random", mask=moved)
    with pytest.raises(HiddenCostError, match="take no mask file"):
        load_zoo_checkpoint("resnet18.acdc-s80", plain, mask=moved)


def test_run_with_a_paper_ticket_records_both_sparsity_conventions(tmp_path, resnet18):
    masks = _conv_masks(resnet18, 0.7)
    weights = _write_ticket(tmp_path / "t", resnet18, masks)
    mask = tmp_path / "t" / "resnet18_dyn4_3_mask.pth"
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "run", "--model", "resnet18.lth-paper", "--checkpoint", str(weights), "--mask",
        str(mask), "--method", "lp", "--n-shot", "1", "--epochs", "1", "--lp-image-size", "32",
        "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["config"]["mask"] == str(mask)
    kept = sum(int(m.sum()) for m in masks.values())
    assert record["paper_remaining_percent"] == pytest.approx(
        100 * kept / sum(m.numel() for m in masks.values()))
    assert 0.6 < record["sparsity"] < 0.7  # ours: zeros over every conv and linear weight
    assert record["paper_kl_uniform_incorrect"] is not None


SPEC = """
name: tickets
model: [resnet18]
dataset: [digits]
compression:
  - method: none
  - name: lth
    tag: lth-paper
    checkpoint: "lth/{arch}_dyn4_{key}_checkpoint.pth"
    mask: "lth/{arch}_dyn4_{key}_mask.pth"
    levels: [79.122, 11.571]
    keys: [1, 9]
    unit: remaining_percent
method: [lp]
n_shot: [1]
seed: [0]
"""


def test_a_spec_names_ticket_files_by_round_and_their_masks():
    spec = parse_spec(SPEC)
    runs = [r for r in expand(spec) if r.tags["family"] == "lth"]
    assert [r.identity["checkpoint"] for r in runs] == [
        "lth/resnet18_dyn4_1_checkpoint.pth", "lth/resnet18_dyn4_9_checkpoint.pth"]
    assert [r.identity["mask"] for r in runs] == [
        "lth/resnet18_dyn4_1_mask.pth", "lth/resnet18_dyn4_9_mask.pth"]
    assert [r.tags["level"] for r in runs] == [79.122, 11.571]
    config = execution_config(runs[0].identity, {}, "/ckpt")
    assert config["mask"] == "/ckpt/lth/resnet18_dyn4_1_mask.pth"
    assert config["checkpoint"] == "/ckpt/lth/resnet18_dyn4_1_checkpoint.pth"
    targets = fidelity_targets(spec)
    assert [t.mask for t in targets] == [r.identity["mask"] for r in runs]
    # a dense run has no mask (identity version 2 spells every field, None included)
    assert next(r for r in expand(spec) if r.tags["family"] == "dense").identity["mask"] is None
    with pytest.raises(HiddenCostError, match="keys has 1 entries for 2 levels"):
        parse_spec(SPEC.replace("keys: [1, 9]", "keys: [1]"))


# --- item 20: the paper's dense ResNet-50 and its SparseZoo VGGs ------------------------------

def test_resnet50_v2_and_vgg_variants_are_registered():
    entries = {e.name: e for e in available_backbones()}
    assert entries["resnet50.tv2_in1k"].cfg.hub_name == "resnet50.tv2_in1k"
    assert {"vgg11.tv_in1k", "vgg16.tv_in1k", "vgg19.tv_in1k"} <= set(entries)
    assert parse_zoo_name("vgg16.gmp-sparsezoo").family.format == "sparseml"


@pytest.mark.parametrize("arch, blocks", [
    ("vgg11", [1, 1, 2, 2, 2]), ("vgg16", [2, 2, 3, 3, 3]), ("vgg19", [2, 2, 4, 4, 4])])
def test_sparseml_vgg_names_map_onto_timm(arch, blocks):
    # SparseML's VGG: sections of (conv [bn] relu) blocks, then classifier.mlp.{0,3,6} linears
    # (its vgg.py section settings give the block counts above); shapes only (meta tensors)
    with torch.device("meta"):
        model = build_network(table_entry(arch))
    state = OrderedDict()
    for s, n in enumerate(blocks):
        for b in range(n):
            state[f"sections.{s}.{b}.conv.weight"] = None
            state[f"sections.{s}.{b}.conv.bias"] = None
    names = vgg_key_map(model)
    own = model.state_dict()
    for key in state:
        state[key] = torch.empty(own[names[key]].shape, device="meta")
    for i, (out, inp) in {0: (4096, 512 * 7 * 7), 3: (4096, 4096), 6: (1000, 4096)}.items():
        state[f"classifier.mlp.{i}.weight"] = torch.empty(out, inp, device="meta")
        state[f"classifier.mlp.{i}.bias"] = torch.empty(out, device="meta")
    mapped = remap_vgg(state, model, "x.pth")
    assert list(mapped) == list(own)  # total, in timm's order
    assert all(mapped[k].shape == own[k].shape for k in own)
    with pytest.raises(HiddenCostError, match="unknown keys sections.5.0.conv.weight"):
        remap_vgg({**state, "sections.5.0.conv.weight": state["sections.0.0.conv.weight"]},
                  model, "x.pth")


def test_a_linear_layer_reshaped_is_the_same_convolution():
    # what the classifier reshape relies on: flattening C×7×7 channel-major (SparseML's and
    # torchvision's view(B, -1)) matches a 7×7 convolution with the weight reshaped
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 7, 7, generator=gen, dtype=torch.float64)
    w = torch.randn(5, 6 * 7 * 7, generator=gen, dtype=torch.float64)
    linear = x.flatten(1) @ w.T
    conv = torch.nn.functional.conv2d(x, w.reshape(5, 6, 7, 7)).flatten(1)
    assert torch.allclose(linear, conv)


def test_paper_convention_skips_timm_vgg_classifier_convolutions():
    # timm's VGG holds torchvision's classifier.0/.3 linears as pre_logits.fc1/fc2 convolutions;
    # the paper's count (torchvision VGG) never included them
    class TimmLikeVGG(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False))
            self.pre_logits = nn.Module()
            self.pre_logits.fc1 = nn.Conv2d(2, 4, 1, bias=False)

    net = TimmLikeVGG()
    with torch.no_grad():
        net.features[0].weight.copy_(torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
        net.pre_logits.fc1.weight.zero_()
    assert paper_remaining_percent(net) == pytest.approx(50.0)


# --- item 21: the ILM-VP options its users expect ---------------------------------------------

SMALL = dict(dataset="digits", n_shot=2, epochs=3, canvas_size=32, inner_size=16, device="cpu",
             batch_size=8)


def test_ilm_options_run_end_to_end_and_the_test_curve_changes_nothing(tmp_path):
    plain = run_one(make_config(method="ilm", mapping_interval=2, **SMALL))
    curve = run_one(make_config(method="ilm", mapping_interval=2, test_every_epoch=True,
                                **SMALL))
    assert [e.mapping_recomputed for e in plain.history] == [True, False, True]
    assert plain.mapping_history[0] == plain.mapping_history[1]
    # the test accuracy after each epoch, for curves: the last one is the result itself, and
    # measuring it changes no number of the run
    assert [e.loss for e in curve.history] == [e.loss for e in plain.history]
    assert curve.accuracy == plain.accuracy and curve.nll == plain.nll
    assert curve.history[-1].test_accuracy == pytest.approx(curve.accuracy)
    assert "test_accuracy" not in plain.history[0]


def test_mapping_num_and_prompt_init_reach_the_record():
    two = run_one(make_config(method="flm", mapping_num=2, **SMALL))
    assert all(len(e.sources) == 2 and e.source == e.sources[0] for e in two.label_mapping)
    assert len({s for e in two.label_mapping for s in e.sources}) == 20  # 10 classes × 2
    zero = run_one(make_config(method="rlm", **SMALL))
    randn = run_one(make_config(method="rlm", prompt_init="randn", **SMALL))
    assert zero.history[0].loss != randn.history[0].loss


def test_method_options_are_in_the_identity_with_their_defaults():
    base = make_config(method="ilm", **SMALL).identity()
    assert base["identity_version"] == 2 and base["mask"] is None
    assert base["options"] == {"mapping_interval": 1, "mapping_num": 1, "prompt_init": "zero",
                               "many_to_one": False, "test_every_epoch": False}
    # the flat spelling (flags, version-1 records) and the nested one are the same run
    five = make_config(method="ilm", mapping_interval=5, **SMALL).identity()
    assert five["options"]["mapping_interval"] == 5
    assert five == make_config(method="ilm", options={"mapping_interval": 5}, **SMALL).identity()
    with pytest.raises(HiddenCostError, match="prompt_init"):
        make_config(prompt_init="ones").identity()


# --- item 22: the quickstart has a compressed point that keeps the dense model's decisions ----

def test_quickstart_has_a_compressed_point_that_keeps_upstream_agreement():
    points = [r.tags["compression"] for r in expand(load_preset("quickstart"))]
    assert "w8" in points
    # on the real packaged EfficientNet-Lite0 and the digits test images the quickstart's
    # fidelity step uses: 8-bit weights keep most top-1 decisions, 4-bit ones none
    kept = cached_fidelity("efficientnet_lite0", "w8", images="digits", limit=128)
    lost = cached_fidelity("efficientnet_lite0", "w4", images="digits", limit=128)
    assert kept.top1_agreement > 0.6 and lost.top1_agreement < 0.1
