"""The on-disk fidelity cache: one JSON file per :class:`FidelityRequest`, and
:func:`cached_fidelity`, which measures only what the cache does not hold yet.

A result is stored as ``<cache_dir>/fidelity-<key>.json``, the JSON of its
:class:`~hiddencost.fidelity.measure.FidelityResult` (without ``cached``), where ``key`` is the
first 32 hex characters of the SHA-256 of the request's identity plus
:data:`FIDELITY_VERSION` (sorted-key JSON). Files are written atomically, so a study can record
fidelity for every compressed backbone once and read it back for free.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hiddencost.backbones import WeightsMode
from hiddencost.compression import CompressionSpec, compression_or_error
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity.measure import (
    FidelityRequest,
    FidelityResult,
    MeasureSettings,
    measure_fidelity,
)

__all__ = ["FIDELITY_VERSION", "cache_path", "cached_fidelity", "read_cached", "write_cached"]

FIDELITY_VERSION = 2  # 2: both models BatchNorm-folded, as transfer runs them


def cache_key(request: FidelityRequest) -> str:
    """The cache key of ``request`` (see the module docstring)."""
    text = json.dumps({"version": FIDELITY_VERSION, **request.identity()}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_path(cache_dir: str | Path, request: FidelityRequest) -> Path:
    """Where ``request``'s result is cached in ``cache_dir``."""
    return Path(cache_dir) / f"fidelity-{cache_key(request)}.json"


def read_cached(path: Path) -> FidelityResult | None:
    """The result cached at ``path`` (with ``cached=True``), or None when there is none."""
    if not path.is_file():
        return None
    try:
        return FidelityResult.model_validate({**json.loads(path.read_text()), "cached": True})
    except (OSError, ValueError, ValidationError) as exc:
        raise HiddenCostError(f"fidelity cache file {path} is unreadable; delete it to measure "
                              f"again ({type(exc).__name__})") from None


def write_cached(path: Path, result: FidelityResult) -> None:
    """Store ``result`` at ``path`` atomically (write a temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # per process: concurrent writers
    tmp.write_text(json.dumps(result.model_dump(mode="json", exclude={"cached"}), indent=2,
                              allow_nan=False))
    tmp.replace(path)


def cached_fidelity(
    model: str,
    compression: CompressionSpec | dict[str, Any] | str | None = None,
    images: str = "digits",
    cache_dir: str | Path | None = None,
    weights: WeightsMode = "pretrained",
    checkpoint: str | None = None,
    compressed_model: str | None = None,
    compressed_checkpoint: str | None = None,
    compressed_mask: str | None = None,
    limit: int | None = None,
    calibration_count: int = 64,
    batch_size: int = 64,
    device: str = "cpu",
    data_root: str | None = None,
    dense_cache: dict | None = None,
    download: bool = False,
) -> FidelityResult:
    """Fidelity of one compressed backbone against its dense original, cached on disk.

    The arguments up to ``calibration_count`` form the :class:`FidelityRequest`, what is
    compared, and so the cache key: ``compression`` is a
    :data:`~hiddencost.compression.CompressionSpec`, its dict or its short form
    (``magnitude:0.9``, read by :func:`~hiddencost.compression.compression_or_error`); or
    ``compressed_checkpoint`` is a zoo checkpoint of ``compressed_model`` or a
    ``hiddencost compress`` artifact, with ``compressed_mask`` for a lottery ticket's mask
    file. The rest say how to measure it
    (:class:`~hiddencost.fidelity.measure.MeasureSettings`; ``dense_cache``, any dict the
    caller keeps, shares the dense model, images and logits between calls with the same model
    and images, e.g. one per compression level). ``cache_dir=None`` disables the cache. The
    result has ``cached=True`` when it was read from the cache.
    """
    spec = None if compression is None else compression_or_error(compression)
    request = FidelityRequest(
        model=model, compression=spec, images=images, weights=weights, checkpoint=checkpoint,
        compressed_model=compressed_model, compressed_checkpoint=compressed_checkpoint,
        compressed_mask=compressed_mask, limit=limit, calibration_count=calibration_count)
    path = cache_path(cache_dir, request) if cache_dir is not None else None
    hit = read_cached(path) if path is not None else None
    if hit is not None:
        return hit
    settings = MeasureSettings(batch_size=batch_size, device=device, data_root=data_root,
                               download=download)
    result = measure_fidelity(request, settings, dense_cache)
    if path is not None:
        write_cached(path, result)
    return result
