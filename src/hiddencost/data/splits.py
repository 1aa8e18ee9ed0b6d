"""Seeded, stratified train/test splits for datasets that ship without an official one."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from hiddencost.errors import HiddenCostError


def stratified_split(
    labels: np.ndarray | list[int], test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train, test) index arrays covering ``range(len(labels))``, each sorted.

    scikit-learn's ``train_test_split(test_size=test_fraction, stratify=labels,
    random_state=seed)``: every class keeps its share in the test split to within one example.
    """
    labels = np.asarray(labels)
    index = np.arange(len(labels))
    try:
        train, test = train_test_split(
            index, test_size=test_fraction, stratify=labels, random_state=seed
        )
    except ValueError as exc:  # e.g. a class with one image cannot be stratified
        raise HiddenCostError(f"cannot split {len(labels)} images {test_fraction:.0%} "
                              f"stratified: {exc}") from None
    return np.sort(train), np.sort(test)


def split_note(source: str, test_fraction: float, seed: int) -> str:
    """The documented description of a split made by :func:`stratified_split`."""
    return (f"{source}: seeded stratified {1 - test_fraction:.0%}/{test_fraction:.0%} split "
            f"(sklearn train_test_split, random_state={seed}), disjoint")
