"""What a compressed model measurably holds (:class:`CompressionReport`): torch-free, so result
records that carry it read back without torch."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer

#: Fields written only when set, so the reports of earlier methods keep their form.
_WHEN_SET = ("skipped_layers", "eligible_sparsity", "n_parameters", "n_parameters_dense")


class CompressionReport(BaseModel):
    """What a compressed model measurably holds.

    ``measured_sparsity = n_zero_weights / n_prunable_weights`` over the prunable layers *in the
    spec's scope* (exclusions applied); ``overall_sparsity`` over all prunable layers.
    ``max_distinct_values_per_channel`` is the largest number of distinct values in one output
    channel of an in-scope weight when weights were quantized (at most ``2^weight_bits``), else
    None. ``n_activation_quantizers`` counts calibrated activation quantizers.
    ``paper_remaining_percent`` is the paper's convention (% of conv weights remaining, ``conv1``
    excluded; :func:`~hiddencost.compression.measure.paper_remaining_percent`). A measurement
    left None was not made (a runner that builds no model reports only ``method`` and
    ``label``). N:M sparsity and low-rank factorisation list the layers they left as they were
    (``skipped_layers``, each with why); N:M reports the sparsity of the layers that took the
    pattern (``eligible_sparsity``); low rank the model's parameters after and before
    (``n_parameters``, ``n_parameters_dense``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    label: str
    target_sparsity: float = 0.0
    measured_sparsity: float | None = None
    weight_bits: int | None = None
    activation_bits: int | None = None
    n_prunable_weights: int | None = None
    n_zero_weights: int | None = None
    max_distinct_values_per_channel: int | None = None
    overall_sparsity: float | None = None
    n_activation_quantizers: int = 0
    paper_remaining_percent: float | None = None
    skipped_layers: list[str] | None = None
    eligible_sparsity: float | None = None
    n_parameters: int | None = None
    n_parameters_dense: int | None = None

    @model_serializer(mode="wrap")
    def _drop_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return {k: v for k, v in data.items() if k not in _WHEN_SET or v is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of all fields."""
        return self.model_dump(mode="json")
