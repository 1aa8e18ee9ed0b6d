"""The text side of CLIP prompting: class-name templates and the text-embedding table.

VP (Bahng et al. 2022) scores one text per class, :data:`DEFAULT_TEMPLATE`; ILM over templates
(ILM-VP's "ILM-TP-VP") scores T = 81 texts per class, the default template followed by the 80
of CLIP's ImageNet ensemble (:func:`ensemble_templates`, as open_clip ships them; the same list
and order as the ILM-VP reference). Columns are template-major: column j = template ⌊j/K⌋ of
class j mod K, as the reference concatenates one (K, D) block per template.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from functools import cache

import torch

DEFAULT_TEMPLATE = "This is a photo of a {}."


@cache
def ensemble_templates() -> tuple[str, ...]:
    """CLIP's 80 ImageNet templates as open_clip ships them (imported on first use: open_clip
    is slow to import, see :mod:`hiddencost.clip.towers`)."""
    metadata = importlib.import_module("open_clip.zero_shot_metadata")
    return tuple(t("{}") for t in metadata.OPENAI_IMAGENET_TEMPLATES)


def ilm_templates() -> tuple[str, ...]:
    """ILM-TP-VP's 81 templates: the default one, then the 80 of the ensemble."""
    return (DEFAULT_TEMPLATE, *ensemble_templates())


def readable(name: str) -> str:
    """A class name as text: ``"pickup_truck"`` → ``"pickup truck"``, ``"AnnualCrop"`` →
    ``"Annual Crop"`` (CLIP's tokenizer lower-cases)."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ")


def column_texts(class_names: Sequence[str], templates: Sequence[str]) -> list[str]:
    """The texts of the score columns, template-major (column j: template ⌊j/K⌋, class j mod K)."""
    return [t.format(readable(c)) for t in templates for c in class_names]


def text_table(towers: torch.nn.Module, class_names: Sequence[str],
               templates: Sequence[str]) -> torch.Tensor:
    """The (T·K, D) unit-norm text embeddings of :func:`column_texts`, computed once per
    (backbone, classes, templates) by the caller's cache, never per step."""
    return towers.encode_texts(column_texts(class_names, templates))
