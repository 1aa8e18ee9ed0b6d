"""N-shot sampling (the N-shot argument and batch-size table: :mod:`hiddencost.budgets`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hiddencost.budgets import (  # noqa: F401 (re-exported: the data package's N-shot API)
    BATCH_SIZE_BY_SHOT,
    FULL_DATA_BATCH_SIZE,
    batch_size_for,
    parse_n_shot,
)
from hiddencost.data.task import class_labels


@dataclass(frozen=True)
class FewShotSubset:
    """Indices into the training split, grouped by class in ascending class order.

    ``requested`` is the N asked for (``None`` = full data), ``effective_counts`` how many each
    class really got (fewer than N when a class is short), ``short_classes`` those below N.
    """

    indices: torch.Tensor
    requested: int | None
    effective_counts: dict[int, int]
    short_classes: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def warnings(self) -> list[str]:
        """What a user should know about this subset: classes with no example at all (named,
        each); an N that every class falls short of is full data under a run key of its own;
        short classes use what they have."""
        empty = [c for c, n in self.effective_counts.items() if n == 0]
        said = ([f"{len(empty)} classes have no training example and cannot be learned: "
                 f"{', '.join(map(str, empty))} (effective count 0)"] if empty else [])
        if self.requested is None or not self.short_classes:
            return said
        if len(self.short_classes) == len(self.effective_counts):
            return [*said, f"N-shot {self.requested} exceeds every class (largest "
                    f"{max(self.effective_counts.values())}): this run uses all training data, "
                    "under another run key than 'full'"]
        return [*said, f"{len(self.short_classes)} classes have fewer than {self.requested} "
                f"training examples and use what they have (effective counts are recorded)"]


def _class_permutation(count: int, seed: int, cls: int) -> np.ndarray:
    # One generator per (seed, class): a class's draw does not depend on the other classes, and
    # taking the first N of the same permutation makes subsets nested across N.
    return np.random.default_rng(np.random.SeedSequence([seed, cls])).permutation(count)


def few_shot_indices(
    labels: torch.Tensor, n_shot: int | None, seed: int, num_classes: int | None = None
) -> FewShotSubset:
    """The N-shot training subset: per class c, a seeded shuffle of c's indices (in ascending
    index order before the shuffle), the first N taken. Deterministic for (labels, N, seed);
    nested across N for one seed. ``n_shot=None`` returns every index in its original order.
    A class with fewer than N examples gives all it has (``effective_counts``, ``short_classes``,
    both recorded, and said in :meth:`FewShotSubset.warnings`). Pass ``num_classes`` (the
    task's K): inferred from the labels, a top class with no example would go uncounted.
    A label that is not a whole class index is a one-line error.
    """
    labels = class_labels(labels, "training labels")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 0
    k = int(num_classes)
    counts = torch.bincount(labels, minlength=k).tolist()
    if n_shot is None:
        return FewShotSubset(torch.arange(len(labels)), None, dict(enumerate(counts)), [])
    n_shot = parse_n_shot(n_shot)
    picked, effective = [], {}
    for c in range(k):
        members = torch.nonzero(labels == c, as_tuple=True)[0]
        order = torch.from_numpy(_class_permutation(len(members), seed, c)).long()
        chosen = members[order[:n_shot]]
        picked.append(chosen)
        effective[c] = len(chosen)
    indices = torch.cat(picked) if picked else torch.zeros(0, dtype=torch.int64)
    short = [c for c, n in effective.items() if n < n_shot]
    return FewShotSubset(indices, n_shot, effective, short)


def validation_split(labels: torch.Tensor, fraction: float,
                     seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(pool, validation) indices of the training split: per class c with n_c examples,
    max(1, round(fraction · n_c)) of them (none of a class with one example) drawn by a seeded
    shuffle (its own stream: the few-shot draws are unaffected) are held out for validation,
    the rest stay in the pool the N-shot subset is drawn from. Both in ascending order. The
    test split is never touched."""
    if not 0 < fraction < 1:
        raise ValueError(f"the validation fraction must lie in (0, 1), got {fraction}")
    labels = class_labels(labels, "training labels")
    held = []
    for c in range(int(labels.max()) + 1 if len(labels) else 0):
        members = torch.nonzero(labels == c, as_tuple=True)[0]
        if len(members) < 2:
            continue
        count = max(1, round(fraction * len(members)))
        order = np.random.default_rng(np.random.SeedSequence([seed, c, 1])).permutation(
            len(members))
        held.append(members[torch.from_numpy(order[:count]).long()])
    validation = torch.sort(torch.cat(held)).values if held else torch.zeros(0,
                                                                               dtype=torch.int64)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[validation] = False
    return torch.nonzero(keep, as_tuple=True)[0], validation
