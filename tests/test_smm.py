"""Sample-specific masked prompts (SMM; Cai et al., ICML'24): the prompt's algebra, its
parameter count by hand, BatchNorm modes, and a run end to end on digits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hiddencost.errors import HiddenCostError
from hiddencost.prompting.smm import MaskGenerator, SampleMaskPrompt
from hiddencost.run import RunCache, make_config, run_one

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def test_with_zero_delta_the_prompt_is_the_resized_normalised_image():
    prompt = SampleMaskPrompt(16, MEAN, STD, patch=4).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    z = (F.interpolate(x, size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
         - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(prompt(x), z)


def test_the_mask_is_one_value_per_patch_and_scales_delta():
    prompt = SampleMaskPrompt(16, MEAN, STD, patch=4).eval()
    with torch.no_grad():
        prompt.delta.fill_(1.0)
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    z = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    mask = prompt(x) - z  # δ = 1: the upsampled mask itself
    coarse = prompt.mask(z)
    assert coarse.shape == (1, 3, 4, 4)
    assert torch.allclose(mask, coarse.repeat_interleave(4, 2).repeat_interleave(4, 3),
                          atol=1e-6)


def test_the_parameter_count_by_hand():
    # 3×3 convs 3→8→16→32→64→3 with biases, BatchNorm (γ, β) after the first four
    convs = sum(9 * i * o + o for i, o in ((3, 8), (8, 16), (16, 32), (32, 64), (64, 3)))
    norms = 2 * (8 + 16 + 32 + 64)
    assert sum(p.numel() for p in MaskGenerator(8).parameters()) == convs + norms == 26499
    prompt = SampleMaskPrompt(48, MEAN, STD)
    assert sum(p.numel() for p in prompt.parameters()) == 26499 + 3 * 48 * 48
    with pytest.raises(HiddenCostError, match="multiple of its patch size 8"):
        SampleMaskPrompt(44, MEAN, STD)


def test_smm_runs_end_to_end_and_records_what_it_trained(tmp_path):
    tiny = {"canvas_size": 48, "inner_size": 16, "device": "cpu", "n_shot": 2, "epochs": 2}
    record = run_one(make_config(method="smm", **tiny), out_dir=tmp_path, cache=RunCache())
    assert record.method.display_name == "SMM-VP" and record.prompt_parameters == 33411
    assert record.config["options"]["patch_size"] == 8
    assert len(record.label_mapping) == 10  # ILM's mapping
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "weights.safetensors"))
    assert saved["prompt.delta"].shape == (3, 48, 48)
    # BatchNorm trained in train mode: its running statistics moved from their start
    assert not torch.equal(saved["prompt.mask.net.1.running_var"], torch.ones(8))
