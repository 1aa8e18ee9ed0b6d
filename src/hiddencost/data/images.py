"""Decode once into uint8 tensors at the storage size: no per-epoch decoding or resizing."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from rich.progress import track
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from hiddencost.data.task import class_labels
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
    found: list[object] = [0] * n  # each label as the dataset gives it, checked at the end
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
        found[i] = label
    labels = class_labels(found, description)
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


def image_files(folder: str, is_image: Callable[[str], bool]) -> list[str]:
    """The files under ``folder`` that ``is_image`` accepts, in torchvision ``ImageFolder``'s
    order (folders sorted by path, names sorted within one). Directory links are followed, but
    each real directory is entered once, so a link loop (``a/loop -> ..``) is walked once
    instead of listing the same images again at every depth until the OS gives up; a file
    reached by two paths (a link) is listed once, at its first path in that order."""
    entered: set[tuple[int, int]] = set()
    found: list[tuple[str, list[str]]] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        key = file_identity(root)
        if key is None or key in entered:
            dirs[:] = []  # a directory seen through another path (or gone): not again
            continue
        entered.add(key)
        dirs.sort()  # enter in a fixed order: which path of a linked folder counts is stable
        found.append((root, sorted(names)))
    files, seen = [], set()
    for root, names in sorted(found):
        for name in names:
            path = os.path.join(root, name)
            if is_image(path) and (key := file_identity(path)) is not None and key not in seen:
                seen.add(key)
                files.append(path)
    return files


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of what ``path`` points to: one value for every path to one file or
    folder (symbolic and hard links alike); None when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino
