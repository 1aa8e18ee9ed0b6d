"""CLIP transfer methods: frame prompt, text table, ILM column choice, schedule, end to end on
a tiny random open_clip model."""

from __future__ import annotations

import json
import math

import pytest
import torch
from clip_tiny import TINY_NAME, tiny_clip_entry

from hiddencost.clip.text import (
    DEFAULT_TEMPLATE,
    column_texts,
    ensemble_templates,
    ilm_templates,
)
from hiddencost.errors import HiddenCostError
from hiddencost.prompting.clip_prompt import FramePrompt, column_mapping, own_template_mapping
from hiddencost.prompting.schedule import sgd_cosine
from hiddencost.run import RunCache, make_config, run_one

ILM_TEMPLATES = ilm_templates()


@pytest.fixture(scope="module", autouse=True)
def tiny():
    return tiny_clip_entry()


def test_frame_prompt_adds_delta_on_a_30_px_border_only():
    prompt = FramePrompt(224)
    mask = prompt.mask[0]
    assert mask.shape == (224, 224) and mask.sum() == 224 * 224 - 164 * 164
    assert mask[29, 100] == 1 and mask[30, 30] == 0 and mask[193, 193] == 0 and mask[194, 0] == 1
    with torch.no_grad():
        prompt.delta.fill_(0.5)
    x = torch.randn(2, 3, 224, 224)
    out = prompt(x)
    assert torch.equal(out[:, :, 100, 100], x[:, :, 100, 100])  # inside: the image as it was
    assert torch.equal(out[:, :, 0, 100], x[:, :, 0, 100] + 0.5)  # no sigmoid
    out.sum().backward()
    assert torch.equal(prompt.delta.grad, 2 * prompt.mask.expand(3, -1, -1))  # d/dδ = Σ_n M
    with pytest.raises(HiddenCostError, match="does not fit"):
        FramePrompt(50)


def test_column_texts_are_template_major_with_81_templates():
    assert len(ensemble_templates()) == 80 and ILM_TEMPLATES[0] == DEFAULT_TEMPLATE
    assert ILM_TEMPLATES[1] == "a bad photo of a {}." and len(ILM_TEMPLATES) == 81
    texts = column_texts(["cat", "pickup_truck"], ILM_TEMPLATES[:2])
    assert texts == ["This is a photo of a cat.", "This is a photo of a pickup truck.",
                     "a bad photo of a cat.", "a bad photo of a pickup truck."]


def test_ilm_picks_columns_by_greedy_frequency_and_lets_a_class_take_another_name():
    # K = 2 classes, T = 2 templates: columns 0 (t0 c0), 1 (t0 c1), 2 (t1 c0), 3 (t1 c1)
    scores = torch.tensor([
        [0.0, 9.0, 0.0, 0.0],  # class 0 image, top-1 column 1 (class 1's text)
        [0.0, 9.0, 0.0, 0.0],  # class 0, column 1
        [0.0, 0.0, 9.0, 0.0],  # class 1, column 2
        [0.0, 0.0, 0.0, 9.0],  # class 1, column 3
        [0.0, 0.0, 9.0, 0.0],  # class 1, column 2
    ])
    labels = torch.tensor([0, 0, 1, 1, 1])
    # counts (column, class): (1,0)=2, (2,1)=2, (3,1)=1; greedy: largest cell first, ties in
    # row-major order: (1,0) → class 0 gets column 1; then (2,1) → class 1 gets column 2
    assert column_mapping(scores, labels, 2, 2, restrict=False).tolist() == [1, 2]
    # restricted: class 0 among columns {0, 2}: per-image argmax over its own columns
    # (0, 0 → ties → template 0 twice) → column 0; class 1 among {1, 3}: 3 wins once, the
    # other two images tie (t0) → template 0 twice → column 1
    assert own_template_mapping(scores, labels, 2, 2).tolist() == [0, 1]
    scores[2:, 3] = 10.0
    assert own_template_mapping(scores, labels, 2, 2).tolist() == [0, 3]
    # a class absent from the subset takes the default template
    assert own_template_mapping(scores[:2], labels[:2], 2, 2).tolist() == [0, 1]


def test_cosine_schedule_is_stepped_per_iteration_over_all_steps():
    delta = torch.nn.Parameter(torch.zeros(1))
    optimizer, scheduler = sgd_cosine([delta], total_steps=8, lr=40.0)
    assert optimizer.defaults["momentum"] == 0.9
    lrs = []
    for _ in range(8):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([40 * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(8)])


