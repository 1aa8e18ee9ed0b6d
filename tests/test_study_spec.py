"""Study specs: validation, expansion, run identity, presets."""

from __future__ import annotations

import json

import pytest

from hiddencost.errors import HiddenCostError
from hiddencost.quickstart import quickstart_configs
from hiddencost.run import make_config
from hiddencost.study.catalog import load_preset, load_spec, preset_names
from hiddencost.study.identity import KEY_LENGTH, canonical_json, key_of_identity, run_key
from hiddencost.study.spec import execution_config, expand, parse_spec

BASE = """
name: t
model: efficientnet_lite0
dataset: digits
compression:
  - method: none
  - method: magnitude
    sparsity: [0.5, 0.9]
method: [ilm, lp]
n_shot: [1, full]
seed: [0, 1]
params: {epochs: 3}
"""


def test_expansion_is_the_product_of_the_axes_in_order():
    runs = expand(parse_spec(BASE))
    assert len(runs) == 1 * 1 * 3 * 2 * 2 * 2
    assert len({r.key for r in runs}) == len(runs)
    first, last = runs[0].identity, runs[-1].identity
    assert (first["compression"]["method"], first["method"], first["n_shot"], first["seed"]) == (
        "none", "ilm", 1, 0)
    assert (last["compression"]["sparsity"], last["method"], last["n_shot"], last["seed"]) == (
        0.9, "lp", None, 1)
    # seed is the innermost axis, method outside n_shot
    assert [r.identity["seed"] for r in runs[:2]] == [0, 1]
    assert runs[0].tags == {"family": "dense", "compression": "dense", "level": None,
                            "unit": None}
    assert runs[-1].tags["compression"] == "magnitude-global-s0.90"
    assert runs[-1].tags["level"] == 0.9 and runs[-1].tags["unit"] == "sparsity"
    assert all(r.identity["epochs"] == 3 for r in runs)


def test_key_order_and_spelled_out_defaults_do_not_change_identity():
    reordered = """
params: {epochs: 3}
seed: [0, 1]
n_shot: [1, full]
method: [ilm, lp]
compression:
  - method: none
    sparsity: 0.0
  - sparsity: [0.5, 0.9]
    scope: global
    method: magnitude
dataset: [digits]
model: [efficientnet_lite0.in1k]
name: other-name
"""
    spelled = BASE.replace("params: {epochs: 3}",
                           "params: {epochs: 3, lr: 0.01, split_seed: 0, weights: pretrained,"
                           " canvas_size: 224, inner_size: 32, lp_image_size: 224}")
    keys = [r.key for r in expand(parse_spec(BASE))]
    assert [r.key for r in expand(parse_spec(reordered))] == keys
    assert [r.key for r in expand(parse_spec(spelled))] == keys
    # environment fields do not name a different run
    env = BASE.replace("params: {epochs: 3}", "params: {epochs: 3, device: cpu, data_root: /x}")
    assert [r.key for r in expand(parse_spec(env))] == keys
    # a changed hyper-parameter does
    changed = BASE.replace("params: {epochs: 3}", "params: {epochs: 3, lr: 0.02}")
    assert not set(r.key for r in expand(parse_spec(changed))) & set(keys)


def test_run_key_is_sha256_of_canonical_identity():
    cfg = make_config(n_shot=10, epochs=3)
    ident = cfg.identity()
    assert canonical_json(ident) == json.dumps(ident, sort_keys=True, separators=(",", ":"))
    key = run_key(cfg)
    assert len(key) == KEY_LENGTH and key == key_of_identity(dict(reversed(ident.items())))
    assert run_key(make_config(n_shot=10, epochs=3, batch_size=32, device="cpu")) == key
    assert run_key(make_config(n_shot=10, epochs=4)) != key


def test_duplicate_points_are_kept_once_and_scalars_become_lists():
    spec = parse_spec("model: efficientnet_lite0\nmethod: ilm\nseed: 0\n"
                      "compression: [{method: none}, {method: none, sparsity: 0}]\n")
    runs = expand(spec)
    assert len(runs) == 1 and spec.name == "study"


