"""The in-memory form of a target task: uint8 images and int64 labels for train and test."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hiddencost.errors import HiddenCostError


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
