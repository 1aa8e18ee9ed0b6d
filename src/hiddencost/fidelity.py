"""Upstream fidelity without labels: how closely a compressed model follows its dense original.

A compressed backbone's upstream quality is usually quoted as ImageNet accuracy, which needs
ImageNet. Fidelity needs only images (any images): run the dense model ``d`` and the compressed
model ``c`` on the same inputs and compare their output distributions ``p = softmax(logits)``
over the source classes. For ``N`` images:

- **top-1 agreement** ``A = (1/N) sum_i 1[argmax_k p^d_ik = argmax_k p^c_ik]``;
- **top-5 agreement** ``A_5 = (1/N) sum_i 1[argmax_k p^d_ik in top5_k(p^c_i)]``;
- **mean KL** ``KL = (1/N) sum_i sum_k p^d_ik (log p^d_ik - log p^c_ik)``, i.e.
  ``KL(p_dense || p_compressed)``: the dense model is the reference distribution (nats);
  ``max_kl`` is the largest per-image value;
- mean max-probability (confidence) of each model.

A faithful compression has ``A`` near 1 and ``KL`` near 0. :func:`fidelity_report` computes these
for two given models; :func:`cached_fidelity` builds the models from a registry name and a
:class:`~hiddencost.compression.CompressionSpec` (or a compressed checkpoint) and caches the
result on disk keyed by (model, weights, compression, images), so a study can record fidelity
for every compressed backbone without recomputing it.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError

__all__ = [
    "FIDELITY_VERSION",
    "cached_fidelity",
    "fidelity_report",
    "load_fidelity_images",
]

FIDELITY_VERSION = 2  # 2: both models BatchNorm-folded, as transfer runs them
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}
#: scikit-image sample photographs used by ``images="skimage"`` (colour, natural scenes).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left",
                  "motorcycle_right", "hubble_deep_field", "immunohistochemistry", "retina",
                  "cat", "colorwheel", "logo")


@torch.inference_mode()
def _logits(model: nn.Module, images: torch.Tensor, batch_size: int,
            device: torch.device) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size].to(device)
        out.append(model(batch).float().cpu())
    return torch.cat(out)


def fidelity_report(
    dense_model: nn.Module,
    compressed_model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dense_logits: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Agreement and ``KL(p_dense || p_compressed)`` of two classifiers on ``images``.

    Args:
        dense_model, compressed_model: classifiers over the same classes (eval mode is set).
        images: normalised model inputs ``N x 3 x H x W`` (as the models expect them).
        batch_size: images per forward pass.
        device: where the input batches go (default: the dense model's device); both models
            must already be there.
        dense_logits: the dense model's logits on ``images`` if already known (skips its
            forward passes).

    Returns a JSON-safe dict: ``n_images``, ``top1_agreement``, ``top5_agreement``, ``mean_kl``
    (nats, ``mean_i KL(p_dense,i || p_compressed,i)``), ``max_kl``,
    ``dense_mean_confidence``, ``compressed_mean_confidence``, ``kl_direction``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise HiddenCostError("fidelity needs a non-empty N x 3 x H x W tensor of model inputs")
    if device is None:
        param = next(dense_model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    ld = dense_logits if dense_logits is not None else _logits(dense_model, images, batch_size,
                                                                device)
    lc = _logits(compressed_model, images, batch_size, device)
    if ld.shape != lc.shape:
        raise HiddenCostError(f"the models disagree on the number of classes: {tuple(ld.shape)} "
                              f"vs {tuple(lc.shape)}")
    log_pd = F.log_softmax(ld.double(), dim=1)
    log_pc = F.log_softmax(lc.double(), dim=1)
    kl = (log_pd.exp() * (log_pd - log_pc)).sum(dim=1).clamp_min(0.0)
    top1_d = ld.argmax(dim=1)
    top5_c = lc.topk(min(5, lc.shape[1]), dim=1).indices
    return {
        "n_images": int(images.shape[0]),
        "top1_agreement": float((top1_d == lc.argmax(dim=1)).double().mean()),
        "top5_agreement": float((top5_c == top1_d[:, None]).any(dim=1).double().mean()),
        "mean_kl": float(kl.mean()),
        "max_kl": float(kl.max()),
        "dense_mean_confidence": float(log_pd.exp().max(dim=1).values.mean()),
        "compressed_mean_confidence": float(log_pc.exp().max(dim=1).values.mean()),
        "kl_direction": "KL(p_dense || p_compressed)",
    }


def _normalise(images_u8: torch.Tensor, size: int, mean, std) -> torch.Tensor:
    x = images_u8.float() / 255.0
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x - m) / s


def _rgb_tensor(array: Any, size: int) -> torch.Tensor:
    from PIL import Image

    img = array if isinstance(array, Image.Image) else Image.fromarray(array)
    img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size, size, 3) \
        .permute(2, 0, 1).clone()


def load_fidelity_images(
    source: str,
    input_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    limit: int | None = None,
    data_root: str | None = None,
) -> torch.Tensor:
    """Normalised model inputs from an image source.

    ``source`` is a folder of image files (searched recursively, sorted by path), ``"skimage"``
    (scikit-image's sample photographs), or a dataset name of :func:`hiddencost.data.load_dataset`
    (its test split, e.g. ``digits``). Images are resized to ``input_size`` (bilinear,
    antialiased) and normalised with ``mean`` / ``std``; ``limit`` keeps the first images.
    """
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
        if limit is not None:
            files = files[:limit]
        if not files:
            raise HiddenCostError(f"{source} holds no image files")
        from PIL import Image, UnidentifiedImageError

        tensors = []
        for f in files:
            try:
                with Image.open(f) as img:
                    tensors.append(_rgb_tensor(img, input_size))
            except (OSError, UnidentifiedImageError) as exc:
                raise HiddenCostError(f"cannot read image {f}: {exc}") from None
        images = torch.stack(tensors)
    elif source == "skimage":
        try:
            import skimage.data as skdata
        except ImportError as exc:
            raise HiddenCostError("images 'skimage' needs scikit-image installed") from exc
        tensors = []
        for name in SKIMAGE_PHOTOS:
            loader = getattr(skdata, name, None)
            if loader is None:
                continue
            try:
                arr = loader()
            except Exception:  # noqa: BLE001 - some samples need optional downloads
                continue
            if arr.ndim == 3 and arr.shape[2] == 4:
                arr = arr[..., :3]
            tensors.append(_rgb_tensor(arr, input_size))
        images = torch.stack(tensors[:limit] if limit else tensors)
    else:
        from hiddencost.data import load_dataset

        task = load_dataset(source, root=data_root)
        images = task.test_images[:limit] if limit else task.test_images
    return _normalise(images, input_size, mean, std)


def _cache_key(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_fidelity(
    model: str,
    compression: Any = None,
    images: str = "digits",
    cache_dir: str | Path | None = None,
    weights: str = "pretrained",
    checkpoint: str | None = None,
    compressed_model: str | None = None,
    compressed_checkpoint: str | None = None,
    limit: int | None = None,
    calibration_count: int = 64,
    batch_size: int = 64,
    device: str = "cpu",
    data_root: str | None = None,
    dense_cache: dict | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """Fidelity of one compressed backbone against its dense original, cached on disk.

    The dense model is ``create_model(model, weights, checkpoint)``. The compressed one is either
    that model compressed by ``compression`` (a :class:`~hiddencost.compression.CompressionSpec`
    or its dict) or ``create_model(compressed_model or model, checkpoint=compressed_checkpoint)``
    (a zoo checkpoint or a ``hiddencost compress`` artifact). With activation quantization the
    first ``calibration_count`` images calibrate the quantizers and fidelity is measured on the
    others. The result (:func:`fidelity_report` plus ``model``, ``compression``, ``images``,
    ``cached``) is stored as JSON in ``cache_dir`` under a hash of every input, so asking again
    is free; ``cache_dir=None`` disables caching. ``dense_cache`` (any dict the caller keeps)
    shares the dense model, the loaded images and the dense logits between calls that use the
    same model and images (e.g. one call per compression level). ``download`` lets checkpoint
    URLs be fetched (see :func:`hiddencost.backbones.create_model`).
    """
    from hiddencost.backbones import create_model
    from hiddencost.compression import CompressionSpec, apply_compression

    spec = compression
    if isinstance(spec, dict):
        spec = CompressionSpec(**spec)
    if spec is None and compressed_checkpoint is None:
        raise HiddenCostError("give a compression spec or a compressed checkpoint")
    key_parts = {
        "version": FIDELITY_VERSION, "model": model, "weights": weights,
        "checkpoint": checkpoint,
        "compression": spec.model_dump(mode="json") if spec is not None else None,
        "compressed_model": compressed_model, "compressed_checkpoint": compressed_checkpoint,
        "images": images, "limit": limit, "calibration_count": calibration_count,
    }
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"fidelity-{_cache_key(key_parts)}.json"
        if cache_file.is_file():
            return {**json.loads(cache_file.read_text()), "cached": True}
    from hiddencost.backbones import prepare_frozen
    from hiddencost.device import resolve_device

    # Both models run as transfer runs them (BatchNorm folded after compression, see
    # prepare_frozen; numerically checked there): ~2.5x faster on a CPU.
    dev = resolve_device(device)
    dense_key = (model, weights, checkpoint, images, limit, data_root, str(dev))
    if dense_cache is not None and dense_key in dense_cache:
        dense, info, inputs, logits_all = dense_cache[dense_key]
    else:
        dense, info = create_model(model, weights=weights, checkpoint=checkpoint,  # type: ignore[arg-type]
                                   download=download)
        inputs = load_fidelity_images(images, info.input_size, info.mean, info.std, limit,
                                      data_root)
        logits_all = _logits(prepare_frozen(copy.deepcopy(dense), dev, info.input_size), inputs,
                             batch_size, dev)
        if dense_cache is not None:
            dense_cache.clear()  # one dense model at a time
            dense_cache[dense_key] = (dense, info, inputs, logits_all)
    compression_info: dict[str, Any] | None
    dense_logits = logits_all
    evaluate = inputs
    if compressed_checkpoint is not None:
        compressed, cinfo = create_model(compressed_model or model,
                                         checkpoint=compressed_checkpoint, download=download)
        compression_info = cinfo.compression
    else:
        compressed = copy.deepcopy(dense)  # the unfolded dense model, compressed like a run's
        calibration = None
        if spec.activation_bits is not None:
            if inputs.shape[0] <= calibration_count:
                raise HiddenCostError(
                    f"activation quantization needs more than {calibration_count} images "
                    "(the first calibrate, the rest are measured)"
                )
            calibration, evaluate = inputs[:calibration_count], inputs[calibration_count:]
            dense_logits = logits_all[calibration_count:]
        compression_info = apply_compression(compressed, spec, calibration_images=calibration) \
            .to_dict()
    compressed = prepare_frozen(compressed, dev, info.input_size)
    result = fidelity_report(dense, compressed, evaluate, batch_size=batch_size, device=dev,
                             dense_logits=dense_logits)
    result.update({
        "model": info.name, "weights": weights, "images": images,
        "label": spec.label if spec is not None else (compressed_model or model),
        "compression": compression_info,
    })
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=2, allow_nan=False))
        tmp.replace(cache_file)
    return {**result, "cached": False}
