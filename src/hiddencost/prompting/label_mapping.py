"""Label mappings from a backbone's K′ source classes to a task's K target classes.

A mapping is a LongTensor ``m`` of length K: target class j reads source logit ``m[j]``. The
logits used for loss, prediction and calibration are ``source_logits[:, m]`` (K columns, target
order); softmax is taken over those K.

* RLM: a seeded random choice of K distinct source classes.
* FLM: greedy assignment on the K′×K count matrix of (top-1 source prediction, true label) of the
  training subset seen through the initial prompt.
* ILM: the FLM procedure redone at the start of every epoch with the current prompt.
* FM: a trainable linear layer K′ → K (see :class:`FullyConnectedMapping`).
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.errors import HiddenCostError


def check_class_counts(num_source: int, num_target: int, many_to_one: bool = False) -> None:
    """One-to-one mappings need K ≤ K′; otherwise fail unless many-to-one is asked for."""
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


def greedy_mapping(counts: torch.Tensor, many_to_one: bool = False) -> torch.Tensor:
    """Greedy one-to-one assignment on a K′×K count matrix.

    Repeat until every target has a source: take the largest remaining cell (s, t), map target
    t to source s, remove row s and column t. Ties go to the first maximum in row-major order
    (lowest source index, then lowest target index), which also settles targets whose column is
    all zeros. With ``many_to_one`` and K > K′, removed rows are restored once every source is
    used, so sources are reused.
    """
    num_source, num_target = counts.shape
    check_class_counts(num_source, num_target, many_to_one)
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


def frequency_mapping(
    source_predictions: torch.Tensor,
    target_labels: torch.Tensor,
    num_source: int,
    num_target: int,
    many_to_one: bool = False,
) -> torch.Tensor:
    """FLM/ILM mapping from top-1 source predictions and true target labels."""
    counts = prediction_counts(source_predictions, target_labels, num_source, num_target)
    return greedy_mapping(counts, many_to_one)


def random_mapping(
    num_source: int, num_target: int, seed: int, many_to_one: bool = False
) -> torch.Tensor:
    """RLM: K distinct source classes chosen uniformly at random with a seeded generator."""
    check_class_counts(num_source, num_target, many_to_one)
    gen = torch.Generator().manual_seed(seed)
    if num_target <= num_source:
        return torch.randperm(num_source, generator=gen)[:num_target]
    return torch.randint(num_source, (num_target,), generator=gen)


def apply_mapping(source_logits: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    """The K target logits: ``source_logits[:, mapping]``."""
    return source_logits.index_select(1, mapping.to(source_logits.device))


class FullyConnectedMapping(nn.Module):
    """FM (AutoVP): target logits = W · source_logits + b, W ∈ R^{K×K′}, trained with the prompt."""

    def __init__(self, num_source: int, num_target: int) -> None:
        super().__init__()
        self.linear = nn.Linear(num_source, num_target)

    def forward(self, source_logits: torch.Tensor) -> torch.Tensor:
        return self.linear(source_logits)