def test_quickstart_preset_is_exactly_quickstart_configs():
    runs = expand(load_preset("quickstart"))
    assert [r.key for r in runs] == [run_key(c) for c in quickstart_configs()]
    assert len(runs) == 24  # 4 compression points × ilm, flm, lp × 10-shot, full


def test_presets_load_and_reproduce_the_paper_axes():
    names = preset_names()
    assert names[0] == "quickstart"
    assert {"paper-lth", "paper-acdc", "paper-rigl", "paper-gmp", "paper-vvtq", "smoke"} <= set(
        names)
    for name in ("quickstart", "smoke", "paper-lth"):
        spec = load_preset(name)
        assert parse_spec(spec.to_yaml()) == spec  # show-preset output round-trips
    # each paper preset expanded once (15,000+ runs: the expansion is this test's cost)
    runs = {n: expand(load_preset(n)) for n in names if n.startswith("paper-")}
    lth = load_preset("paper-lth")
    assert lth.n_shot == [1, 2, 5, 10, 20, 50, 100, None]
    assert lth.seed == [0, 1, 2] and len(lth.dataset) == 8
    tickets = [r for r in runs["paper-lth"] if r.tags["family"] == "lth"]
    levels = list(dict.fromkeys(r.tags["level"] for r in tickets))
    assert levels == [79.122, 62.575, 49.35, 38.793, 30.407, 23.807, 18.664, 14.671, 11.571]
    assert tickets[0].identity["model"] == "resnet50.lth-paper"
    assert tickets[0].identity["checkpoint"] == "lth/resnet50_dyn4_1_checkpoint.pth"
    assert tickets[-1].identity["checkpoint"] == "lth/resnet50_dyn4_9_checkpoint.pth"
    dense = {r.identity["model"] for r in runs["paper-lth"] if r.tags["family"] == "dense"}
    assert dense == {"resnet50.tv2_in1k"}  # the paper's dense ResNet-50 (torchvision V2)
    gmp = {r.identity["model"] for r in runs["paper-gmp"]}
    assert {"vgg11.gmp-sparsezoo", "vgg16.gmp-sparsezoo", "vgg19.gmp-sparsezoo"} <= gmp
    vvtq = [r for r in runs["paper-vvtq"] if r.tags["family"] == "vvtq"]
    assert sorted({r.tags["level"] for r in vvtq}) == [2, 3, 4]
    assert vvtq[0].identity["model"] == "deit_tiny.vvtq-w4a4"  # a compression-zoo name
    assert vvtq[0].identity["checkpoint"] == "vvtq/deit_tiny_w4a4.pth"
    acdc = {r.identity["model"] for r in runs["paper-acdc"]}
    assert acdc == {"resnet50.tv2_in1k", "resnet50.acdc-s80", "resnet50.acdc-s90",
                    "resnet50.acdc-s95", "resnet50.acdc-s98"}
    assert sum(len(r) for r in runs.values()) > 15_000


def test_checkpoint_families_resolve_against_checkpoint_root():
    spec = parse_spec("""
model: [resnet18, resnet34]
compression:
  - name: gmp
    checkpoint: "gmp/{arch}_s{level}.pth"
    levels: [80, 90]
checkpoint_root: /ckpts
""")
    runs = expand(spec)
    assert [r.identity["checkpoint"] for r in runs] == [
        "gmp/resnet18_s80.pth", "gmp/resnet18_s90.pth",
        "gmp/resnet34_s80.pth", "gmp/resnet34_s90.pth"]
    assert runs[0].tags == {"family": "gmp", "compression": "gmp-80", "level": 80,
                            "unit": "level"}
    cfg = execution_config(runs[0].identity, {"device": "cpu"}, spec.checkpoint_root)
    assert cfg["checkpoint"] == "/ckpts/gmp/resnet18_s80.pth" and cfg["device"] == "cpu"
    # the root is environment: moving the checkpoints does not rename the runs
    moved = parse_spec(spec.to_yaml().replace("/ckpts", "/elsewhere"))
    assert [r.key for r in expand(moved)] == [r.key for r in runs]
    # a tag names the model <arch>.<tag> (how compression-zoo checkpoints are read)
    tagged = parse_spec("""
model: resnet18
compression: [{name: tv, tag: "tv_in1k", checkpoint: "x/{model}-{level}.pth", levels: [1]}]
""")
    [run] = expand(tagged)
    assert run.identity["model"] == "resnet18.tv_in1k"
    assert run.identity["checkpoint"] == "x/resnet18-1.pth"


