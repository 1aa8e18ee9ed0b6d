"""The compression zoo: published compressed checkpoints, loaded exactly and checked.

Names are timm-style ``arch.tag`` (``resnet50.acdc-s90``, ``resnet50.lth-l9``,
``resnet50.rigl-s90``, ``resnet18.gmp-sparsezoo``, ``deit_tiny.vvtq-w4a4``): see
:mod:`hiddencost.zoo.registry` for the table of tags and formats, and one module per format
(:mod:`~hiddencost.zoo.open_lth`, :mod:`~hiddencost.zoo.ist_daslab`, :mod:`~hiddencost.zoo.rigl`,
:mod:`~hiddencost.zoo.sparseml`, :mod:`~hiddencost.zoo.vvtq`) for the exact layouts.
Importing the package registers each format as a weight source and the zoo's names with the
factory, so ``hiddencost.backbones.create_model(name, checkpoint=PATH)`` resolves them.
"""

from hiddencost.zoo.common import ZooLoadReport
from hiddencost.zoo.registry import (
    FAMILIES,
    ZooFamily,
    ZooSpec,
    available_zoo,
    is_zoo_name,
    load_zoo_checkpoint,
    parse_zoo_name,
)

__all__ = [
    "FAMILIES",
    "ZooFamily",
    "ZooLoadReport",
    "ZooSpec",
    "available_zoo",
    "is_zoo_name",
    "load_zoo_checkpoint",
    "parse_zoo_name",
]