TINY_RUN = {"model": TINY_NAME, "weights": "random", "dataset": "digits", "n_shot": 2,
            "epochs": 2, "device": "cpu"}


@pytest.fixture(scope="module")
def cache():
    return RunCache()


@pytest.mark.parametrize("method", ["vp", "ilm", "zero-shot", "lp"])
def test_each_clip_method_writes_a_complete_record(method, cache, tmp_path):
    record = run_one(make_config(method=method, **TINY_RUN), out_dir=tmp_path, cache=cache)
    assert (tmp_path / "result.json").is_file() and record.n_test == 450
    assert 0.0 <= record.accuracy <= 1.0 and len(record.per_class_accuracy) == 10
    cfg = record.config
    if method in ("vp", "ilm", "zero-shot"):
        assert cfg["lr"] == 40.0 and cfg["batch_size"] == 16 and cfg["canvas_size"] == 64
    if method == "ilm":
        mapping = record.label_mapping
        assert len(mapping) == 10 and all(0 <= m.source < 810 for m in mapping)
        for m in mapping:  # the chosen column's text: template ⌊j/K⌋ of class j mod K
            assert m.source_name == ILM_TEMPLATES[m.source // 10].format(str(m.source % 10))
        assert [h.mapping_recomputed for h in record.history] == [True, True]
    if method == "zero-shot":
        assert record.history == [] and record.final_train_loss is None
    if method == "vp":
        assert record.label_mapping is None and len(record.history) == 2


def test_restricted_templates_keep_each_class_on_its_own_name(cache):
    record = run_one(make_config(method="ilm", restrict_templates=True, **TINY_RUN), cache=cache)
    assert [m.source % 10 for m in record.label_mapping] == list(range(10))


def test_the_text_table_is_encoded_once_per_backbone_classes_and_templates(monkeypatch):
    from hiddencost.clip.towers import ClipTowers

    calls = []
    real = ClipTowers.encode_texts

    def counted(self, texts, batch_size=256):
        calls.append(len(texts))
        return real(self, texts, batch_size)

    monkeypatch.setattr(ClipTowers, "encode_texts", counted)
    cache = RunCache()
    for seed in (0, 1):
        run_one(make_config(method="vp", seed=seed, **{**TINY_RUN, "epochs": 1}), cache=cache)
    run_one(make_config(method="zero-shot", **TINY_RUN), cache=cache)
    assert calls == [10]  # vp and zero-shot share the one-template table
    run_one(make_config(method="ilm", **{**TINY_RUN, "epochs": 1}), cache=cache)
    assert calls == [10, 810]


def test_activation_quantized_clip_runs_with_both_towers_calibrated(cache):
    """The text tower is not reached by the calibration images: it calibrates on its own
    prompts, so a CLIP method that encodes texts runs (it used to fail: uncalibrated)."""
    record = run_one(make_config(method="zero-shot", compression="a8", **TINY_RUN), cache=cache)
    report = record.compression
    assert record.activation_bits == 8 and report.label == "a8"
    assert report.n_activation_quantizers == 9  # image tower 5, text tower 4
    assert record.n_test == 450 and 0.0 <= record.accuracy <= 1.0


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"method": "flm"}, "does not apply to open_clip backbones; use vp, ilm, zero-shot, lp"),
    ({"method": "vp", "restrict_templates": True},
     "method 'vp' on clip_tiny.* has no option 'restrict_templates' .its options: "
     "preprocess, class_texts, test_every_epoch."),
    ({"method": "ilm", "model": "efficientnet_lite0", "restrict_templates": True},
     "method 'ilm' on efficientnet_lite0.in1k has no option 'restrict_templates' .its "
     "options: mapping_interval, mapping_num, prompt_init, many_to_one, test_every_epoch."),
])
def test_methods_a_clip_backbone_does_not_take_are_one_line_errors(kwargs, match):
    with pytest.raises(HiddenCostError, match=match):
        make_config(**{**TINY_RUN, **kwargs}).resolved()


def test_a_canvas_other_than_the_clip_input_is_refused_in_one_line(cache):
    with pytest.raises(HiddenCostError, match="takes 64-px images"):
        run_one(make_config(method="vp", canvas_size=96, **TINY_RUN), cache=cache)


