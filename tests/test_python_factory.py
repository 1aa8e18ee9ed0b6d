"""Bring your own model: a backbone named ``module:function``, built by the user's code (here the
real EfficientNet-Lite0 pruned by ``torch.nn.utils.prune``, a tool other than ours)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

from hiddencost.backbones import create_model
from hiddencost.cli import app
from hiddencost.errors import HiddenCostError
from hiddencost.run import RunCache, make_config, run_one

TINY = {"canvas_size": 48, "inner_size": 16, "lp_image_size": 32, "device": "cpu"}

MODULE = textwrap.dedent('''
    import torch
    from torch import nn
    from torch.nn.utils import prune

    from hiddencost.backbones import create_model

    PREP = {"input_size": 224, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


    def pruned():
        """EfficientNet-Lite0 with 30 % of every convolution's weights pruned by L1 norm."""
        model, _ = create_model("efficientnet_lite0")
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                prune.l1_unstructured(module, "weight", amount=0.3)
                prune.remove(module, "weight")
        return model, PREP


    def tiny():
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 7))
        return net, {**PREP, "input_size": 16}


    def named():
        net, prep = tiny()
        return net, {**prep, "class_names": [f"c{i}" for i in range(7)]}


    def not_a_pair():
        return nn.Linear(2, 2)


    def bad_preprocessing():
        return tiny()[0], {"input_size": 16, "mean": (0.5, 0.5)}


    def broken():
        raise RuntimeError("out of coffee")
''')


@pytest.fixture(scope="module")
def byo(tmp_path_factory):
    root = tmp_path_factory.mktemp("byo")
    (root / "byo_models.py").write_text(MODULE)
    sys.path.insert(0, str(root))
    yield "byo_models"
    sys.path.remove(str(root))
    sys.modules.pop("byo_models", None)


def test_a_factory_model_is_described_by_its_preprocessing_and_outputs(byo):
    model, info = create_model(f"{byo}:tiny")
    assert (info.name, info.input_size, info.mean) == (f"{byo}:tiny", 16, (0.5, 0.5, 0.5))
    assert info.class_names == [f"class {i}" for i in range(7)]  # counted by a probe pass
    assert info.weights == f"python:{byo}:tiny" and not model.training
    assert create_model(f"{byo}:named")[1].class_names == [f"c{i}" for i in range(7)]


@pytest.mark.parametrize(("function", "match"), [
    ("not_a_pair", "must return \\(nn.Module, preprocessing\\), not Linear"),
    ("bad_preprocessing", "preprocessing mean.2: Field required"),
    ("broken", "failed: RuntimeError: out of coffee"),
    ("missing", "has no function 'missing'"),
])
def test_a_bad_factory_is_one_line(byo, function, match):
    with pytest.raises(HiddenCostError, match=match):
        create_model(f"{byo}:{function}")


def test_unimportable_modules_and_random_weights_are_refused(byo):
    with pytest.raises(HiddenCostError, match="cannot import no_such_module_here"):
        create_model("no_such_module_here:build")
    with pytest.raises(HiddenCostError, match="--weights random does not apply"):
        create_model(f"{byo}:tiny", weights="random")


def test_a_checkpoint_loads_strictly_into_the_factory_architecture(byo, tmp_path):
    model, _ = create_model(f"{byo}:tiny")
    state = {k: torch.full_like(v, 0.25) for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "mine.pth")
    loaded, info = create_model(f"{byo}:tiny", checkpoint=tmp_path / "mine.pth")
    assert info.weights.startswith("checkpoint:")
    assert all((v == 0.25).all() for v in loaded.state_dict().values())
    torch.save({**state, "extra": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(HiddenCostError, match="extra"):
        create_model(f"{byo}:tiny", checkpoint=tmp_path / "bad.pth")


def test_a_model_pruned_by_another_tool_runs_vp_and_lp_and_is_measured(byo):
    cache = RunCache()
    name = f"{byo}:pruned"
    model, _ = create_model(name)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    linear = model.get_classifier().weight
    expected = sum(int((w == 0).sum()) for w in convs) / (
        sum(w.numel() for w in convs) + linear.numel())  # the classifier counts, unpruned
    ilm = run_one(make_config(model=name, method="ilm", n_shot=1, epochs=1, **TINY), cache=cache)
    assert ilm.method.id == "python/ilm" and ilm.network_family == "python"
    assert ilm.backbone_weights == f"python:{name}"
    assert ilm.sparsity == pytest.approx(expected, abs=1e-9)
    assert len({m.source for m in ilm.label_mapping}) == 10
    lp = run_one(make_config(model=name, method="lp", n_shot=2, epochs=2, **TINY), cache=cache)
    assert lp.method.id == "python/lp" and lp.sparsity == ilm.sparsity


def test_the_cli_names_a_factory_model(byo, tmp_path, monkeypatch):
    result = CliRunner().invoke(app, ["run", "--model", f"{byo}:nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "has no function 'nope'" in result.output
    assert not any(tmp_path.iterdir())


def test_a_module_in_the_working_directory_is_found(tmp_path, monkeypatch):
    (tmp_path / "byo_cwd_models.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    try:
        assert create_model("byo_cwd_models:tiny")[1].input_size == 16
        assert str(tmp_path) not in sys.path  # tried, then taken off again
    finally:
        sys.modules.pop("byo_cwd_models", None)
