"""Decode once into uint8 tensors at the storage size: no per-epoch decoding or resizing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from rich.progress import track
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from hiddencost.errors import HiddenCostError

#: How an image is brought to S×S: ``squash`` (ILM-VP's ``Resize((S, S))``: bilinear, aspect
#: ratio not kept) or ``crop`` (CLIP's own transform, as open_clip's ``image_transform``
#: builds it: bicubic resize of the short side to S, centre crop S×S).
FITS: tuple[str, ...] = ("squash", "crop")


def fit_image(image: Image.Image, size: int, fit: str = "squash") -> Image.Image:
    """``image`` (RGB) at size×size as ``fit`` says (:data:`FITS`); PIL resampling, antialiased
    when shrinking. ``crop`` is torchvision's ``Resize(S, BICUBIC)`` then ``CenterCrop(S)``."""
    if fit == "crop":
        image = TF.resize(image, size, interpolation=InterpolationMode.BICUBIC)
        return TF.center_crop(image, [size, size])
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return image


def pil_to_uint8(image: Image.Image, size: int, fit: str = "squash") -> torch.Tensor:
    """An image of any mode → RGB, brought to size×size by ``fit`` (:func:`fit_image`) →
    (3, size, size) uint8."""
    image = fit_image(image.convert("RGB"), size, fit)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def array_to_uint8(images: np.ndarray, size: int, fit: str = "squash") -> torch.Tensor:
    """(N, H, W, 3) or (N, H, W) uint8 array → (N, 3, size, size) uint8 tensor."""
    if images.ndim == 3:
        images = np.repeat(images[..., None], 3, axis=-1)
    h, w = images.shape[1:3]
    if (h, w) == (size, size):
        return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()
    return torch.stack([pil_to_uint8(Image.fromarray(im), size, fit) for im in images])


def decode_dataset(
    dataset: Sequence, size: int, description: str, skipped: list[str] | None = None,
    fit: str = "squash",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Iterate a torchvision-style dataset of (PIL image, int label) once, with a progress bar
    for large ones; return stacked uint8 images and int64 labels.

    An unreadable file (truncated, not an image) is a one-line error naming it; when a
    ``skipped`` list is given, the file is left out and its name appended there instead."""
    n = len(dataset)
    images = torch.empty((n, 3, size, size), dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    kept = torch.ones(n, dtype=torch.bool)
    items = range(n)
    if n >= 2000:
        items = track(items, description=description, transient=True)
    for i in items:
        try:
            image, label = dataset[i]
            images[i] = pil_to_uint8(image, size, fit)  # PIL decodes lazily: here at the latest
        # PIL's truncated / unidentified files are OSErrors; an image whose header claims more
        # than twice PIL's pixel limit (a decompression bomb) raises its own error
        except (OSError, Image.DecompressionBombError) as exc:
            if skipped is None:
                raise HiddenCostError(
                    f"cannot read image {_name_of(dataset, i)} ({description}): {exc}; remove "
                    "or replace the file, or pass --skip-unreadable to leave such files out "
                    "(they are counted in the run's warnings)") from None
            skipped.append(_name_of(dataset, i))
            kept[i] = False
            continue
        labels[i] = int(label)
    if n and not bool(kept.any()):
        raise HiddenCostError(f"no readable image ({description}): all {n} files were left out "
                              f"as unreadable, e.g. {skipped[0] if skipped else '#0'}")
    if not bool(kept.all()):
        images, labels = images[kept], labels[kept]
    return images, labels


def _name_of(dataset: Sequence, i: int) -> str:
    """The file behind item ``i`` where the dataset says (torchvision's ``samples``)."""
    samples = getattr(dataset, "samples", None)
    return str(samples[i][0]) if samples else f"#{i}"
