"""Applying a :data:`~hiddencost.compression.spec.CompressionSpec` to a model, and what the
compressed model measurably holds (:class:`CompressionReport`).

Each spec variant's ``method`` has one function in :data:`APPLY` (the specs themselves are
torch-free data, see :mod:`hiddencost.compression.spec`); a new variant adds its class there and
its function here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from hiddencost.compression.activation_aware import nm_eligible, nm_prune, wanda_prune
from hiddencost.compression.gptq import gptq_quantize
from hiddencost.compression.lowrank import lowrank_factorize
from hiddencost.compression.measure import (
    max_distinct_values_per_channel,
    paper_remaining_percent,
    sparsity_counts,
)
from hiddencost.compression.pruning import magnitude_prune, random_prune
from hiddencost.compression.quantization import (
    activation_quantizers,
    calibrate_activations,
    quantize_activations,
    quantize_weights,
)
from hiddencost.compression.report import CompressionReport
from hiddencost.compression.spec import (
    GPTQ,
    VARIANTS,
    CompressionSpec,
    Dense,
    LowRank,
    MagnitudePruning,
    NMSparsity,
    Quantization,
    RandomPruning,
    Wanda,
)
from hiddencost.errors import HiddenCostError

__all__ = ["APPLY", "CompressionReport", "apply_compression", "measure_compression"]


def _dense(spec: Dense, model: nn.Module, images: torch.Tensor | None, batch: int) -> None:
    """The dense spec does nothing."""


def _magnitude(spec: MagnitudePruning, model: nn.Module, images: torch.Tensor | None,
               batch: int) -> None:
    magnitude_prune(model, spec.sparsity, scope=spec.scope, **spec.exclusions)


def _random(spec: RandomPruning, model: nn.Module, images: torch.Tensor | None,
            batch: int) -> None:
    random_prune(model, spec.sparsity, spec.seed, scope=spec.scope, **spec.exclusions)


def _quantize(spec: Quantization, model: nn.Module, images: torch.Tensor | None,
              batch: int) -> None:
    """Weights first, then activation quantizers calibrated on ``images``, so activation
    ranges are those of the quantized-weight model."""
    if spec.weight_bits is not None:
        quantize_weights(model, spec.weight_bits, **spec.exclusions)
    if spec.activation_bits is not None:
        quantize_activations(model, spec.activation_bits, **spec.exclusions)
        calibrate_activations(model, images, batch_size=batch)  # type: ignore[arg-type]


def _nm(spec: NMSparsity, model: nn.Module, images: torch.Tensor | None,
        batch: int) -> dict[str, Any]:
    skipped = nm_prune(model, spec.n, spec.m, spec.score, images, spec.exclude_classifier)
    eligible, _ = nm_eligible(model, spec.m, spec.exclude_classifier)
    zeros = sum(int((mod.weight == 0).sum()) for _, mod in eligible)
    total = sum(mod.weight.numel() for _, mod in eligible)
    return {"skipped_layers": skipped, "eligible_sparsity": zeros / total if total else 0.0}


def _wanda(spec: Wanda, model: nn.Module, images: torch.Tensor | None, batch: int) -> None:
    wanda_prune(model, spec.sparsity, images, **spec.exclusions)


def _gptq(spec: GPTQ, model: nn.Module, images: torch.Tensor | None, batch: int) -> None:
    gptq_quantize(model, spec.weight_bits, images, spec.damp, **spec.exclusions)


def _lowrank(spec: LowRank, model: nn.Module, images: torch.Tensor | None,
             batch: int) -> dict[str, Any]:
    dense = sum(p.numel() for p in model.parameters())
    skipped = lowrank_factorize(model, spec.rank_ratio, **spec.exclusions)
    return {"skipped_layers": skipped, "n_parameters_dense": dense,
            "n_parameters": sum(p.numel() for p in model.parameters())}


#: Spec ``method`` → the function that compresses a model in place as that spec says (and may
#: return report fields only it knows: layers it skipped, parameter counts).
APPLY: dict[str, Callable[..., dict[str, Any] | None]] = {
    "none": _dense, "magnitude": _magnitude, "random": _random, "quantize": _quantize,
    "nm": _nm, "wanda": _wanda, "gptq": _gptq, "lowrank": _lowrank}


def measure_compression(model: nn.Module, spec: CompressionSpec,
                        extra: dict[str, Any] | None = None) -> CompressionReport:
    """Measure ``model`` against ``spec`` without changing it (``extra``: the report fields its
    compression function returned)."""
    excl = spec.exclusions
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
        paper_remaining_percent=paper_remaining_percent(model),
        **(extra or {}),
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
    when ``activation_bits`` is set). Inputs are checked before the model is touched; if a later
    step fails the model is left partly compressed, so compress a copy when the original matters.
    """
    apply = APPLY.get(getattr(spec, "method", None))
    if apply is None or not isinstance(spec, VARIANTS):
        raise HiddenCostError(f"expected a CompressionSpec, got {type(spec).__name__}")
    if spec.needs_calibration:
        if calibration_images is None:
            raise HiddenCostError(
                f"{spec.label} needs calibration_images: a tensor of normalised model inputs"
            )
        if not isinstance(calibration_images, torch.Tensor) or calibration_images.numel() == 0:
            raise HiddenCostError("calibration_images must be a non-empty tensor")
    extra = apply(spec, model, calibration_images, calibration_batch_size)
    return measure_compression(model, spec, extra)
