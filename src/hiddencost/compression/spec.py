"""What compression to apply (:class:`CompressionSpec`), applying it, and what it measurably did.

One spec is one point on the compression axis of a study: dense, unstructured pruning (magnitude
or random) at a sparsity, or k-bit fake quantization of weights and/or activations. Pruning and
quantization are not combined in one spec.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from torch import nn

from hiddencost.compression.measure import max_distinct_values_per_channel, sparsity_counts
from hiddencost.compression.pruning import magnitude_prune, random_prune
from hiddencost.compression.quantization import (
    SUPPORTED_BITS,
    activation_quantizers,
    calibrate_activations,
    quantize_activations,
    quantize_weights,
)
from hiddencost.errors import HiddenCostError

__all__ = ["CompressionReport", "CompressionSpec", "apply_compression", "measure_compression"]


def _format_sparsity(s: float) -> str:
    two = f"{s:.2f}"
    return two if float(two) == s else format(s, ".10g")


class CompressionSpec(BaseModel):
    """A validated, immutable description of one compression setting.

    - ``method="none"``: the dense model; ``sparsity`` must be 0 and no bits set.
    - ``method="magnitude"`` / ``"random"``: unstructured pruning to ``0 < sparsity < 1`` over
      ``scope`` (``"global"`` or ``"layer"``); ``seed`` drives random pruning. No bits.
    - ``method="quantize"``: ``weight_bits`` and/or ``activation_bits`` in {2, 3, 4, 8};
      ``sparsity`` must be 0.
    - ``exclude_first_conv`` / ``exclude_classifier`` keep the first conv / last linear layer
      uncompressed (see :mod:`hiddencost.compression.pruning` for the layer set).

    Invalid combinations raise :class:`pydantic.ValidationError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["none", "magnitude", "random", "quantize"] = "none"
    sparsity: float = 0.0
    scope: Literal["global", "layer"] = "global"
    weight_bits: int | None = None
    activation_bits: int | None = None
    exclude_first_conv: bool = False
    exclude_classifier: bool = False
    seed: int = 0

    @field_validator("sparsity")
    @classmethod
    def _sparsity_in_range(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {v}")
        return v

    @field_validator("weight_bits", "activation_bits")
    @classmethod
    def _supported_bits(cls, v: int | None) -> int | None:
        if v is not None and v not in SUPPORTED_BITS:
            raise ValueError(f"bits must be one of {list(SUPPORTED_BITS)}, got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> CompressionSpec:
        has_bits = self.weight_bits is not None or self.activation_bits is not None
        if self.method == "none":
            if self.sparsity != 0.0 or has_bits:
                raise ValueError("method 'none' (dense) takes no sparsity and no bits")
        elif self.method in ("magnitude", "random"):
            if self.sparsity <= 0.0:
                raise ValueError(f"method {self.method!r} needs a sparsity in (0, 1)")
            if has_bits:
                raise ValueError(
                    f"method {self.method!r} cannot be combined with quantization bits"
                )
        elif self.method == "quantize":
            if not has_bits:
                raise ValueError("method 'quantize' needs weight_bits and/or activation_bits")
            if self.sparsity != 0.0:
                raise ValueError("method 'quantize' cannot be combined with a sparsity")
        return self

    @property
    def label(self) -> str:
        """Short human name.

        ``"dense"``; ``"magnitude-global-s0.90"``, ``"magnitude-layer-s0.50"``;
        ``"random-s0.50"`` (global scope) or ``"random-layer-s0.50"``; ``"w4"``, ``"a8"``,
        ``"w4a4"``. Sparsity is written with two decimals unless more are needed
        (``"s0.123"``). Exclusions append ``"-xfirst"`` (first conv kept) and ``"-xcls"``
        (classifier kept). The seed is not part of the label.
        """
        if self.method == "none":
            base = "dense"
        elif self.method == "magnitude":
            base = f"magnitude-{self.scope}-s{_format_sparsity(self.sparsity)}"
        elif self.method == "random":
            scope = "" if self.scope == "global" else f"{self.scope}-"
            base = f"random-{scope}s{_format_sparsity(self.sparsity)}"
        else:
            base = ""
            if self.weight_bits is not None:
                base += f"w{self.weight_bits}"
            if self.activation_bits is not None:
                base += f"a{self.activation_bits}"
        if self.method != "none":
            if self.exclude_first_conv:
                base += "-xfirst"
            if self.exclude_classifier:
                base += "-xcls"
        return base


@dataclass(frozen=True)
class CompressionReport:
    """What a compressed model measurably holds.

    ``measured_sparsity = n_zero_weights / n_prunable_weights`` over the prunable layers *in the
    spec's scope* (exclusions applied); ``overall_sparsity`` over all prunable layers.
    ``max_distinct_values_per_channel`` is the largest number of distinct values in one output
    channel of an in-scope weight when weights were quantized (at most ``2^weight_bits``), else
    None. ``n_activation_quantizers`` counts calibrated activation quantizers.
    """

    method: str
    label: str
    target_sparsity: float
    measured_sparsity: float
    weight_bits: int | None
    activation_bits: int | None
    n_prunable_weights: int
    n_zero_weights: int
    max_distinct_values_per_channel: int | None
    overall_sparsity: float = 0.0
    n_activation_quantizers: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return asdict(self)


def measure_compression(model: nn.Module, spec: CompressionSpec) -> CompressionReport:
    """Measure ``model`` against ``spec`` without changing it."""
    excl = {
        "exclude_first_conv": spec.exclude_first_conv,
        "exclude_classifier": spec.exclude_classifier,
    }
    n_zero, n_total = sparsity_counts(model, **excl)
    all_zero, all_total = sparsity_counts(model)
    distinct = max_distinct_values_per_channel(model, **excl) if spec.weight_bits else None
    return CompressionReport(
        method=spec.method,
        label=spec.label,
        target_sparsity=spec.sparsity,
        measured_sparsity=n_zero / n_total if n_total else 0.0,
        weight_bits=spec.weight_bits,
        activation_bits=spec.activation_bits,
        n_prunable_weights=n_total,
        n_zero_weights=n_zero,
        max_distinct_values_per_channel=distinct,
        overall_sparsity=all_zero / all_total if all_total else 0.0,
        n_activation_quantizers=sum(q.calibrated for q in activation_quantizers(model)),
    )


def apply_compression(
    model: nn.Module,
    spec: CompressionSpec,
    calibration_images: torch.Tensor | None = None,
    calibration_batch_size: int = 64,
) -> CompressionReport:
    """Compress a (pretrained, frozen) ``model`` in place as ``spec`` says; return what it holds.

    Pruning uses :func:`magnitude_prune` / :func:`random_prune`; quantization applies
    :func:`quantize_weights` first, then :func:`quantize_activations` and
    :func:`calibrate_activations` on ``calibration_images`` (normalised model inputs, required
    when ``activation_bits`` is set), so activation ranges are those of the quantized-weight
    model. Inputs are checked before the model is touched; if a later step fails the model is
    left partly compressed, so compress a copy when the original matters.
    """
    if not isinstance(spec, CompressionSpec):
        raise HiddenCostError(f"expected a CompressionSpec, got {type(spec).__name__}")
    if spec.activation_bits is not None:
        if calibration_images is None:
            raise HiddenCostError(
                f"activation quantization ({spec.label}) needs calibration_images: "
                "a tensor of normalised model inputs"
            )
        if not isinstance(calibration_images, torch.Tensor) or calibration_images.numel() == 0:
            raise HiddenCostError("calibration_images must be a non-empty tensor")
    excl = {
        "exclude_first_conv": spec.exclude_first_conv,
        "exclude_classifier": spec.exclude_classifier,
    }
    if spec.method == "magnitude":
        magnitude_prune(model, spec.sparsity, scope=spec.scope, **excl)
    elif spec.method == "random":
        random_prune(model, spec.sparsity, spec.seed, scope=spec.scope, **excl)
    elif spec.method == "quantize":
        if spec.weight_bits is not None:
            quantize_weights(model, spec.weight_bits, **excl)
        if spec.activation_bits is not None:
            quantize_activations(model, spec.activation_bits, **excl)
            calibrate_activations(model, calibration_images, batch_size=calibration_batch_size)
    return measure_compression(model, spec)
