"""The precision policy (:mod:`hiddencost.precision`), proved on CPU: CPU bf16 autocast stands
in for CUDA's (the same dtype rules for conv, linear and matmul). Where the policy says fp32 —
the label-mapping passes, the mapped logits, the FM layer, CLIP's scores, activation-quantized
backbones — the bf16 path must give the fp32 path's values exactly; elsewhere (the training
steps) it must really be bf16."""

from __future__ import annotations

import pytest
import torch
from clip_tiny import TINY_NAME, tiny_clip_entry

from hiddencost.backbones import create_model
from hiddencost.clip.text import text_table
from hiddencost.config import Precision
from hiddencost.frozen import prepare_frozen
from hiddencost.precision import PRECISIONS, exact, resolve_precision, training_dtype
from hiddencost.prompting.clip_prompt import clip_predict
from hiddencost.prompting.label_mapping import FullyConnectedMapping
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.visual_prompt import (
    PromptRun,
    ReprogrammedModel,
    predict_logits,
    source_predictions,
    to_unit,
    train_visual_prompts,
)
from hiddencost.run import RunCache, make_config, resolve, run_one

CPU = torch.device("cpu")
BF16 = torch.bfloat16
TINY = {"canvas_size": 48, "inner_size": 16, "lp_image_size": 32, "device": "cpu"}


def emulated_cuda_autocast():
    """What CUDA's autocast does to conv / linear / matmul, on this CPU."""
    return torch.autocast("cpu", dtype=BF16)


def test_precision_names_agree_between_config_and_policy():
    assert tuple(p.value for p in Precision) == PRECISIONS


@pytest.mark.parametrize(("asked", "resolved"), [("fp32", "fp32"), ("auto", "fp32"),
                                                 ("bf16", "bf16")])
def test_on_a_cpu_auto_is_fp32_and_bf16_is_honoured(asked, resolved):
    assert resolve_precision(asked, CPU) == resolved


def test_activation_quantized_backbones_train_in_fp32_and_unknown_names_are_refused():
    assert training_dtype("bf16") is BF16
    assert training_dtype("bf16", quantized_activations=True) is None
    assert training_dtype("fp32") is None
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        resolve_precision("fp16", CPU)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    model, _ = create_model("efficientnet_lite0")
    return prepare_frozen(model, CPU, 48)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    cfg = resolve(make_config(method="ilm", n_shot=5, epochs=1, **TINY)).config
    task = RunCache().dataset(cfg, 16)
    return task.train_images[:300], task.train_labels[:300]


def _model(backbone: torch.nn.Module, fm: bool = False) -> ReprogrammedModel:
    prompt = PadPrompt(48, 16, (0.5,) * 3, (0.5,) * 3, init="randn", seed=0)
    return ReprogrammedModel(backbone, prompt, 1000, 10, fully_connected=fm)


def test_the_mapping_pass_is_fp32_inside_a_bf16_region(lite0, digits):
    images, _ = digits
    model = _model(lite0)
    reference = source_predictions(model, images, CPU)
    with emulated_cuda_autocast(), torch.inference_mode():
        naive = model.source_logits(to_unit(images, CPU)).argmax(1)  # the old CUDA path
        policy = source_predictions(model, images, CPU)
    assert (naive != reference).any()  # bf16 would move top-1 sources here ...
    assert torch.equal(policy, reference)  # ... the policy does not


def test_mapped_logits_and_the_fm_layer_are_fp32_inside_a_bf16_region(lite0, digits):
    images, _ = digits
    for fm in (False, True):
        model = _model(lite0, fm=fm)
        source = model.source_logits(to_unit(images[:32], CPU)).detach()
        reference = model.map_logits(source)
        with emulated_cuda_autocast():
            mapped = model.map_logits(source)
        assert mapped.dtype == torch.float32 and torch.equal(mapped, reference)
    layer = FullyConnectedMapping(1000, 10)
    with emulated_cuda_autocast():
        assert layer(torch.randn(4, 1000)).dtype == BF16  # what map_logits protects against


def test_test_logits_are_fp32_inside_a_bf16_region(lite0, digits):
    images, _ = digits
    model = _model(lite0)
    reference = predict_logits(model, images, CPU)
    with emulated_cuda_autocast():
        assert torch.equal(predict_logits(model, images, CPU), reference)


def _pack(backbone, images, labels, precision):
    prompt = PadPrompt(48, 16, (0.5,) * 3, (0.5,) * 3)
    run = PromptRun(prompt, images[:50], labels[:50], "ilm", seed=0)
    # fuse=True: the CUDA code path (one backbone pass for the pack)
    [(model, history)] = train_visual_prompts(backbone, [run], 10, 1000, 2, 16, CPU,
                                              fuse=True, precision=precision)
    return model, history


def test_bf16_training_steps_keep_the_fp32_mapping_of_the_same_prompt(lite0, digits):
    images, labels = digits
    fp32_model, fp32 = _pack(lite0, images, labels, None)
    bf16_model, bf16 = _pack(lite0, images, labels, BF16)
    # epoch 0 maps through the initial prompt: the same in both, as the pass is fp32
    assert bf16.mappings[0] == fp32.mappings[0]
    # the steps themselves did run in bf16: the prompts differ after training
    assert not torch.equal(bf16_model.prompt.delta, fp32_model.prompt.delta)
    # and the mapping a trained bf16 prompt gets is the fp32 pass's under that prompt
    with emulated_cuda_autocast():
        again = source_predictions(bf16_model, images[:50], CPU)
    assert torch.equal(again, source_predictions(bf16_model, images[:50], CPU))


def test_clip_scores_and_column_choice_are_fp32_inside_a_bf16_region(digits):
    tiny_clip_entry()
    towers, _ = create_model(TINY_NAME, weights="random", seed=0)
    towers = towers.towers if hasattr(towers, "towers") else towers
    text = text_table(towers, [str(k) for k in range(10)], ["a photo of a {}.", "{}"])
    images, _ = digits
    pre = torch.nn.Upsample(size=64)
    reference = clip_predict(towers, None, pre, images[:64], text, CPU)
    with emulated_cuda_autocast():
        policy = clip_predict(towers, None, pre, images[:64], text, CPU)
    assert policy.dtype == torch.float32 and torch.equal(policy, reference)


def test_an_activation_quantized_run_is_the_same_in_bf16_and_fp32():
    cfg = {"method": "ilm", "n_shot": 2, "epochs": 1, "compression": "w8a8", **TINY}
    cache = RunCache()
    fp32 = run_one(make_config(**cfg, precision="fp32"), cache=cache)
    bf16 = run_one(make_config(**cfg, precision="bf16"), cache=cache)
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert bf16.accuracy == fp32.accuracy and bf16.ece == fp32.ece
    assert bf16.mapping_history == fp32.mapping_history
    assert [h.loss for h in bf16.history] == [h.loss for h in fp32.history]


def test_random_weights_are_seeded_by_the_run_seed():
    a, _ = create_model("efficientnet_lite0", weights="random", seed=3)
    torch.rand(5)  # the global RNG moves between the two builds
    b, _ = create_model("efficientnet_lite0", weights="random", seed=3)
    c, _ = create_model("efficientnet_lite0", weights="random", seed=4)
    wa, wb, wc = (next(m.parameters()) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_exact_turns_autocast_off_inside_an_autocast_region():
    x = torch.randn(4, 8)
    layer = torch.nn.Linear(8, 3)
    with emulated_cuda_autocast():
        assert layer(x).dtype == BF16
        with exact(CPU):
            assert layer(x).dtype == torch.float32
