"""The values a fidelity measurement yields (:class:`FidelityMetrics`; formulas in
:mod:`hiddencost.fidelity.metric`): torch-free, so a study's ``fidelity.json`` reads back
without loading a model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

KL_DIRECTION = "KL(p_dense || p_compressed)"


class FidelityMetrics(BaseModel):
    """The fidelity of a compressed model to its dense original on ``n_images`` images (see the
    module docstring for the formulas). The one place the metric names are spelled: the cache
    file, a study's ``fidelity.json`` entries and the CLI tables are this model's fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_images: int
    top1_agreement: float
    top5_agreement: float
    mean_kl: float  # nats, mean_i KL(p_dense,i || p_compressed,i)
    max_kl: float
    dense_mean_confidence: float
    compressed_mean_confidence: float
    kl_direction: Literal["KL(p_dense || p_compressed)"] = KL_DIRECTION
