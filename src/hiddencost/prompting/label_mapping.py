"""Label mappings from a backbone's K′ source classes to a task's K target classes.

With one source per target (``mapping_num`` m = 1, the default) a mapping is a LongTensor ``M``
of length K: target class j reads source logit ``M[j]``. The logits used for loss, prediction
and calibration are ``source_logits[:, M]`` (K columns, target order); softmax is taken over
those K.

With m > 1 sources per target (ILM-VP's ``--mapping-num``) a mapping is a (K, m) LongTensor,
each row the target's m distinct sources in ascending order, and target logit j is the mean
of its m source logits: z_j = (1/m) Σ_{s ∈ M[j]} source_logits[s]. The K·m sources are all
distinct, so K·m ≤ K′ is required.

* RLM: a seeded random choice of K (K·m) distinct source classes.
* FLM: greedy assignment on the K′×K count matrix of (top-1 source prediction, true label) of the
  training subset seen through the initial prompt.
* ILM: the FLM procedure redone with the current prompt at the start of every epoch (every k-th
  epoch with ``mapping_interval`` k).
* FM: a trainable linear layer K′ → K (see :class:`FullyConnectedMapping`).
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.errors import HiddenCostError

#: A mapping as plain Python: one source index per target (m = 1) or a list of m (m > 1).
MappingList = list[int] | list[list[int]]


def check_class_counts(
    num_source: int, num_target: int, many_to_one: bool = False, mapping_num: int = 1
) -> None:
    """One-to-one mappings need K ≤ K′; otherwise fail unless many-to-one is asked for. With
    m = ``mapping_num`` > 1 sources per target all K·m sources are distinct, so K·m ≤ K′ is
    required whatever ``many_to_one`` says."""
    if isinstance(mapping_num, bool) or not isinstance(mapping_num, int) or mapping_num < 1:
        raise HiddenCostError(f"mapping_num must be an integer ≥ 1, got {mapping_num!r}")
    if mapping_num > 1 and num_target * mapping_num > num_source:
        raise HiddenCostError(
            f"mapping_num {mapping_num} needs {num_target}×{mapping_num} = "
            f"{num_target * mapping_num} distinct source classes but the backbone has only "
            f"{num_source}"
        )
    if num_target > num_source and not many_to_one:
        raise HiddenCostError(
            f"the task has {num_target} classes but the backbone only {num_source}: a one-to-one "
            "label mapping is impossible (use --many-to-one to let source classes be reused, "
            "or use fm / lp)"
        )


def prediction_counts(
    source_predictions: torch.Tensor, target_labels: torch.Tensor, num_source: int, num_target: int
) -> torch.Tensor:
    """Count matrix C (K′×K): C[s, t] = #{i : top-1 source prediction s, true target label t}."""
    flat = source_predictions.long() * num_target + target_labels.long()
    counts = torch.bincount(flat.cpu(), minlength=num_source * num_target)
    return counts.view(num_source, num_target)


def greedy_mapping(
    counts: torch.Tensor, many_to_one: bool = False, mapping_num: int = 1
) -> torch.Tensor:
    """Greedy one-to-one assignment on a K′×K count matrix.

    Repeat until every target has a source: take the largest remaining cell (s, t), map target
    t to source s, remove row s and column t. Ties go to the first maximum in row-major order
    (lowest source index, then lowest target index), which also settles targets whose column is
    all zeros. With ``many_to_one`` and K > K′, removed rows are restored once every source is
    used, so sources are reused. Returns a length-K LongTensor.

    With m = ``mapping_num`` > 1 (ILM-VP's
    ``predictive_distribution_based_multi_label_mapping``): repeat K·m times: take the largest
    remaining cell (s, t) (same tie rule), give source s to target t, remove row s, and remove
    column t once it holds m sources. Returns a (K, m) LongTensor, each row sorted ascending
    (the reference's order: its ``nonzero`` lists pairs by source). Needs K·m ≤ K′.
    """
    num_source, num_target = counts.shape
    check_class_counts(num_source, num_target, many_to_one, mapping_num)
    if mapping_num > 1:
        return _greedy_multi(counts, mapping_num)
    work = counts.to(torch.float64).clone()
    removed = torch.finfo(torch.float64).min
    mapping = torch.full((num_target,), -1, dtype=torch.long)
    rows_left = num_source
    for _ in range(num_target):
        if rows_left == 0:  # many-to-one: every source used once; allow reuse
            open_cols = mapping < 0
            work = counts.to(torch.float64).clone()
            work[:, ~open_cols] = removed
            rows_left = num_source
        # torch.argmax returns the first maximal index of the row-major flattening.
        flat = int(torch.argmax(work))
        s, t = divmod(flat, num_target)
        mapping[t] = s
        work[s, :] = removed
        work[:, t] = removed
        rows_left -= 1
    return mapping


