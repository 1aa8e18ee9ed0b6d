"""Upstream fidelity without labels: how closely a compressed model follows its dense original.

A compressed backbone's upstream quality is usually quoted as ImageNet accuracy, which needs
ImageNet. Fidelity needs only images (any images): run the dense model and the compressed
model on the same inputs and compare their output distributions over the source classes
(top-1 / top-5 agreement, mean ``KL(p_dense || p_compressed)`` in nats; formulas in
:mod:`hiddencost.fidelity.metric`).

- :mod:`~hiddencost.fidelity.metric`: the pure metric, :class:`FidelityMetrics`,
  :func:`fidelity_metrics` (of logits) and :func:`fidelity_report` (of two models);
- :mod:`~hiddencost.fidelity.images`: where the images come from (a folder, scikit-image's
  sample photos, a dataset's test split), :func:`load_fidelity_images`;
- :mod:`~hiddencost.fidelity.measure`: building both models from names,
  :func:`measure_fidelity` → :class:`FidelityResult`;
- :mod:`~hiddencost.fidelity.cache`: the on-disk cache and :func:`cached_fidelity`;
- :mod:`~hiddencost.fidelity.table`: the one CLI table, :func:`print_fidelity_table`.
"""

from hiddencost.fidelity.cache import FIDELITY_VERSION, cached_fidelity
from hiddencost.fidelity.images import SKIMAGE_PHOTOS, ImageSet, load_fidelity_images, read_images
from hiddencost.fidelity.measure import (
    FidelityRequest,
    FidelityResult,
    MeasureSettings,
    measure_fidelity,
)
from hiddencost.fidelity.metric import (
    KL_DIRECTION,
    FidelityMetrics,
    fidelity_metrics,
    fidelity_report,
    model_logits,
)
from hiddencost.fidelity.table import FidelityRow, fidelity_table, print_fidelity_table

__all__ = [
    "FIDELITY_VERSION",
    "KL_DIRECTION",
    "SKIMAGE_PHOTOS",
    "FidelityMetrics",
    "FidelityRequest",
    "FidelityResult",
    "FidelityRow",
    "ImageSet",
    "MeasureSettings",
    "cached_fidelity",
    "fidelity_metrics",
    "fidelity_report",
    "fidelity_table",
    "load_fidelity_images",
    "measure_fidelity",
    "model_logits",
    "print_fidelity_table",
    "read_images",
]
