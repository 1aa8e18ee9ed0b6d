"""Measuring fidelity from names: build the dense original and its compressed version, run
both on a source's images, and return a typed :class:`FidelityResult`.

The dense model is ``create_model(model, weights, checkpoint)``. The compressed one is either
a copy of it compressed by a :data:`~hiddencost.compression.CompressionSpec`, or
``create_model(compressed_model or model, checkpoint=compressed_checkpoint)`` (a zoo checkpoint
or a ``hiddencost compress`` artifact). Both run as transfer runs them
(:func:`hiddencost.frozen.prepare_frozen`: BatchNorm folded after compression, channels_last).
With activation quantization the first ``calibration_count`` images calibrate the quantizers
and fidelity is measured on the others.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ConfigDict
from torch import nn

from hiddencost.backbones import BackboneInfo, WeightsMode, create_model, resolve_backbone_name
from hiddencost.compression import CompressionSpec, apply_compression
from hiddencost.device import resolve_device
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity.images import read_images
from hiddencost.fidelity.metric import FidelityMetrics, fidelity_metrics, model_logits
from hiddencost.fidelity.table import FidelityRow
from hiddencost.frozen import prepare_frozen
from hiddencost.model_table import network_family

__all__ = ["DenseReference", "FidelityRequest", "FidelityResult", "MeasureSettings",
           "dense_reference", "measure_fidelity"]


@dataclass(frozen=True)
class FidelityRequest:
    """What a fidelity result depends on (and so what its cache key hashes): the dense model,
    the compression or compressed checkpoint, the images and the calibration split."""

    model: str
    compression: CompressionSpec | None = None
    images: str = "digits"
    weights: WeightsMode = "pretrained"
    checkpoint: str | None = None
    compressed_model: str | None = None
    compressed_checkpoint: str | None = None
    compressed_mask: str | None = None
    limit: int | None = None
    calibration_count: int = 64

    def __post_init__(self) -> None:
        if self.compression is None and self.compressed_checkpoint is None:
            raise HiddenCostError("give a compression spec or a compressed checkpoint")

    @property
    def label(self) -> str:
        """The compression's label, or the compressed model's name for a checkpoint."""
        if self.compression is not None:
            return self.compression.label
        return self.compressed_model or self.model

    def identity(self) -> dict[str, Any]:
        """The request as JSON-safe data (the compression as its field dict; the mask only
        when there is one, so older cache keys stay valid)."""
        comp = self.compression.model_dump(mode="json") if self.compression is not None else None
        data = {"model": self.model, "weights": self.weights, "checkpoint": self.checkpoint,
                "compression": comp, "compressed_model": self.compressed_model,
                "compressed_checkpoint": self.compressed_checkpoint, "images": self.images,
                "limit": self.limit, "calibration_count": self.calibration_count}
        if self.compressed_mask is not None:
            data["compressed_mask"] = self.compressed_mask
        return data


@dataclass(frozen=True)
class MeasureSettings:
    """How to measure (not part of a result's identity): images per forward pass, the
    device (``auto``, ``cpu``, ``cuda``), the root of torchvision datasets, and whether
    checkpoint URLs may be fetched."""

    batch_size: int = 64
    device: str = "cpu"
    data_root: str | None = None
    download: bool = False


class FidelityResult(FidelityMetrics):
    """:class:`~hiddencost.fidelity.metric.FidelityMetrics` of one compressed backbone, with
    what was compared: the dense ``model``'s name, its ``weights``, the ``images`` source, the
    compression ``label`` and what the compression measured (``compression``, e.g.
    ``measured_sparsity``), the scikit-image photos that were ``skipped_images``, and whether
    it came from the cache (``cached``, not stored)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    weights: str
    images: str
    label: str
    compression: dict[str, Any] | None = None
    skipped_images: tuple[str, ...] = ()
    cached: bool = False

    @property
    def metrics(self) -> FidelityMetrics:
        """The metric fields alone."""
        return FidelityMetrics(**self.model_dump(include=set(FidelityMetrics.model_fields)))

    @property
    def measured_sparsity(self) -> float | None:
        """The compressed model's measured sparsity, when its compression reports one."""
        value = (self.compression or {}).get("measured_sparsity")
        return value if isinstance(value, float) else None

    def row(self, label: str) -> FidelityRow:
        """This result as a line of a fidelity table, named ``label``."""
        return FidelityRow(label, self.images, self.metrics, sparsity=self.measured_sparsity)


@dataclass(frozen=True)
class DenseReference:
    """The dense side of a comparison, reusable across compressions of the same model and
    images: the unfolded model (compressions start from a copy), its info, the normalised
    inputs, its logits on them and the skipped photos."""

    model: nn.Module
    info: BackboneInfo
    inputs: torch.Tensor
    logits: torch.Tensor
    skipped: tuple[str, ...]


def dense_reference(request: FidelityRequest, device: torch.device,
                    settings: MeasureSettings) -> DenseReference:
    """Build the dense model of ``request``, read its images and run it on them."""
    dense, info = create_model(request.model, weights=request.weights,
                               checkpoint=request.checkpoint, download=settings.download)
    image_set = read_images(request.images, info.input_size, request.limit, settings.data_root)
    inputs = image_set.normalised(info.input_size, info.mean, info.std)
    # a folded copy, as transfer runs it; the unfolded original is what compressions start from
    frozen = prepare_frozen(copy.deepcopy(dense), device, info.input_size)
    logits = model_logits(_scores(frozen, info), inputs, settings.batch_size, device)
    return DenseReference(dense, info, inputs, logits, image_set.skipped)


def _scores(model: nn.Module, info: BackboneInfo) -> nn.Module:
    """The model as an ImageNet classifier (its family's ``scores``: CLIP → zero-shot)."""
    return network_family(resolve_backbone_name(info.name)).scores(model)


def _shared_reference(request: FidelityRequest, device: torch.device,
                      settings: MeasureSettings, dense_cache: dict | None) -> DenseReference:
    """:func:`dense_reference`, kept in ``dense_cache`` (one dense model at a time)."""
    key = (request.model, request.weights, request.checkpoint, request.images, request.limit,
           settings.data_root, str(device))
    if dense_cache is not None and key in dense_cache:
        return dense_cache[key]
    ref = dense_reference(request, device, settings)
    if dense_cache is not None:
        dense_cache.clear()  # one dense model in memory at a time
        dense_cache[key] = ref
    return ref


def _calibration_split(spec: CompressionSpec, n_images: int, calibration_count: int) -> int:
    """How many leading images calibrate the compression (activation quantizers, Wanda, GPTQ;
    0 without them)."""
    if not spec.needs_calibration:
        return 0
    if n_images <= calibration_count:
        raise HiddenCostError(f"{spec.label} needs more than {calibration_count} images (the "
                              "first calibrate, the rest are measured)")
    return calibration_count


def _compressed_model(request: FidelityRequest, ref: DenseReference, download: bool
                      ) -> tuple[nn.Module, dict[str, Any] | None, int]:
    """The compressed model (not yet frozen), what its compression measured, and the index of
    the first image to measure on (after the calibration images)."""
    if request.compression is None:
        model, info = create_model(request.compressed_model or request.model,
                                   checkpoint=request.compressed_checkpoint, download=download,
                                   mask=request.compressed_mask)
        return model, info.compression, 0
    start = _calibration_split(request.compression, ref.inputs.shape[0],
                               request.calibration_count)
    model = copy.deepcopy(ref.model)  # the unfolded dense model, compressed like a run's
    report = apply_compression(model, request.compression,
                               calibration_images=ref.inputs[:start] if start else None)
    return model, report.to_dict(), start


def measure_fidelity(request: FidelityRequest, settings: MeasureSettings | None = None,
                     dense_cache: dict | None = None) -> FidelityResult:
    """Fidelity of ``request``'s compressed model against its dense original, measured as
    ``settings`` say (no cache; see :func:`hiddencost.fidelity.cached_fidelity`).
    ``dense_cache`` (any dict the caller keeps) shares the dense model, images and logits
    between calls with the same model and images."""
    settings = settings or MeasureSettings()
    dev = resolve_device(settings.device)
    ref = _shared_reference(request, dev, settings, dense_cache)
    compressed, compression_info, start = _compressed_model(request, ref, settings.download)
    compressed = prepare_frozen(compressed, dev, ref.info.input_size)
    logits = model_logits(_scores(compressed, ref.info), ref.inputs[start:], settings.batch_size,
                          dev)
    metrics = fidelity_metrics(ref.logits[start:], logits)
    return FidelityResult(**metrics.model_dump(), model=ref.info.name, weights=request.weights,
                          images=request.images, label=request.label,
                          compression=compression_info, skipped_images=ref.skipped)
