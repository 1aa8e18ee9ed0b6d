"""Cross-modal adversarial reprogramming (Neekhara et al., WACV 2022): a token sequence becomes
an image that a frozen vision model classifies.

Pieces, each a pure function or a small module (the training loop and the registered ``xmr``
method come next):

* **Tokens → patches.** A trainable table ``vocab × 3·P·P`` embeds each token; ``tanh`` bounds
  it; the row is reshaped to a ``3×P×P`` patch. The table holds a row only for the tokens a
  task uses (:func:`used_token_ids`), each initialised as it would be in the whole
  ``vocab``-row table, so a 400,000-token tokenizer costs what its used tokens cost and
  results are those of the whole table.
* **Tokens → slots** (:class:`SlotLayout`). The reference tokenises every sequence to its
  tokenizer's ``max_length`` (512): BERT frames word pieces as ``[CLS] … [SEP]`` and pads with
  ``[PAD]``, its character tokenizer pads DNA with id 0. So with ``padding="pad"`` (the
  default) the slots after a sequence's end show one trainable pad patch shared by all
  sequences, and only slots past 512 repeat slot 511. ``padding="repeat-last"`` (hiddencost
  before December 2026) repeats each sequence's last token instead (``min(i, ℓ − 1)``).
* **Patches → canvas** (:func:`tile_patches`). The canvas is C×C with ``C/P`` patches per row,
  ``n = (C/P)²`` slots filled **row-major**: slot ``i`` is at row ``i // (C/P)``, column
  ``i % (C/P)``. A sequence of length ℓ is truncated to n tokens; when ℓ < n the slots past its
  end repeat its last patch (as the reference's loop does past its padded length). One gather
  and one reshape, no loop over patches.
* **Canvas → backbone input** (:func:`canvas_to_input`). The canvas is read as an already
  normalised image: un-normalise (``x·std + mean``), clamp to [0, 1], normalise again.
* **Label mapping** (:func:`round_robin_sources`, :func:`reduce_mapped`). Each of the K target
  classes gets m source classes: the backbone's logits on one seeded random canvas, sorted
  **ascending** as the reference's ``torch.argsort(logits)`` does (so the classes the random
  image least resembles come first), dealt round-robin (target k gets ranks k, k + K, …,
  k + (m − 1)·K); a target's
  score is the max (or mean) of its m source logits. When K·m exceeds the K′ source classes,
  a trainable linear remapper on the softmax takes their place (:class:`SoftmaxRemapper`,
  the reference's way out).
* **Loss** (:func:`xmr_loss`): cross-entropy + α·‖δ‖₂ / N, with δ the batch's tiled canvases
  (the perturbation the tokens become), N the batch size, α = 1e-4 by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.prompting.label_mapping import apply_mapping

__all__ = ["DEFAULT_ALPHA", "PADDINGS", "REFERENCE_MAX_LENGTH", "REPEAT_LAST", "SlotLayout",
           "SoftmaxRemapper", "TokenPatches", "canvas_to_input", "check_lengths", "needs_remapper",
           "reduce_mapped", "round_robin_sources", "seeded_rows", "slot_layout", "tile_patches",
           "used_token_ids", "xmr_loss"]

#: Weight of the perturbation norm in the loss (the reference's default).
DEFAULT_ALPHA = 1e-4
#: The length the reference's tokenizers pad (and cut) every sequence to.
REFERENCE_MAX_LENGTH = 512
#: What the slots past a sequence's end show (see the module docstring).
PADDINGS: tuple[str, ...] = ("pad", "repeat-last")
#: The tokens the reference's pad rule uses, looked up in a task's vocabulary (new rows of the
#: token table when it has none: e.g. DNA's letters, or a WordPiece vocabulary trained here).
PAD_TOKEN = "[PAD]"


@dataclass(frozen=True)
class SlotLayout:
    """Which token each slot of the canvas shows (see the module docstring).

    ``pad``: each sequence, framed by ``start_id``/``end_id`` when given (cut so that the
    frame fits in ``max_length``, the end id kept), then ``pad_id`` up to ``max_length``;
    slot i < max_length shows position i of that, later slots position max_length − 1.
    ``repeat-last``: slot i shows token min(i, ℓ − 1).
    """

    padding: Literal["pad", "repeat-last"] = "pad"
    pad_id: int | None = None
    start_id: int | None = None
    end_id: int | None = None
    max_length: int = REFERENCE_MAX_LENGTH

    def __post_init__(self) -> None:
        if self.padding not in PADDINGS:
            raise HiddenCostError(f"unknown padding {self.padding!r}; use {', '.join(PADDINGS)}")
        if self.padding == "pad" and self.pad_id is None:
            raise HiddenCostError("padding 'pad' needs a pad token id")

    def arrange(self, tokens: torch.Tensor, lengths: torch.Tensor,
                slots: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids and (B,) lengths → the ids and lengths :func:`tile_patches` tiles onto
        ``slots`` slots under this layout (``pad``: (B, min(slots, max_length)) ids, every
        length that width, so later slots repeat the last column)."""
        if self.padding == "repeat-last":
            return tokens, lengths
        width = min(slots, self.max_length)
        lead = int(self.start_id is not None)
        budget = self.max_length - lead - int(self.end_id is not None)
        content = lengths.clamp(max=budget).unsqueeze(1)  # (B, 1) tokens kept
        position = torch.arange(width, device=tokens.device).unsqueeze(0)  # (1, W)
        index = (position - lead).clamp(0, tokens.shape[1] - 1).expand(len(tokens), -1)
        is_token = (position >= lead) & (position < lead + content)
        ids = torch.where(is_token, tokens.gather(1, index), self.pad_id)
        if self.start_id is not None:
            ids[:, 0] = self.start_id
        if self.end_id is not None:
            ids = torch.where(position == lead + content, self.end_id, ids)
        return ids, torch.full_like(lengths, width)


