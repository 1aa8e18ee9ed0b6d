"""Transformer blocks of reduced width, as structured pruning (UPop) leaves them.

UPop keeps, per block, the model width D and the number of heads h but only d′ of each head's
D/h dimensions (the same d′ indices for q, k and v of every head) and m of the MLP's hidden
units. ``nn.MultiheadAttention`` ties its inner width to D, so a narrowed block gets
:class:`NarrowAttention` (same parameter names, so OpenAI-layout keys load as they are) and
MLP linears of width m; everything else stays open_clip's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class BlockWidths:
    """One block's widths: ``heads`` h, per-head ``head_dim`` d′ (inner width h·d′) and the
    MLP's ``hidden`` m."""

    heads: int
    head_dim: int
    hidden: int


class NarrowAttention(nn.Module):
    """Multi-head attention with inner width h·d′ ≠ D.

    ``in_proj_weight`` (3·h·d′, D) stacks W_q, W_k, W_v; ``out_proj`` maps h·d′ → D. Per head,
    softmax(q kᵀ / √d′ + mask) v, with the scale of the kept dimension d′, as the pruned
    reference computes it (its head dim is the projected width / h). Called as open_clip's
    blocks call ``nn.MultiheadAttention`` with ``batch_first=True``.
    """

    def __init__(self, width: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.num_heads, self.head_dim, self.batch_first = heads, head_dim, True
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner))
        self.out_proj = nn.Linear(inner, width)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                need_weights: bool = False,
                attn_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        batch, length = query.shape[:2]

        def heads(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return F.linear(x, w, b).view(x.shape[0], x.shape[1], self.num_heads,
                                          self.head_dim).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(query, w_q, b_q), heads(key, w_k, b_k),
                                             heads(value, w_v, b_v), attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch, length, self.num_heads * self.head_dim)
        return self.out_proj(out), None


def block_widths(block: nn.Module) -> BlockWidths:
    """The widths an open_clip ``ResidualAttentionBlock`` (or a narrowed one) has now."""
    heads = block.attn.num_heads
    return BlockWidths(heads, block.attn.in_proj_weight.shape[0] // (3 * heads),
                       block.mlp.c_fc.out_features)


def narrow_block(block: nn.Module, widths: BlockWidths) -> None:
    """Give ``block`` these widths in place (fresh parameters where a width changes)."""
    width = block.ln_1.normalized_shape[0]
    if block_widths(block) == widths:
        return
    if (widths.heads, widths.head_dim) != (block.attn.num_heads,
                                           block.attn.in_proj_weight.shape[0]
                                           // (3 * block.attn.num_heads)):
        block.attn = NarrowAttention(width, widths.heads, widths.head_dim)
    if widths.hidden != block.mlp.c_fc.out_features:
        block.mlp.c_fc = nn.Linear(width, widths.hidden)
        block.mlp.c_proj = nn.Linear(widths.hidden, width)
