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

from __future__ import annotations

import importlib
from typing import Any

from hiddencost.fidelity.values import KL_DIRECTION, FidelityMetrics

#: The torch submodule of each other name, loaded on first access (PEP 562): reading a study's
#: fidelity.json needs only :class:`FidelityMetrics`.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("FIDELITY_VERSION", "cached_fidelity"), "cache"),
    **dict.fromkeys(("SKIMAGE_PHOTOS", "ImageSet", "check_image_source",
                     "load_fidelity_images", "read_images"), "images"),
    **dict.fromkeys(("FidelityRequest", "FidelityResult", "MeasureSettings",
                     "measure_fidelity"), "measure"),
    **dict.fromkeys(("fidelity_metrics", "fidelity_report", "model_logits"), "metric"),
    **dict.fromkeys(("FidelityRow", "fidelity_table", "print_fidelity_table"), "table"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = ["KL_DIRECTION", "FidelityMetrics", *_LAZY]