#: The layout of hiddencost before December 2026 (no pad token).
REPEAT_LAST = SlotLayout("repeat-last")


def slot_layout(vocab: Sequence[str], frame: tuple[str, str] | None,
                padding: str) -> tuple[SlotLayout, int]:
    """The layout of a task's sequences under ``padding``, and the token table's row count:
    the vocabulary, plus a new row for each of ``[PAD]`` and the ``frame`` tokens (e.g.
    ``("[CLS]", "[SEP]")`` for word pieces; None for characters) it lacks, in that order."""
    if padding == "repeat-last":
        return REPEAT_LAST, len(vocab)
    index = {token: i for i, token in enumerate(vocab)}
    rows = len(vocab)
    ids = []
    for token in (PAD_TOKEN, *(frame or ())):
        if token not in index:
            index[token], rows = rows, rows + 1
        ids.append(index[token])
    start, end = ids[1:] if frame else (None, None)
    return SlotLayout(padding, ids[0], start, end), rows


def used_token_ids(tokens: Sequence[torch.Tensor], layout: SlotLayout) -> torch.Tensor:
    """The sorted distinct ids in ``tokens`` (every position, padding included: the model embeds
    whole rows) and the ``layout``'s pad and frame ids: every id a model of the task looks up."""
    extra = [i for i in (layout.pad_id, layout.start_id, layout.end_id) if i is not None]
    flat = [t.reshape(-1).cpu() for t in tokens]
    return torch.unique(torch.cat([*flat, torch.tensor(extra, dtype=torch.int64)]).long())


