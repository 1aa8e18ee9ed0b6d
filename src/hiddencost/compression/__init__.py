"""Compression of a frozen backbone: unstructured pruning, k-bit fake quantization, measurement.

Every compressed model reports what it measurably holds (:class:`CompressionReport`): exact zero
counts over the prunable layers (``nn.Conv2d`` / ``nn.Linear`` weights) and distinct weight values
per output channel.

The specs (:mod:`~hiddencost.compression.spec`) and level units are torch-free and imported with
the package; the torch parts (pruning, quantization, measurement, applying a spec) load on first
use of one of their names (PEP 562), so reading a study's results needs no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from hiddencost.compression.levels import LevelUnit
from hiddencost.compression.report import CompressionReport
from hiddencost.compression.spec import (
    SUPPORTED_BITS,
    CompressionSpec,
    Dense,
    MagnitudePruning,
    Quantization,
    RandomPruning,
    compression_or_error,
    parse_compression,
)

#: Names of the torch submodules, loaded on first access.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("apply_compression", "measure_compression"), "apply"),
    **dict.fromkeys(("distinct_values_per_channel", "layer_sparsities",
                     "max_distinct_values_per_channel", "measure_sparsity",
                     "paper_remaining_percent", "sparsity_counts"), "measure"),
    **dict.fromkeys(("magnitude_prune", "prunable_layers", "random_prune"), "pruning"),
    **dict.fromkeys(("ActivationFakeQuant", "QuantizedInput", "activation_quantizers",
                     "calibrate_activations", "quantize_activations", "quantize_weight_tensor",
                     "quantize_weights"), "quantization"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "SUPPORTED_BITS",
    "CompressionReport",
    "CompressionSpec",
    "Dense",
    "LevelUnit",
    "MagnitudePruning",
    "Quantization",
    "RandomPruning",
    "compression_or_error",
    "parse_compression",
    *_LAZY,
]
