"""Compact and distilled models as compression points: the compound name, the measured size,
and a study family that crosses them with their dense model (no download: random weights)."""

from __future__ import annotations

import pytest
import timm

from hiddencost.backbones import create_model, resolve_backbone_name
from hiddencost.compact import compact_entry, forward_flops
from hiddencost.study.fidelity import fidelity_targets
from hiddencost.study.spec import expand, parse_spec

SPEC = """
name: compact
model: [deit_base]
dataset: [digits]
compression:
  - method: none
  - name: compact
    tag: "compact-{key}"
    levels: [14.7, 4.0]
    keys: [deit_tiny_distilled, deit_small]
    unit: compression_ratio
method: [lp]
n_shot: [1]
seed: [0]
params:
  weights: random
  lp_image_size: 224
"""


def test_a_compact_name_is_the_small_model_under_the_dense_architecture():
    entry = resolve_backbone_name("deit_base.compact-deit_tiny_distilled")
    assert entry.arch == "deit_base" and entry.timm_arch == "deit_tiny_distilled_patch16_224"
    assert compact_entry("deit_base.compact-no_such_model") is None
    assert compact_entry("deit_tiny_distilled") is None


def test_its_size_is_measured_when_it_loads():
    model, info = create_model("deit_base.compact-deit_tiny_distilled", weights="random", seed=0)
    reference = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
    assert info.compression["parameters"] == sum(p.numel() for p in reference.parameters())
    assert info.compression["architecture"] == "deit_tiny_distilled.fb_in1k"
    # 12 blocks of width 192 on 198 tokens: the matmuls alone are over 2 GFLOPs
    assert info.compression["flops"] == forward_flops(reference, 224) > 2e9


def test_a_compact_family_crosses_the_dense_model_with_its_small_models():
    spec = parse_spec(SPEC)
    runs = expand(spec)
    assert [r.identity["model"] for r in runs] == [
        "deit_base.fb_in1k", "deit_base.compact-deit_tiny_distilled",
        "deit_base.compact-deit_small"]
    assert [(r.tags["level"], r.tags["unit"]) for r in runs[1:]] == [
        (14.7, "compression_ratio"), (4.0, "compression_ratio")]
    assert all("checkpoint" not in r.identity or r.identity["checkpoint"] is None for r in runs)
    targets = fidelity_targets(spec, runs)
    assert [(t.model, t.dense_model, t.compression) for t in targets] == [
        ("deit_base.compact-deit_tiny_distilled", "deit_base.fb_in1k", None),
        ("deit_base.compact-deit_small", "deit_base.fb_in1k", None)]


def test_a_family_needs_a_file_or_a_tag():
    with pytest.raises(Exception, match="needs a checkpoint template or a tag"):
        parse_spec(SPEC.replace('    tag: "compact-{key}"\n', ""))
    with pytest.raises(Exception, match="tag template 'compact' needs \\{level\\} or \\{key\\}"):
        parse_spec(SPEC.replace('"compact-{key}"', '"compact"'))


def test_mobileclip_is_a_compact_point_of_clip():
    import open_clip

    towers, info = create_model("clip_vit_b16.compact-mobileclip_s1", weights="random", seed=0)
    reference = open_clip.create_model("MobileCLIP-S1", pretrained=None)
    assert info.compression["parameters"] == sum(p.numel() for p in reference.parameters())
    assert (info.input_size, info.mean, info.std) == (256, (0.0,) * 3, (1.0,) * 3)
    assert towers.encode_texts(["a photo of a cat"]).shape == (1, 512)
