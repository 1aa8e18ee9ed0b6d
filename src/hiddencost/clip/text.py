"""The text side of CLIP prompting: class-name templates and the text-embedding table.

VP (Bahng et al. 2022) scores one text per class, :data:`DEFAULT_TEMPLATE`; ILM over templates
(ILM-VP's "ILM-TP-VP") scores T = 81 texts per class, the default template followed by the 80
of CLIP's ImageNet ensemble (:data:`ENSEMBLE_TEMPLATES`, as open_clip ships them; the same list
and order as the ILM-VP reference). Columns are template-major: column j = template ⌊j/K⌋ of
class j mod K, as the reference concatenates one (K, D) block per template.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

DEFAULT_TEMPLATE = "This is a photo of a {}."
ENSEMBLE_TEMPLATES: tuple[str, ...] = tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)
#: ILM-TP-VP's templates: the default one, then the 80 of the ensemble.
ILM_TEMPLATES: tuple[str, ...] = (DEFAULT_TEMPLATE, *ENSEMBLE_TEMPLATES)


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