def _greedy_multi(counts: torch.Tensor, mapping_num: int) -> torch.Tensor:
    """The m > 1 branch of :func:`greedy_mapping` (K·m ≤ K′ already checked)."""
    num_target = counts.shape[1]
    work = counts.to(torch.float64).clone()
    removed = torch.finfo(torch.float64).min
    sources: list[list[int]] = [[] for _ in range(num_target)]
    # K·m ≤ K′ keeps an open row and an open column at every step, so argmax never lands on a
    # removed cell.
    for _ in range(num_target * mapping_num):
        s, t = divmod(int(torch.argmax(work)), num_target)
        sources[t].append(s)
        work[s, :] = removed
        if len(sources[t]) == mapping_num:
            work[:, t] = removed
    return torch.tensor([sorted(row) for row in sources], dtype=torch.long)


def frequency_mapping(
    source_predictions: torch.Tensor,
    target_labels: torch.Tensor,
    num_source: int,
    num_target: int,
    many_to_one: bool = False,
    mapping_num: int = 1,
) -> torch.Tensor:
    """FLM/ILM mapping from top-1 source predictions and true target labels: the greedy
    assignment (:func:`greedy_mapping`, m = ``mapping_num`` sources per target) on their K′×K
    count matrix, counted over all K targets even if some are absent from the labels.

    Deviation from ILM-VP for m > 1: the reference uses the K·m source logits as they are (see
    :func:`apply_mapping`); here target logit j is the mean of its m source logits."""
    counts = prediction_counts(source_predictions, target_labels, num_source, num_target)
    return greedy_mapping(counts, many_to_one, mapping_num)


def random_mapping(
    num_source: int, num_target: int, seed: int, many_to_one: bool = False, mapping_num: int = 1
) -> torch.Tensor:
    """RLM: K distinct source classes chosen uniformly at random with a seeded generator.

    With m = ``mapping_num`` > 1: the first K·m entries of the same seeded permutation of the
    K′ sources, row j = entries j·m … j·m + m − 1, each row sorted ascending; (K, m) LongTensor.
    """
    check_class_counts(num_source, num_target, many_to_one, mapping_num)
    gen = torch.Generator().manual_seed(seed)
    if mapping_num > 1:
        chosen = torch.randperm(num_source, generator=gen)[: num_target * mapping_num]
        return chosen.view(num_target, mapping_num).sort(dim=1).values
    if num_target <= num_source:
        return torch.randperm(num_source, generator=gen)[:num_target]
    return torch.randint(num_source, (num_target,), generator=gen)


def apply_mapping(source_logits: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """The K target logits: ``source_logits[:, mapping]`` for a length-K mapping; for a (K, m)
    one, the mean of each target's m source logits, computed in float32.

    The reference (``label_mapping_base``) returns the K·m selected columns, grouped by target,
    and trains cross-entropy against labels in [0, K) over all K·m of them, so for m > 1 label
    y scores column y (a source of target ⌊y/m⌋): meaningless. Averaging keeps K logits in
    target order.
    """
    mapping = mapping.to(source_logits.device)
    if mapping.dim() == 1:
        return source_logits.index_select(1, mapping)
    picked = source_logits.index_select(1, mapping.flatten()).float()
    return picked.view(len(source_logits), *mapping.shape).mean(dim=2)


class FullyConnectedMapping(nn.Module):
    """FM (AutoVP): target logits = W · source_logits + b, W ∈ R^{K×K′}, trained with the prompt."""

    def __init__(self, num_source: int, num_target: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_source, num_target)

    def forward(self, source_logits: torch.Tensor) -> torch.Tensor:
        return self.linear(source_logits)
