"""The in-memory form of a target task: uint8 images and int64 labels for train and test."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from hiddencost.errors import HiddenCostError


def class_labels(values: Sequence[object] | np.ndarray | torch.Tensor,
                 where: str) -> torch.Tensor:
    """Labels as (N,) int64 class indices: integers, or floats whose value is whole (``1.0``,
    as CSV readers and float arrays hold them). A fractional, infinite or NaN label, or a
    non-numeric one, is a one-line error naming ``where`` and the row: casting would silently
    turn 1.5 into class 1."""
    array = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values)
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        if array.size:
            raise HiddenCostError(f"{where}: labels must be class indices (integers), "
                                  f"got {array.dtype} values such as {array.flat[0].item()!r}")
        array = array.astype(np.int64)
    if array.dtype.kind == "f":
        bad = ~np.isfinite(array) | (array != np.round(array))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            value = array.flat[row].item()
            raise HiddenCostError(f"{where}: the label of row {row} is {value!r}, not a whole "
                                  "class index; fix the label (a fraction is not rounded or "
                                  "cut)")
    return torch.from_numpy(array.astype(np.int64).reshape(-1))


def check_training_classes(name: str, class_names: Sequence[str], train_labels: torch.Tensor,
                           test_labels: torch.Tensor) -> None:
    """A task with a class that has no training example is refused, naming every such class:
    no transfer method can learn a class it never sees, and the scores would hide it (a 2-class
    task whose test split holds only the other class scores accuracy 1.0)."""
    k = len(class_names)
    train = torch.bincount(train_labels, minlength=k)
    empty = [c for c in range(k) if int(train[c]) == 0]
    if not empty:
        return
    test = torch.bincount(test_labels, minlength=k)
    shown = ", ".join(f"{class_names[c]!r} ({int(test[c])} test)" for c in empty)
    raise HiddenCostError(f"dataset {name!r}: {len(empty)} of {k} classes have no training "
                          f"example: {shown}; no method can learn a class it never sees: add "
                          "training examples of them or remove them from the task")


@dataclass(frozen=True, repr=False)
class TaskData:
    """A target dataset held in memory, ready for prompting or probing.

    Images are ``uint8`` tensors of shape (N, 3, S, S), S = ``image_size`` (the size they are
    stored at; the pad prompt or the LP resize takes them from there), labels are ``int64`` in
    ``[0, K)`` indexing ``class_names``. ``inner_size`` is the dataset's protocol inner size for
    the pad prompt (the ILM-VP protocol). ``split_note`` says in one sentence where train and
    test came from; ``skipped_images`` names the unreadable files left out (``--skip-unreadable``).
    """

    name: str
    class_names: list[str]
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    image_size: int
    inner_size: int
    split_note: str
    skipped_images: list[str] = field(default_factory=list)
    #: What the task holds, for the methods that accept it (a class attribute, not a field).
    modality = "image"

    def __post_init__(self) -> None:
        k = len(self.class_names)
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
                raise ValueError(f"{split} images must be uint8 (N, 3, H, W), got "
                                 f"{images.dtype} {tuple(images.shape)}")
            if labels.dtype != torch.int64 or labels.ndim != 1 or len(labels) != len(images):
                raise ValueError(f"{split} labels must be int64 (N,) matching the images")
            if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
                raise ValueError(f"{split} labels must lie in [0, {k}) for {k} class names")
        if k < 2:  # with one class every prediction is right: accuracy 1, ECE 0, nothing measured
            raise HiddenCostError(f"dataset {self.name!r} has {k} class(es); a classification "
                                  "task needs at least 2")
        check_training_classes(self.name, self.class_names, self.train_labels, self.test_labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def warnings(self) -> list[str]:
        """What a run on this task should say that its configuration does not."""
        if not self.skipped_images:
            return []
        shown = ", ".join(self.skipped_images[:3])
        more = f" and {len(self.skipped_images) - 3} more" if len(self.skipped_images) > 3 else ""
        return [f"left out {len(self.skipped_images)} unreadable image file(s): {shown}{more}"]

    def __repr__(self) -> str:
        return (f"TaskData({self.name!r}, classes={self.num_classes}, "
                f"train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"image_size={self.image_size}, inner_size={self.inner_size})")
