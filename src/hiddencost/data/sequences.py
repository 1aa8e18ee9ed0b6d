"""The in-memory form of a sequence task (text or DNA): token ids, lengths and labels.

A :class:`SequenceTask` has the label side of :class:`~hiddencost.data.task.TaskData`
(``train_labels``, ``test_labels``, ``class_names``, ``warnings()``), so few-shot sampling, metrics
and records treat it like an image task; only methods whose ``modality`` is ``"sequence"``
(cross-modal reprogramming) read its tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hiddencost.data.task import check_training_classes
from hiddencost.errors import HiddenCostError

__all__ = ["SequenceTask", "char_tokens"]


def char_tokens(sequences: Sequence[str], alphabet: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Character tokenisation: (N, L_max) int64 ids (the index in ``alphabet``; 0 past a
    sequence's end, never read there) and (N,) lengths. A character outside ``alphabet`` is a
    one-line error naming it."""
    index = {c: i for i, c in enumerate(alphabet)}
    longest = max((len(s) for s in sequences), default=0)
    tokens = torch.zeros(len(sequences), longest, dtype=torch.int64)
    for row, seq in enumerate(sequences):
        try:
            tokens[row, : len(seq)] = torch.tensor([index[c] for c in seq], dtype=torch.int64)
        except KeyError as exc:
            raise HiddenCostError(f"sequence {row} has {exc.args[0]!r}, not one of "
                                  f"{alphabet!r}") from None
    return tokens, torch.tensor([len(s) for s in sequences], dtype=torch.int64)


@dataclass(frozen=True, repr=False)
class SequenceTask:
    """A sequence classification task in memory: per split (N, L) int64 token ids with (N,)
    lengths (ids past a length are padding) and (N,) int64 labels indexing ``class_names``;
    ``vocab`` lists the tokens (id = position). ``frame``: the tokens the reference's tokenizer
    puts around each sequence (``("[CLS]", "[SEP]")`` for BERT's word pieces; None for
    characters), which cross-modal reprogramming shows as the reference does."""

    name: str
    class_names: list[str]
    vocab: list[str]
    train_tokens: torch.Tensor
    train_lengths: torch.Tensor
    train_labels: torch.Tensor
    test_tokens: torch.Tensor
    test_lengths: torch.Tensor
    test_labels: torch.Tensor
    split_note: str
    frame: tuple[str, str] | None = None
    #: What the task holds, for the methods that accept it.
    modality = "sequence"
    #: No images are stored (the LP feature cache keys on it).
    image_size = 0

    def __post_init__(self) -> None:
        k = len(self.class_names)
        if k < 2:
            raise HiddenCostError(f"dataset {self.name!r} has {k} class(es); a classification "
                                  "task needs at least 2")
        for split in ("train", "test"):
            tokens, lengths, labels = (getattr(self, f"{split}_{part}")
                                       for part in ("tokens", "lengths", "labels"))
            if not (len(tokens) == len(lengths) == len(labels)):
                raise ValueError(f"{split} tokens, lengths and labels must have one row each")
            if len(lengths) and int(lengths.min()) < 1:
                raise ValueError(f"{split} sequences must have at least one token")
            if labels.dtype != torch.int64 or (len(labels) and (int(labels.min()) < 0
                                                                 or int(labels.max()) >= k)):
                raise ValueError(f"{split} labels must be int64 in [0, {k}) for {k} class names")
        check_training_classes(self.name, self.class_names, self.train_labels, self.test_labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def warnings(self) -> list[str]:
        """Nothing is left out of a sequence task when it is read."""
        return []

    def __repr__(self) -> str:
        return (f"SequenceTask({self.name!r}, classes={self.num_classes}, "
                f"train={len(self.train_labels)}, test={len(self.test_labels)}, "
                f"vocab={len(self.vocab)})")
