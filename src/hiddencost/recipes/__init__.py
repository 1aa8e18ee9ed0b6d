"""Compression recipes a user can run: GMP, IMP (lottery tickets), structured channel pruning.

All three fine-tune on images the user gives (:mod:`hiddencost.recipes.training`) and produce
models that :mod:`hiddencost.recipes.artifact` saves as safetensors plus a JSON of what was done,
which ``hiddencost run --checkpoint`` and study specs accept. IMP additionally writes every level
in open_lth's layout (:mod:`hiddencost.zoo.open_lth`).
"""

from hiddencost.recipes.artifact import (
    artifact_metadata_path,
    existing_artifact,
    load_artifact,
    save_artifact,
)
from hiddencost.recipes.gmp import GMPConfig, GMPResult, cubic_sparsity, gmp_prune
from hiddencost.recipes.imp import IMPConfig, IMPLevel, imp_prune, prune_fraction
from hiddencost.recipes.structured import (
    StructuredConfig,
    StructuredResult,
    count_params_flops,
    structured_prune,
)
from hiddencost.recipes.training import FinetuneConfig, TrainData, Trainer, distillation_loss

__all__ = [
    "FinetuneConfig",
    "GMPConfig",
    "GMPResult",
    "IMPConfig",
    "IMPLevel",
    "StructuredConfig",
    "StructuredResult",
    "TrainData",
    "Trainer",
    "artifact_metadata_path",
    "count_params_flops",
    "cubic_sparsity",
    "distillation_loss",
    "existing_artifact",
    "gmp_prune",
    "imp_prune",
    "load_artifact",
    "prune_fraction",
    "save_artifact",
    "structured_prune",
]
