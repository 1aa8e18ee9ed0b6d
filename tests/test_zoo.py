"""The compression zoo: each published format written in its exact layout and loaded back strictly.

Checkpoints are made here from small random models of the right architecture: open_lth tickets,
IST-DASLab converted files (``._layer.`` wrappers, mask tensors, ``module.`` prefixes), SparseML
ResNets (with an embedded recipe), RigL's converted ResNet-50 (TF-SAME max-pool) and VVTQ's
quantized DeiT-T (separate q/k/v, LSQ step sizes per bit-width).
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from hiddencost.backbones import create_model, resolve_backbone_name
from hiddencost.compression import magnitude_prune, measure_sparsity, prunable_layers
from hiddencost.errors import HiddenCostError
from hiddencost.zoo import available_zoo, load_zoo_checkpoint, parse_zoo_name
from hiddencost.zoo.rigl import TFSamePadMaxPool

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    model, _ = create_model("resnet18", weights="random")
    return model


@pytest.fixture(scope="module")
def pruned18(resnet18):
    """``resnet18`` magnitude-pruned to 80% per layer."""
    pruned = create_model("resnet18", weights="random")[0]
    pruned.load_state_dict(resnet18.state_dict())
    return magnitude_prune(pruned, 0.8, scope="layer")


def _random_masks(model, sparsity: float, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        f"{n}.weight": (torch.rand(m.weight.shape, generator=gen) >= sparsity).int()
        for n, m in prunable_layers(model)
    }


def _write_open_lth(level_dir, model, masks, weights_key_drop=None):
    level_dir.mkdir(parents=True)
    state = OrderedDict((f"model.{k}", v.clone()) for k, v in model.state_dict().items())
    if weights_key_drop:
        del state[weights_key_drop]
    torch.save(state, level_dir / "model_ep0_it0.pth")  # rewound start (dense init)
    torch.save(state, level_dir / "model_ep90_it0.pth")  # trained end of the level
    torch.save(OrderedDict((f"model.{k}", v) for k, v in masks.items()), level_dir / "mask.pth")
    total = float(sum(m.numel() for m in masks.values()))
    kept = float(sum(int(m.sum()) for m in masks.values()))
    (level_dir / "sparsity_report.json").write_text(json.dumps({"total": total,
                                                                 "unpruned": kept}))
    return level_dir


# --- registry ------------------------------------------------------------------------------

def test_zoo_names_parse_and_resolve():
    spec = parse_zoo_name("resnet50.acdc-s90")
    assert spec.family.format == "ist_daslab" and spec.claimed_sparsity == 0.9
    assert parse_zoo_name("resnet50.lth-l9").claimed_sparsity == pytest.approx(1 - 0.8**9)
    assert parse_zoo_name("resnet50.lth").claimed_sparsity is None
    assert parse_zoo_name("deit_tiny.vvtq-w4a4").weight_bits == 4
    assert parse_zoo_name("resnet18.gmp-sparsezoo").family.format == "sparseml"
    assert parse_zoo_name("resnet18.tv_in1k") is None
    entry = resolve_backbone_name("resnet50.rigl-s90")
    assert entry.timm_arch == "resnet50" and entry.cfg.input_size == 224
    with pytest.raises(HiddenCostError, match="exist for resnet50"):
        parse_zoo_name("resnet18.rigl-s90")
    with pytest.raises(HiddenCostError, match="pass its file with --checkpoint"):
        create_model("resnet50.acdc-s90")
    assert {f.format for f in available_zoo()} == {"open_lth", "paper_lth", "ist_daslab", "rigl",
                                                   "sparseml", "vvtq"}


# --- open_lth --------------------------------------------------------------------------------

def test_open_lth_ticket_loads_as_weights_times_mask(tmp_path, resnet18):
    masks = _random_masks(resnet18, 1 - 0.8**3)
    level = _write_open_lth(tmp_path / "level_3" / "main", resnet18, masks)
    model, info = create_model("resnet18.lth-l3", checkpoint=level)
    state = model.state_dict()
    for k, v in resnet18.state_dict().items():
        expected = v * masks[k] if k in masks else v
        assert torch.equal(state[k], expected.to(v.dtype)), k
    assert info.weights.startswith("zoo:")
    assert info.compression["claimed_sparsity"] == pytest.approx(1 - 0.8**3, abs=0.01)
    assert info.compression["measured_sparsity"] == pytest.approx(measure_sparsity(model))
    # a model file path works as well as the folder (mask.pth beside it)
    model2, _ = load_zoo_checkpoint("resnet18.lth", level / "model_ep90_it0.pth")
    assert torch.equal(model2.state_dict()["fc.weight"], state["fc.weight"])


def test_open_lth_failures_name_the_keys(tmp_path, resnet18):
    masks = _random_masks(resnet18, 0.5)
    level = _write_open_lth(tmp_path / "a", resnet18, masks,
                            weights_key_drop="model.layer1.0.bn1.running_mean")
    with pytest.raises(HiddenCostError, match=r"missing keys: layer1\.0\.bn1\.running_mean"):
        load_zoo_checkpoint("resnet18.lth", level)
    bad = dict(masks)
    bad["layer2.0.conv1.weight"] = torch.ones(3, 3).int()
    level = _write_open_lth(tmp_path / "b", resnet18, bad)
    with pytest.raises(HiddenCostError, match=r"mask layer2\.0\.conv1\.weight .* shape"):
        load_zoo_checkpoint("resnet18.lth", level)
    del bad["layer2.0.conv1.weight"]
    level = _write_open_lth(tmp_path / "c", resnet18, bad)
    with pytest.raises(HiddenCostError, match=r"lacks prunable tensors: layer2\.0\.conv1\.weight"):
        load_zoo_checkpoint("resnet18.lth", level)
    level = _write_open_lth(tmp_path / "d", resnet18, masks)  # 50% sparse, l9 claims 86.6%
    with pytest.raises(HiddenCostError, match=r"does not match the 0\.8658.*lth-l9.*layers"):
        load_zoo_checkpoint("resnet18.lth-l9", level)
    plain = tmp_path / "e"
    plain.mkdir()
    torch.save(resnet18.state_dict(), plain / "model_ep1_it0.pth")
    torch.save({f"model.{k}": v for k, v in masks.items()}, plain / "mask.pth")
    with pytest.raises(HiddenCostError, match="without the 'model.' prefix"):
        load_zoo_checkpoint("resnet18.lth", plain)


# --- IST-DASLab ------------------------------------------------------------------------------

def _ist_layout(model, masks_by_layer) -> OrderedDict:
    """IST's WrappedLayer checkpoint: module.<P>._layer.weight, module.<P>._weight_mask, ..."""
    wrapped = {n for n, _ in prunable_layers(model)}
    out = OrderedDict()
    for key, value in model.state_dict().items():
        prefix, _, leaf = key.rpartition(".")
        if prefix in wrapped:
            out[f"module.{prefix}._layer.{leaf}"] = value.clone()
            if leaf == "weight":
                out[f"module.{prefix}._weight_mask"] = masks_by_layer[key].float()
            else:
                out[f"module.{prefix}._bias_mask"] = torch.ones_like(value)
        else:
            out[f"module.{key}"] = value.clone()
    return out