def test_a_stopped_ilm_tp_vp_run_resumes_to_the_same_result(tmp_path, cache):
    from safetensors.torch import load_file

    from hiddencost.prompting.run_state import STATE_FILE

    cfg = make_config(method="ilm", **{**TINY_RUN, "epochs": 3})
    run_one(cfg, out_dir=tmp_path / "whole", cache=cache)

    def stop(record):
        if record.epoch == 1:
            raise KeyboardInterrupt  # a kill just after epoch 1's state was saved

    with pytest.raises(KeyboardInterrupt):
        run_one(cfg, out_dir=tmp_path / "cut", cache=cache, on_epoch=stop)
    assert (tmp_path / "cut" / STATE_FILE).is_file()
    seen = []
    run_one(cfg, out_dir=tmp_path / "cut", cache=cache, on_epoch=seen.append)
    assert [r.epoch for r in seen] == [2, 3] and not (tmp_path / "cut" / STATE_FILE).exists()

    def numbers(name):
        record = json.loads((tmp_path / name / "result.json").read_text())
        for entry in record["history"]:
            entry.pop("seconds")
        return [record[k] for k in ("accuracy", "ece", "history", "mapping_history",
                                    "label_mapping")]

    assert numbers("cut") == numbers("whole")
    assert load_file(str(tmp_path / "cut" / "weights.safetensors"))["prompt.delta"].equal(
        load_file(str(tmp_path / "whole" / "weights.safetensors"))["prompt.delta"])


def test_clips_transform_centre_crops_as_open_clip_does():
    import numpy as np
    from open_clip.transform import image_transform
    from PIL import Image

    from hiddencost.data.images import pil_to_uint8

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))  # 300 × 200
    ours = pil_to_uint8(image, 100, "crop").float() / 255
    reference = image_transform(100, is_train=False, mean=(0.0,) * 3, std=(1.0,) * 3)(image)
    assert torch.equal(ours, reference)  # bicubic short side to 100 (150 × 100), centre 100
    squashed = pil_to_uint8(image, 100, "squash").float() / 255
    assert (squashed - reference).abs().max() > 0.3  # the whole width, squeezed: another image


def test_the_per_batch_bicubic_resize_is_pils_up_to_its_rounding():
    import numpy as np
    from PIL import Image

    from hiddencost.data.transforms import ResizeNormalize

    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pil = np.array(Image.fromarray(small).resize((96, 96), Image.Resampling.BICUBIC))
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255
    ours = ResizeNormalize(96, (0.0,) * 3, (1.0,) * 3, "pil-bicubic")(x)[0].permute(1, 2, 0)
    diff = (ours * 255 - torch.from_numpy(pil).float()).abs()
    assert diff.max() <= 1.0 + 1e-4 and (diff > 0.5).float().mean() < 0.002  # PIL's rounding


def test_reference_class_texts_for_the_three_datasets_that_differ():
    from hiddencost.clip.class_texts import class_texts

    eurosat = ["AnnualCrop", "Forest", "HerbaceousVegetation"]
    assert class_texts("eurosat", eurosat, "reference") == [
        "annualcrop", "forest", "herbaceousvegetation"]
    gtsrb = class_texts("gtsrb", [str(i) for i in range(43)], "reference")
    assert gtsrb[1] == "30 speed" and gtsrb[9] == "no overtaking general" and len(gtsrb) == 43
    assert class_texts("caltech101", ["accordion"] * 101, "reference")[:3] == ["0", "1", "2"]
    assert class_texts("eurosat", eurosat, "readable") == eurosat  # made readable later
    assert class_texts("cifar10", ["cat", "dog"], "reference") == ["cat", "dog"]
    with pytest.raises(HiddenCostError, match="texts name 43 classes; the dataset has 2"):
        class_texts("gtsrb", ["a", "b"], "reference")


def test_clip_runs_record_how_images_and_texts_went_in(cache):
    record = run_one(make_config(method="vp", options={"test_every_epoch": True}, **TINY_RUN),
                     cache=cache)
    options = record.config["options"]
    assert (options["preprocess"], options["class_texts"]) == ("clip", "readable")
    curve = [e.test_accuracy for e in record.history]
    assert len(curve) == 2 and curve[-1] == record.accuracy
