"""Test images for the report's PIE thumbnails, read back through the dataset registry.

The only place the report reads images, and so the only one that imports torch (through
:mod:`hiddencost.data`), lazily: a report without PIEs of an image task never does.
"""

from __future__ import annotations

import functools

import numpy as np

from hiddencost.errors import HiddenCostError


@functools.cache
def _test_split(dataset: str, data_root: str | None, split_seed: int
                ) -> tuple[np.ndarray, np.ndarray]:
    from hiddencost.data import load_dataset  # lazy: torch (only thumbnails read images)

    task = load_dataset(dataset, root=data_root, split_seed=split_seed)
    if not hasattr(task, "test_images"):
        raise HiddenCostError(f"{dataset} has no images")
    return (task.test_images.permute(0, 2, 3, 1).numpy(),  # type: ignore[union-attr]
            task.test_labels.numpy())


def test_images(dataset: str, data_root: str | None, split_seed: int, positions: np.ndarray,
                labels: np.ndarray) -> np.ndarray:
    """The (n, H, W, 3) uint8 test images at ``positions`` of the test split, checked against
    the runs' stored ``labels`` there (a changed dataset is an error, not wrong pictures).
    Any failure to read them is a one-line :class:`HiddenCostError`."""
    try:
        images, truth = _test_split(dataset, data_root, split_seed)
    except HiddenCostError:
        raise
    except Exception as exc:  # a missing folder, an unreadable file: the section says so
        raise HiddenCostError(f"cannot read {dataset}: {exc}") from None
    if positions.size and (positions.max() >= len(truth)
                           or not np.array_equal(truth[positions], labels)):
        raise HiddenCostError(f"the {dataset} test split read now differs from the runs'")
    return images[positions]