def seeded_rows(rows: int, width: int, seed: int, keep: torch.Tensor,
                chunk: int = 4096) -> torch.Tensor:
    """Rows ``keep`` of ``torch.randn(rows, width, generator=Generator().manual_seed(seed))``,
    without holding the whole table: drawn ``chunk`` rows at a time and the kept rows copied
    out. The CPU generator draws a chunk of a multiple of 16 numbers exactly as it draws those
    numbers inside the whole tensor (each number one 32-bit draw, Box-Muller over blocks of
    16), so with every chunk but the last a multiple of 16 numbers long, and the last ending
    where the whole table ends, the rows are the whole table's, bit for bit."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty(len(keep), width)
    step = max(16, chunk // 16 * 16)  # rows per draw: a multiple of 16 numbers at any width
    start = 0
    while start < rows:
        # the remainder joins the last draw: it ends where the whole table ends
        stop = rows if rows - start < 2 * step else start + step
        block = torch.randn(stop - start, width, generator=generator)
        inside = (keep >= start) & (keep < stop)
        out[inside] = block[keep[inside] - start]
        start = stop
    return out


class TokenPatches(nn.Module):
    """Token ids → ``tanh`` of a trainable ``vocab × 3·P·P`` embedding, as (B, L, 3, P, P).

    With ``token_ids`` (sorted distinct ids, :func:`used_token_ids`) the table holds only those
    rows, each as the whole table would start it (:func:`seeded_rows`), and ids are looked up
    by their position in ``token_ids``: the same patches, for a fraction of the memory. An id
    not in ``token_ids`` must not be given."""

    def __init__(self, vocab_size: int, patch: int = 16, seed: int = 0,
                 token_ids: torch.Tensor | None = None) -> None:
        super().__init__()
        if vocab_size < 1 or patch < 1:
            raise HiddenCostError(f"vocab_size and patch must be ≥ 1, got {vocab_size}, {patch}")
        self.patch = patch
        width = 3 * patch * patch
        # N(0, 1) as nn.Embedding initialises, drawn from the run's seed
        if token_ids is None:
            table = torch.randn(vocab_size, width, generator=torch.Generator().manual_seed(seed))
        else:
            token_ids = torch.unique(token_ids.long().cpu())  # sorted, for the lookup
            if len(token_ids) and (int(token_ids[0]) < 0 or int(token_ids[-1]) >= vocab_size):
                raise HiddenCostError(f"token ids must lie in [0, {vocab_size}), got "
                                      f"{int(token_ids[0])}..{int(token_ids[-1])}")
            table = seeded_rows(vocab_size, width, seed, token_ids)
        self.register_buffer("token_ids", token_ids, persistent=False)
        self.table = nn.Parameter(table)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        p = self.patch
        if self.token_ids is not None:
            tokens = torch.searchsorted(self.token_ids, tokens)
        return torch.tanh(F.embedding(tokens, self.table)).reshape(*tokens.shape, 3, p, p)


def check_lengths(lengths: torch.Tensor) -> None:
    """Every sequence needs a token (a host-device sync: once per split, not per step)."""
    if len(lengths) and int(lengths.min()) < 1:
        raise HiddenCostError("every sequence needs at least one token")


def tile_patches(patches: torch.Tensor, lengths: torch.Tensor, canvas: int,
                 check: bool = True) -> torch.Tensor:
    """(B, L, 3, P, P) patches and (B,) sequence lengths → (B, 3, C, C) canvases.

    Row-major slots; tokens past ``n = (C/P)²`` are dropped, slots past a sequence's end repeat
    its last patch (see the module docstring). ``C`` must be a multiple of ``P``. Every length
    must be ≥ 1: ``check=False`` skips verifying it (a host-device sync), for lengths checked
    once before training.
    """
    b, seq, channels, p, _ = patches.shape
    if canvas % p:
        raise HiddenCostError(f"canvas {canvas} is not a multiple of the patch size {p}")
    per_row = canvas // p
    n = per_row * per_row
    if check:
        check_lengths(lengths)
    last = (lengths.clamp(max=min(seq, n)) - 1).to(patches.device)
    slot = torch.arange(n, device=patches.device)
    index = torch.minimum(slot.unsqueeze(0), last.unsqueeze(1))  # (B, n): the repeat-last rule
    chosen = patches.gather(1, index[:, :, None, None, None].expand(b, n, channels, p, p))
    # (B, rows, cols, 3, P, P) → (B, 3, rows, P, cols, P) → (B, 3, C, C)
    grid = chosen.reshape(b, per_row, per_row, channels, p, p).permute(0, 3, 1, 4, 2, 5)
    return grid.reshape(b, channels, canvas, canvas)


def canvas_to_input(canvas: torch.Tensor, mean: tuple[float, ...],
                    std: tuple[float, ...]) -> torch.Tensor:
    """Read ``canvas`` as a normalised image: ``normalise(clamp(canvas·std + mean, 0, 1))``."""
    m = torch.tensor(mean, dtype=canvas.dtype, device=canvas.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=canvas.dtype, device=canvas.device).view(1, -1, 1, 1)
    return ((canvas * s + m).clamp(0.0, 1.0) - m) / s


def round_robin_sources(logits: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """(K′,) logits of the backbone on one seeded random canvas → (K, m) source indices: the
    sources sorted by logit (ascending, as the reference's ``argsort``; ties by index), dealt
    round-robin to the K targets.
    Needs K·m ≤ K′ (beyond that, :class:`SoftmaxRemapper`)."""
    num_source = logits.shape[-1]
    if num_classes * per_class > num_source:
        raise HiddenCostError(f"{num_classes} classes × {per_class} sources need "
                              f"{num_classes * per_class} source classes; the backbone has "
                              f"{num_source}")
    order = torch.sort(logits, stable=True).indices
    return order[: num_classes * per_class].reshape(per_class, num_classes).T.contiguous()


def needs_remapper(num_classes: int, per_class: int, num_source: int) -> bool:
    """Whether K targets × m sources each exceed the K′ source classes, so that
    :class:`SoftmaxRemapper` replaces the round-robin mapping."""
    return num_classes * per_class > num_source


class SoftmaxRemapper(nn.Module):
    """Target scores ``W · softmax(z) + b`` (W ∈ R^{K×K′}) of the (B, K′) source logits z,
    trained with the token table. W and b start uniform in ±1/√K′ (``nn.Linear``'s own
    initialisation), drawn from the run's seed."""

    def __init__(self, num_source: int, num_classes: int, seed: int = 0) -> None:
        super().__init__()
        self.linear = nn.Linear(num_source, num_classes)
        generator = torch.Generator().manual_seed(seed)
        bound = num_source ** -0.5
        with torch.no_grad():
            for tensor in (self.linear.weight, self.linear.bias):
                tensor.uniform_(-bound, bound, generator=generator)

    def forward(self, source_logits: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.softmax(source_logits, dim=1))


def reduce_mapped(source_logits: torch.Tensor, sources: torch.Tensor,
                  how: Literal["max", "mean"] = "max") -> torch.Tensor:
    """(B, K′) logits and (K, m) sources → (B, K) target scores: max (or mean, as
    :func:`~hiddencost.prompting.label_mapping.apply_mapping` takes it) over each target's m
    source logits."""
    if how == "max":
        return source_logits[:, sources].max(dim=2).values
    if how == "mean":
        return apply_mapping(source_logits, sources)
    raise HiddenCostError(f"unknown reduction {how!r}; use max or mean")


def xmr_loss(scores: torch.Tensor, labels: torch.Tensor, perturbation: torch.Tensor,
             alpha: float = DEFAULT_ALPHA) -> torch.Tensor:
    """``CE(scores, labels) + α · ‖δ‖₂ / N``: δ the (N, 3, C, C) canvases of the batch, the
    norm over all of their entries."""
    return F.cross_entropy(scores, labels) + alpha * perturbation.norm() / len(labels)