def test_ist_daslab_wrapped_layers_and_masks(tmp_path, resnet18, pruned18):
    pruned = pruned18
    masks = {f"{n}.weight": (m.weight != 0).float() for n, m in prunable_layers(pruned)}
    path = tmp_path / "acdc.pth"
    torch.save({"epoch": 99, "model_config": {"arch": "resnet18", "dataset": "imagenet"},
                "model_state_dict": _ist_layout(resnet18, masks)}, path)
    model, report = load_zoo_checkpoint("resnet18.acdc-s80", path)
    assert report.format == "ist_daslab" and report.claim_source == "masks + tag acdc-s80"
    assert report.measured_sparsity == pytest.approx(0.8, abs=1e-4)
    for k, v in pruned.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    with pytest.raises(HiddenCostError, match=r"measured sparsity 0\.8000 does not match the 0\.9"):
        load_zoo_checkpoint("resnet18.gmp-s90", path)
    bad = _ist_layout(resnet18, masks)
    bad["module.layer3.1.conv2._weight_mask"] = torch.ones(5)
    torch.save({"model_state_dict": bad}, path)
    with pytest.raises(HiddenCostError, match=r"mask layer3\.1\.conv2\.weight .* shape"):
        load_zoo_checkpoint("resnet18.acdc-s80", path)
    # unwrapped files (plain keys, state_dict wrapper) load with the tag's claim only
    torch.save({"state_dict": {f"module.{k}": v for k, v in pruned.state_dict().items()}}, path)
    model, report = load_zoo_checkpoint("resnet18.acdc-s80", path)
    assert report.claim_source == "tag acdc-s80"


