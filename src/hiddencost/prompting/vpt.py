"""Visual prompt tuning (VPT; Jia et al., ECCV'22) of a timm Vision Transformer.

``tokens`` learnable prompt tokens of the model's width are put after the prefix tokens
([CLS], and DeiT's distillation token) of the embedded sequence. *Shallow*: once, before the
first block, and carried through the blocks as any token. *Deep*: a fresh set before every
block, replacing the previous block's outputs at those positions, so the prompts hold
``tokens × blocks × width`` parameters. The prompt positions are dropped after the final norm,
so the head pools what it pooled before. Initialisation as the paper's: uniform on
(−v, v) with v = √(6 / (3·p² + width)), p the patch size (Xavier over the patch projection),
from a generator seeded with the run's seed. The ViT itself stays frozen.

timm's forward is re-traced here because no hook inserts tokens between blocks: the steps are
those of ``VisionTransformer.forward_features`` (patch embedding, position embedding, patch
dropout, pre-norm, blocks, norm) with the prompts put in.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hiddencost.errors import HiddenCostError


def is_vit(model: nn.Module) -> bool:
    """Whether ``model`` has the parts of a timm ``VisionTransformer`` VPT re-traces."""
    return all(hasattr(model, a) for a in ("patch_embed", "_pos_embed", "patch_drop",
                                           "norm_pre", "blocks", "norm", "num_prefix_tokens",
                                           "embed_dim", "forward_head"))


class PromptedViT(nn.Module):
    """A frozen timm ViT with shallow or deep prompt tokens (see the module)."""

    def __init__(self, vit: nn.Module, tokens: int, deep: bool, seed: int) -> None:
        super().__init__()
        if not is_vit(vit):
            raise HiddenCostError(f"vpt applies to Vision Transformers (timm's "
                                  f"VisionTransformer: DeiT, ViT), not {type(vit).__name__}")
        self.vit, self.tokens, self.deep = vit, tokens, deep
        width, layers = vit.embed_dim, len(vit.blocks)
        patch = vit.patch_embed.patch_size[0]
        bound = math.sqrt(6.0 / (3 * patch * patch + width))
        g = torch.Generator().manual_seed(seed)
        init = torch.rand(layers if deep else 1, tokens, width, generator=g) * 2 * bound - bound
        device = next(vit.parameters()).device
        self.prompts = nn.Parameter(init.to(device))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        v, n, t = self.vit, self.vit.num_prefix_tokens, self.tokens
        x = v.norm_pre(v.patch_drop(v._pos_embed(v.patch_embed(x))))
        batch = x.shape[0]
        for i, block in enumerate(v.blocks):
            if i == 0 or self.deep:
                prompts = self.prompts[i if self.deep else 0].expand(batch, -1, -1)
                rest = x[:, n:] if i == 0 else x[:, n + t:]
                x = torch.cat([x[:, :n], prompts.to(x.dtype), rest], dim=1)
            x = block(x)
        x = v.norm(x)
        return torch.cat([x[:, :n], x[:, n + t:]], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.vit.forward_head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
