"""Compression of a frozen backbone: unstructured pruning, k-bit fake quantization, measurement.

Every compressed model reports what it measurably holds (:class:`CompressionReport`): exact zero
counts over the prunable layers (``nn.Conv2d`` / ``nn.Linear`` weights) and distinct weight values
per output channel.
"""

from hiddencost.compression.levels import LevelUnit
from hiddencost.compression.measure import (
    distinct_values_per_channel,
    layer_sparsities,
    max_distinct_values_per_channel,
    measure_sparsity,
    paper_remaining_percent,
    sparsity_counts,
)
from hiddencost.compression.pruning import magnitude_prune, prunable_layers, random_prune
from hiddencost.compression.quantization import (
    SUPPORTED_BITS,
    ActivationFakeQuant,
    QuantizedInput,
    activation_quantizers,
    calibrate_activations,
    quantize_activations,
    quantize_weight_tensor,
    quantize_weights,
)
from hiddencost.compression.spec import (
    CompressionReport,
    CompressionSpec,
    Dense,
    MagnitudePruning,
    Quantization,
    RandomPruning,
    apply_compression,
    compression_or_error,
    measure_compression,
    parse_compression,
)

__all__ = [
    "SUPPORTED_BITS",
    "ActivationFakeQuant",
    "CompressionReport",
    "CompressionSpec",
    "Dense",
    "LevelUnit",
    "MagnitudePruning",
    "Quantization",
    "RandomPruning",
    "QuantizedInput",
    "activation_quantizers",
    "apply_compression",
    "calibrate_activations",
    "compression_or_error",
    "distinct_values_per_channel",
    "layer_sparsities",
    "magnitude_prune",
    "max_distinct_values_per_channel",
    "measure_compression",
    "measure_sparsity",
    "paper_remaining_percent",
    "parse_compression",
    "prunable_layers",
    "quantize_activations",
    "quantize_weight_tensor",
    "quantize_weights",
    "random_prune",
    "sparsity_counts",
]
