"""The backbone registry and checkpoint loading, on the real packaged EfficientNet-Lite0."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from hiddencost.backbones import create_model, resolve_backbone_name
from hiddencost.checkpoints import read_state_dict
from hiddencost.errors import HiddenCostError
from hiddencost.model_table import imagenet_class_names


@pytest.fixture(scope="module")
def lite0():
    return create_model("efficientnet_lite0")


def _classify(model, info, image) -> str:
    x = torch.tensor(image).permute(2, 0, 1).float()[None] / 255
    x = F.interpolate(x, size=(info.input_size,) * 2, mode="bilinear", antialias=True)
    mean = torch.tensor(info.mean).view(1, 3, 1, 1)
    std = torch.tensor(info.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        return info.class_names[int(model((x - mean) / std).argmax())]


def test_packaged_lite0_classifies_sample_photos(lite0):
    skdata = pytest.importorskip("skimage.data")
    model, info = lite0
    assert info.weights == "pretrained:package"
    assert info.mean == info.std == (0.5, 0.5, 0.5)
    assert _classify(model, info, skdata.chelsea()) == "Egyptian cat"
    assert _classify(model, info, skdata.coffee()) == "espresso"


def test_registry_names_and_errors():
    assert resolve_backbone_name("efficientnet_lite0").name == "efficientnet_lite0.in1k"
    assert resolve_backbone_name("resnet18").name == "resnet18.tv_in1k"
    assert len(imagenet_class_names()) == 1000
    with pytest.raises(HiddenCostError, match="unknown model 'resnet19'.*resnet18.tv_in1k"):
        resolve_backbone_name("resnet19")


def test_checkpoint_round_trip_and_module_prefix(tmp_path):
    model, _ = create_model("resnet18", weights="random")
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    loaded, info = create_model("resnet18", checkpoint=path)
    assert info.weights.startswith("checkpoint:")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_checkpoint_that_does_not_fit_names_keys(tmp_path):
    model, _ = create_model("resnet18", weights="random")
    state = model.state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(HiddenCostError, match=r"missing keys: layer1\.0\.conv1\.weight.*"
                                              r"unexpected keys: extra\.weight"):
        create_model("resnet18", checkpoint=path)


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_with_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"w": _Payload()}, fh)
    with pytest.raises(HiddenCostError, match="cannot read checkpoint"):
        read_state_dict(path)
    with pytest.raises(HiddenCostError, match="does not exist"):
        read_state_dict(tmp_path / "missing.pth")


def test_hub_weights_offline_give_a_clear_error(monkeypatch):
    import timm

    real = timm.create_model

    def offline(name, pretrained=False, **kw):
        if pretrained:
            raise OSError("network is unreachable")
        return real(name, pretrained=False, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(HiddenCostError, match="--checkpoint PATH or --weights random"):
        create_model("resnet18")