def test_a_family_can_be_restricted_to_some_models():
    spec = parse_spec("""
model: [efficientnet_lite0, resnet18.tv_in1k]
compression:
  - method: none
  - name: gmp
    checkpoint: "gmp/{arch}_s{level}.pth"
    levels: [80, 90]
    models: [resnet18]
""")
    pairs = [(r.identity["model"], r.tags["compression"]) for r in expand(spec)]
    assert pairs == [("efficientnet_lite0.in1k", "dense"), ("resnet18.tv_in1k", "dense"),
                     ("resnet18.tv_in1k", "gmp-80"), ("resnet18.tv_in1k", "gmp-90")]


def test_crossmodal_presets():
    runs = expand(load_preset("paper-crossmodal"))
    assert len(runs) == 120  # 8 models × 5 tasks × 3 seeds, full data, xmr
    models = {r.identity["model"] for r in runs}
    assert models == {"resnet34.tv_in1k", "resnet34.gmp-sparsezoo", "resnet50.tv2_in1k",
                      "resnet50.lth-paper", "deit_tiny.fb_in1k", "deit_tiny.vvtq-w4a4",
                      "deit_tiny.vvtq-w3a3", "deit_tiny.vvtq-w2a2"}
    assert {r.identity["dataset"] for r in runs} == {
        "yelp_polarity", "imdb", "ag_news", "dbpedia_14", "splice"}
    first = runs[0].identity
    assert (first["method"], first["n_shot"], first["lr"], first["batch_size"]) == (
        "xmr", None, 0.001, 4)
    assert (first["epochs"], first["options"]) == (100, {
        "max_steps": 100_000, "mapping_num": 10, "padding": "pad", "mapping_seed": "reference",
        "test_every_epoch": False})
    quick = expand(load_preset("quickstart-crossmodal"))
    assert len(quick) == 12 and {r.identity["dataset"] for r in quick} == {"splice", "bbc_news"}
    assert all(r.identity["model"] == "efficientnet_lite0.in1k" for r in quick)


