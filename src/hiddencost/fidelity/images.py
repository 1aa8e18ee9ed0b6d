"""Where fidelity's images come from: an image folder, scikit-image's sample photographs, or
a dataset's test split; and how they become model inputs.

Fidelity needs no labels, so any images do. A source is read into an :class:`ImageSet` of
``uint8`` images; :meth:`ImageSet.normalised` turns them into model inputs with
:class:`hiddencost.data.transforms.ResizeNormalize` (``[0, 1]`` → antialiased bilinear resize →
``(x − μ)/σ``, channels_last), the transform linear probing uses.

Unreadable input is a one-line :class:`~hiddencost.errors.HiddenCostError` naming the file,
except for scikit-image's photographs: some of them are downloaded on first use (with the
optional ``pooch``), so a photo that cannot be had offline is skipped and named in
:attr:`ImageSet.skipped`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hiddencost.data import image_dataset, load_dataset
from hiddencost.data.transforms import ResizeNormalize
from hiddencost.errors import HiddenCostError

__all__ = ["IMAGE_SUFFIXES", "SKIMAGE_PHOTOS", "ImageSet", "check_image_source",
           "load_fidelity_images", "read_images"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm"})
#: scikit-image sample photographs used by ``images="skimage"`` (colour, natural scenes).
SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina", "cat", "colorwheel", "logo")


@dataclass(frozen=True)
class ImageSet:
    """Images of a source: ``uint8``, ``N x 3 x H x W``; ``skipped`` names the photos of the
    source that could not be had (scikit-image samples needing a download)."""

    images: torch.Tensor
    skipped: tuple[str, ...] = ()

    def normalised(self, size: int, mean: tuple[float, float, float],
                   std: tuple[float, float, float]) -> torch.Tensor:
        """Model inputs: ``images / 255`` resized to ``size`` and normalised with ``mean`` /
        ``std`` (:class:`~hiddencost.data.transforms.ResizeNormalize`)."""
        return ResizeNormalize(size, mean, std)(self.images.float() / 255.0)


def _rgb_tensor(img: Image.Image, size: int) -> torch.Tensor:
    """An RGB ``uint8`` ``3 x size x size`` tensor of ``img`` (alpha dropped, bilinear)."""
    img = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous()


def _read_folder(folder: Path, size: int, limit: int | None) -> ImageSet:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    files = files[:limit] if limit is not None else files
    if not files:
        raise HiddenCostError(f"{folder} holds no image files")
    tensors = []
    for f in files:
        try:
            with warnings.catch_warnings():
                # Pillow only warns up to twice its pixel limit: a file declaring more pixels
                # than that (a decompression bomb) is refused before it is decoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(f) as img:
                    tensors.append(_rgb_tensor(img, size))
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError,
                Image.DecompressionBombWarning) as exc:  # corrupt, truncated or a bomb
            raise HiddenCostError(f"cannot read image {f}: {exc}") from None
    return ImageSet(torch.stack(tensors))


def _skimage_loaders() -> dict[str, Callable[[], Any]]:
    try:
        # optional third-party dependency, only needed for this source
        import skimage.data as skdata
    except ImportError as exc:
        raise HiddenCostError("images 'skimage' needs scikit-image installed") from exc
    return {name: getattr(skdata, name) for name in SKIMAGE_PHOTOS if hasattr(skdata, name)}


def _read_skimage(size: int, limit: int | None) -> ImageSet:
    loaders = _skimage_loaders()
    tensors, skipped = [], []
    for name in SKIMAGE_PHOTOS:
        if limit is not None and len(tensors) >= limit:
            break
        loader = loaders.get(name)  # None: not in this scikit-image version
        try:
            arr = loader() if loader is not None else None
        except (ImportError, OSError):
            # the photo needs pooch (ImportError) or a download that failed (ConnectionError
            # is an OSError): documented as skipped, see the module docstring
            arr = None
        if arr is None:
            skipped.append(name)
            continue
        tensors.append(_rgb_tensor(Image.fromarray(arr), size))
    if not tensors:
        raise HiddenCostError("no scikit-image sample photo could be loaded "
                              f"(skipped: {', '.join(skipped) or 'none'})")
    return ImageSet(torch.stack(tensors), tuple(skipped))


def _read_dataset(name: str, limit: int | None, data_root: str | None) -> ImageSet:
    image_dataset(name, "--images")
    images = load_dataset(name, root=data_root).test_images
    images = images[:limit] if limit is not None else images
    if images.shape[0] == 0:
        raise HiddenCostError(f"no test images of {name} to measure fidelity on")
    return ImageSet(images)


def check_image_source(source: str) -> None:
    """Refuse, before any work, an image source that names a dataset without images (a
    sequence task) or no dataset at all; folders and ``"skimage"`` are checked when read."""
    if not Path(source).is_dir() and source != "skimage":
        image_dataset(source, "--images")


def read_images(source: str, size: int, limit: int | None = None,
                data_root: str | None = None) -> ImageSet:
    """The images of ``source``: a folder of image files (searched recursively, sorted by
    path, each resized to ``size`` on reading), ``"skimage"`` (:data:`SKIMAGE_PHOTOS`), or a
    dataset name of :func:`hiddencost.data.load_dataset` (its test split, e.g. ``digits``,
    from ``data_root``); ``limit`` keeps the first images."""
    if Path(source).is_dir():
        return _read_folder(Path(source), size, limit)
    if source == "skimage":
        return _read_skimage(size, limit)
    return _read_dataset(source, limit, data_root)


def load_fidelity_images(
    source: str,
    input_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    limit: int | None = None,
    data_root: str | None = None,
) -> torch.Tensor:
    """Normalised model inputs from an image source (see :func:`read_images`): resized to
    ``input_size`` (bilinear, antialiased) and normalised with ``mean`` / ``std``."""
    return read_images(source, input_size, limit, data_root).normalised(input_size, mean, std)
