"""A tiny CLIP (real open_clip towers, random weights) registered for the tests: 64-px images,
two blocks per tower, the real BPE vocabulary."""

from __future__ import annotations

from hiddencost.model_table import BackboneEntry, PretrainedCfg, register_backbone, table_entry

TINY_NAME = "clip_tiny.random"
TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16,
                   "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 2},
}


def tiny_clip_entry() -> BackboneEntry:
    """The tiny CLIP's entry, registered once per process."""
    entry = table_entry(TINY_NAME)
    if entry is None:
        entry = register_backbone(BackboneEntry(
            TINY_NAME, "tiny", PretrainedCfg(source="none", input_size=64, num_classes=0,
                                             mean=(0.48145466, 0.4578275, 0.40821073),
                                             std=(0.26862954, 0.26130258, 0.27577711)),
            family="open_clip", model_config=TINY_CONFIG))
    return entry