@pytest.mark.parametrize("text, match", [
    ("compression: [{name: x, checkpoint: 'a{level}', levels: [1], models: [resnet81]}]\n",
     "names model 'resnet81', which is not one of the study's models"),
    ("model: [efficientnet_lite0\n", "not valid YAML.*line"),
    ("", "empty"),
    ("- a\n- b\n", "must be a mapping"),
    ("modle: efficientnet_lite0\n", "unknown key 'modle'; known keys: name, description"),
    ("params: {epoch: 3}\n", "unknown parameter 'epoch'"),
    ("params: {seed: 3}\n", "'seed' is an axis"),
    ("compression: [{method: magnitude, sparsty: 0.5}]\n", "unknown key 'sparsty'"),
    ("compression: [{method: magnitude, sparsity: [0.5, 1.5]}]\n", r"compression\[0\].*sparsity"),
    ("compression: [magnitude]\n", r"compression\[0\]: cannot read compression 'magnitude'; use"),
    ("compression: [3]\n", "must be a mapping .* or a short form"),
    ("compression: [{name: x, checkpoint: 'a/{lvl}.pt', levels: [1]}]\n", "{lvl}"),
    ("compression: [{name: x, checkpoint: 'a.pt', levels: [1, 2]}]\n", "needs {level}"),
    ("compression: [{name: x, tag: 'q-{bits}', checkpoint: 'a{level}', levels: [1]}]\n",
     "tag template"),
    ("compression: [{name: x, checkpoint: 'a{level}', levels: [1], colour: red}]\n",
     "unknown key 'colour'"),
    ("method: [ilm, xyz]\n", "unknown transfer method .xyz."),
    ("n_shot: [1, lots]\n", "invalid N-shot 'lots'"),
    ("seed: [-1]\n", "seed.0"),
    ("model: resnet19\n", "unknown model 'resnet19'"),
    ("dataset: mnist\n", "unknown dataset 'mnist'"),
    ("params: {lr: fast}\n", "invalid lr"),
    ("name: 'bad name!'\n", "name"),
])
def test_bad_specs_get_one_line_errors(text, match):
    with pytest.raises(HiddenCostError, match=match) as info:
        parse_spec(text, source="s.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("s.yaml")


def test_load_spec_files_presets_and_missing(tmp_path):
    path = tmp_path / "my study.yaml"
    path.write_text("method: [ilm, flm]\n")
    spec = load_spec(path)
    assert spec.name == "my-study" and spec.method == ["ilm", "flm"]
    assert load_spec("smoke").name == "smoke"
    assert load_spec("preset:quickstart").name == "quickstart"
    with pytest.raises(HiddenCostError, match="does not exist and is not a preset.*quickstart"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(HiddenCostError, match="unknown preset 'nope'; presets: quickstart"):
        load_preset("nope")


def test_params_that_are_method_options_reach_the_methods_that_have_them():
    spec = parse_spec("method: [ilm, lp]\nparams: {mapping_interval: 2, epochs: 3}\n")
    options = {r.identity["method"]: r.identity["options"] for r in expand(spec)}
    assert options["ilm"]["mapping_interval"] == 2 and options["lp"] == {}
    with pytest.raises(HiddenCostError, match="unknown parameter 'max_steps'"):
        parse_spec("method: [ilm, lp]\nparams: {max_steps: 5}\n")


def test_cli_settings_are_yaml_scalars():
    from hiddencost.cli.run import parse_settings

    assert parse_settings(["mapping_interval=2", "prompt_init=randn", "max_steps=null",
                           "many_to_one=true"]) == {"mapping_interval": 2, "prompt_init": "randn",
                                                    "max_steps": None, "many_to_one": True}


def test_runners_are_names_never_paths_to_code():
    from hiddencost.study.worker import register_runner, resolve_runner, runner_names

    with pytest.raises(HiddenCostError, match="runner"):
        parse_spec("runner: /tmp/evil.py:run\n", check=False)
    with pytest.raises(HiddenCostError, match="unknown runner 'nope'; known: run_one"):
        resolve_runner("nope")
    with pytest.raises(HiddenCostError, match="<spec>: unknown runner 'nope'"):
        parse_spec("runner: nope\n")
    assert "synthetic" in runner_names()  # the tests' plugin, through its entry point

    def mine(cfg, out_dir=None, cache=None, on_epoch=None):
        raise AssertionError("not run here")

    register_runner("mine-for-test", mine)
    assert resolve_runner("mine-for-test") is mine
    with pytest.raises(HiddenCostError, match="a callable under a new name"):
        register_runner("run_one", mine)


def test_the_environment_is_apart_from_the_identity():
    from hiddencost.config import Environment

    cfg = make_config(device="cpu", data_root="/d", download=True)
    assert cfg.environment == Environment(device="cpu", data_root="/d", download=True)
    identity = cfg.identity()
    assert not {"environment", "device", "data_root", "download"} & set(identity)
    assert make_config(environment={"device": "cpu"}).environment.device == "cpu"
    assert cfg.identity() == make_config().identity()


def test_a_compression_entry_may_be_a_short_form():
    # the short forms `run --compression` takes name the same runs as the mappings they stand for
    short = BASE.replace("""compression:
  - method: none
  - method: magnitude
    sparsity: [0.5, 0.9]""", """compression: [dense, "magnitude:0.5", magnitude:90%]""")
    assert short != BASE
    assert [r.key for r in expand(parse_spec(short))] == [r.key for r in expand(parse_spec(BASE))]
    runs = expand(parse_spec("compression: [w4, nm:2:4, {method: none}]\n"))
    assert [r.tags["compression"] for r in runs] == ["w4", "nm2:4", "dense"]
    with pytest.raises(HiddenCostError, match=r"compression\[1\]: .*'bogus:3'"):
        parse_spec("compression: [w4, bogus:3]\n")