# --- SparseML --------------------------------------------------------------------------------

def _to_sparseml(state: dict) -> OrderedDict:
    out = OrderedDict()
    for key, value in state.items():
        k = re.sub(r"^conv1\.", "input.conv.", key)
        k = re.sub(r"^bn1\.", "input.bn.", k)
        k = re.sub(r"^fc\.", "classifier.fc.", k)
        m = re.match(r"layer(\d)\.(\d+)\.(.*)", k)
        if m:
            rest = m.group(3).replace("downsample.0.", "identity.conv.")
            rest = rest.replace("downsample.1.", "identity.bn.")
            k = f"sections.{int(m.group(1)) - 1}.{m.group(2)}.{rest}"
        out[k] = value.clone()
    return out


RECIPE = """---
version: 1.1.0
modifiers:
    - !EpochRangeModifier
        start_epoch: 0.0
        end_epoch: 10.0
    - !GMPruningModifier
        params: __ALL_PRUNABLE__
        init_sparsity: 0.05
        final_sparsity: 0.8
        start_epoch: 0.0
        end_epoch: 5.0
        update_frequency: 0.5
---
# ResNet-18 pruned (markdown body of the recipe)
"""


def test_sparseml_remap_and_recipe_claim(tmp_path, pruned18):
    pruned = pruned18
    opt = torch.optim.SGD(pruned.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "model.pth"
    torch.save({"state_dict": _to_sparseml(pruned.state_dict()), "optimizer": opt.state_dict(),
                "recipe": RECIPE, "epoch": 10, "arch_key": "resnet18"}, path)
    model, report = load_zoo_checkpoint("resnet18.gmp-sparsezoo", path)
    assert report.claim_source == "recipe" and report.claimed_sparsity == pytest.approx(0.8)
    for k, v in pruned.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    # the recipe claims 90%: every layer is named as offending
    torch.save({"state_dict": _to_sparseml(pruned.state_dict()),
                "recipe": RECIPE.replace("final_sparsity: 0.8", "final_sparsity: 0.9")}, path)
    with pytest.raises(HiddenCostError, match=r"recipe's final_sparsity for: conv1\.weight"):
        load_zoo_checkpoint("resnet18.gmp-sparsezoo", path)
    # no recipe: the plain tag has nothing to check, the -sNN tag does
    state = _to_sparseml(pruned.state_dict())
    torch.save({"state_dict": state}, path)
    with pytest.raises(HiddenCostError, match="embeds no recipe"):
        load_zoo_checkpoint("resnet18.gmp-sparsezoo", path)
    assert load_zoo_checkpoint("resnet18.gmp-sparsezoo-s80", path)[1].measured_sparsity > 0.79
    state["sections.1.0.identity.conv.bias"] = torch.zeros(128)
    torch.save({"state_dict": state}, path)
    with pytest.raises(HiddenCostError, match=r"does not define: sections\.1\.0\.identity\.conv"):
        load_zoo_checkpoint("resnet18.gmp-sparsezoo-s80", path)


# --- RigL ------------------------------------------------------------------------------------

def _to_rigl(state: dict) -> OrderedDict:
    out = OrderedDict()
    for key, value in state.items():
        k = key
        k = re.sub(r"^conv1\.weight$", "initial_conv.conv.weight", k)
        k = re.sub(r"^bn1\.", "initial_conv.bn.", k)
        m = re.match(r"layer(\d)\.(\d+)\.(.*)", k)
        if m:
            rest = m.group(3)
            rest = re.sub(r"^conv(\d)\.weight$", r"conv\1.conv.weight", rest)
            rest = re.sub(r"^bn(\d)\.", r"conv\1.bn.", rest)
            rest = rest.replace("downsample.0.", "shortcut.conv.").replace("downsample.1.",
                                                                           "shortcut.bn.")
            k = f"layer{m.group(1)}.block.{m.group(2)}.{rest}"
        out[k] = value.clone()
    return out


def test_tf_same_maxpool_pads_right_and_bottom():
    x = torch.rand(1, 2, 8, 8)
    ref = F.max_pool2d(F.pad(x, (0, 1, 0, 1)), 3, 2)
    assert torch.equal(TFSamePadMaxPool()(x), ref)
    assert not torch.equal(ref, F.max_pool2d(x, 3, 2, padding=1))


def test_rigl_resnet50_remap_and_padding(tmp_path):
    torch.manual_seed(1)
    dense, _ = create_model("resnet50", weights="random")
    with torch.no_grad():  # half the weights zeroed; non-trivial BN statistics
        for _, layer in prunable_layers(dense):
            layer.weight.mul_(torch.rand(layer.weight.shape) >= 0.5)
        for m in dense.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    path = tmp_path / "rigl.pth"
    torch.save({"state_dict": _to_rigl(dense.state_dict())}, path)
    model, info = create_model("resnet50.rigl-s50", checkpoint=path)
    assert isinstance(model.maxpool, TFSamePadMaxPool)
    assert info.compression["measured_sparsity"] == pytest.approx(0.5, abs=0.01)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        out = model(x)
        # reference: the dense timm network with the stem computed as ResnetTF does
        h = dense.act1(dense.bn1(dense.conv1(x)))
        h = F.max_pool2d(F.pad(h, (0, 1, 0, 1)), 3, 2)
        for stage in (dense.layer1, dense.layer2, dense.layer3, dense.layer4):
            h = stage(h)
        ref = dense.fc(h.mean(dim=(2, 3)))
        assert torch.allclose(out, ref, atol=1e-5)
        assert not torch.allclose(out, dense(x), atol=1e-5)  # the padding matters
    bad = _to_rigl(dense.state_dict())
    bad["layer2.block.0.shortcut.conv.weight"] = bad["layer2.block.0.shortcut.conv.weight"][:5]
    torch.save(bad, path)
    with pytest.raises(HiddenCostError, match=r"shape keys: layer2\.0\.downsample\.0\.weight"):
        load_zoo_checkpoint("resnet50.rigl-s50", path)


def test_refuses_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("never",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(HiddenCostError, match="cannot read checkpoint"):
        load_zoo_checkpoint("resnet18.acdc-s90", path)


def test_urls_need_download_and_run_config_accepts_zoo_names(tmp_path):
    from hiddencost.checkpoints import resolve_checkpoint_path
    from hiddencost.run import RunConfig

    assert resolve_checkpoint_path(str(tmp_path / "x.pth")) == tmp_path / "x.pth"
    with pytest.raises(HiddenCostError, match="pass --download"):
        resolve_checkpoint_path("https://example.org/acdc_s90.pth")
    cfg = RunConfig(model="resnet50.acdc-s90", checkpoint="acdc.pth", method="lp").resolved()
    assert cfg.model == "resnet50.acdc-s90" and cfg.lp_image_size == 224


def test_checkpoint_urls_are_fetched_once_with_download(tmp_path, monkeypatch):
    import shutil
    from pathlib import Path

    import hiddencost.checkpoints as reg
    from hiddencost.study.spec import execution_config

    dense, _ = create_model("resnet18", weights="random")
    published = tmp_path / "published.pth"
    torch.save(dense.state_dict(), published)
    fetched = []

    def fetch(url, dest):  # the network part is torch.hub's downloader; here a local copy
        fetched.append(url)
        Path(dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(published, dest)
        return Path(dest)

    monkeypatch.setattr(reg, "download_checkpoint", fetch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    url = "https://example.org/s90/checkpoint.pth"
    with pytest.raises(HiddenCostError, match="pass --download"):
        create_model("resnet18", checkpoint=url)
    model, info = create_model("resnet18", checkpoint=url, download=True)
    create_model("resnet18", checkpoint=url, download=True)
    assert fetched == [url]  # the second load reuses the cached file
    assert info.weights.startswith("checkpoint:") and str(tmp_path / "home") in info.weights
    assert all(torch.equal(v, dense.state_dict()[k]) for k, v in model.state_dict().items())
    # same file name under another URL: another cache entry
    other = reg.resolve_checkpoint_path("https://example.org/s80/checkpoint.pth", True)
    assert other != reg.resolve_checkpoint_path(url, True) and len(fetched) == 2
    # a study never joins a URL to its checkpoint root
    assert execution_config({"checkpoint": url}, {}, "/ckpts")["checkpoint"] == url
    assert execution_config({"checkpoint": "a.pth"}, {}, "/ckpts")["checkpoint"] == "/ckpts/a.pth"
