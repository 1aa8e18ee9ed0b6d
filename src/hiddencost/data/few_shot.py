"""N-shot sampling, the N-shot argument, and the ILM-VP protocol's batch-size table."""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np
import torch

from hiddencost.errors import HiddenCostError

#: Batch size by N-shot (ILM-VP protocol); full data uses 128.
BATCH_SIZE_BY_SHOT: dict[int, int] = {1: 8, 2: 8, 5: 16, 10: 32, 20: 32, 50: 64, 100: 128}
FULL_DATA_BATCH_SIZE = 128
_FULL_WORDS = frozenset({"full", "all"})


def parse_n_shot(value: object) -> int | None:
    """``"full"``/``"all"``/``None`` → ``None`` (full data); a positive integer (or its
    string) → that integer. Anything else raises :class:`HiddenCostError`."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _FULL_WORDS:
            return None
        if text.isdigit() and int(text) > 0:
            return int(text)
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise HiddenCostError(f"invalid N-shot {value!r}: give a positive integer (examples per class) "
                          "or 'full'")


def batch_size_for(n_shot: int | None) -> int:
    """The batch size for an N-shot run: the table entry of the largest tabulated N ≤ ``n_shot``
    (so 3-shot uses 2-shot's 8, 60-shot uses 50-shot's 64); full data (``None``) uses 128."""
    if n_shot is None:
        return FULL_DATA_BATCH_SIZE
    if isinstance(n_shot, bool) or n_shot <= 0:
        raise HiddenCostError(f"invalid N-shot {n_shot!r}: give a positive integer or None (full)")
    shots = sorted(BATCH_SIZE_BY_SHOT)
    return BATCH_SIZE_BY_SHOT[shots[max(bisect.bisect_right(shots, n_shot) - 1, 0)]]


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
        """What a user should know about this subset: an N that every class falls short of is
        full data under a run key of its own; short classes use what they have."""
        if self.requested is None or not self.short_classes:
            return []
        if len(self.short_classes) == len(self.effective_counts):
            return [f"N-shot {self.requested} exceeds every class (largest "
                    f"{max(self.effective_counts.values())}): this run uses all training data, "
                    "under another run key than 'full'"]
        return [f"{len(self.short_classes)} classes have fewer than {self.requested} training "
                f"examples and use what they have (effective counts are recorded)"]


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
    both recorded, and said in :meth:`FewShotSubset.warnings`).
    """
    labels = torch.as_tensor(labels).long()
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
