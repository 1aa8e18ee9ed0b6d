"""Iterative magnitude pruning with rewinding: lottery tickets, written in open_lth's layout.

Procedure (Frankle & Carbin 2019; with rewinding, Frankle et al. 2020), as open_lth runs it:

1. *Rewind point.* ``rewind_step = 0``: the given weights ``W_0``. Otherwise the dense model is
   trained ``rewind_step`` steps first (saved under ``level_pretrain``) and ``W_r`` is the state
   after them.
2. *Level 0:* train the dense model ``train_steps`` steps from ``W_r`` (mask of ones).
3. *Level k >= 1:* from level ``k-1``'s trained weights, prune ``ceil(fraction * R_{k-1})`` of
   the ``R_{k-1}`` remaining weights with the smallest ``|w|``, globally over the prunable
   layers (conv and linear weights, the classifier included, as open_lth's ``sparse_global``);
   rewind to ``W_r``, apply the new mask and train ``train_steps`` steps with it.

With the default ``fraction = 0.2``, ``R_k = R_{k-1} - ceil(0.2 R_{k-1})``, i.e. about ``0.8^k``
of the weights remain. Every level is written as open_lth writes it
(``<out>/replicate_1/level_<k>/main/`` with ``model_ep<E>_it<I>.pth`` for the rewound start and the
trained end, ``mask.pth`` and ``sparsity_report.json``; keys with the ``model.`` prefix), so our
tickets load through the same loader as published ones:
``create_model("resnet18.lth-l3", checkpoint=".../level_3/main")``. Steps are written as
``(epoch, iteration)`` with ``ceil(N / batch_size)`` iterations per epoch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hiddencost.compression.pruning import prunable_layers
from hiddencost.errors import HiddenCostError
from hiddencost.recipes.masks import MaskSet
from hiddencost.recipes.training import FinetuneConfig, TrainData, Trainer
from hiddencost.zoo.open_lth import save_open_lth_level

__all__ = ["IMPConfig", "IMPLevel", "imp_prune", "prune_fraction"]


@dataclass(frozen=True)
class IMPConfig:
    """Levels, fraction pruned per level, rewind step, training steps per level and scope."""

    levels: int = 3
    fraction: float = 0.2
    rewind_step: int = 0
    train_steps: int = 100
    exclude_first_conv: bool = False
    exclude_classifier: bool = False
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if self.levels < 0 or not 0.0 < self.fraction < 1.0:
            raise HiddenCostError("IMP needs levels >= 0 and a fraction in (0, 1)")
        if self.rewind_step < 0 or self.train_steps < 0:
            raise HiddenCostError("rewind_step and train_steps must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IMPLevel:
    """One level: its folder, remaining weights, sparsity and final loss."""

    level: int
    path: Path
    remaining: int
    total: int
    sparsity: float
    final_loss: float | None


def prune_fraction(model: nn.Module, masks: MaskSet, fraction: float) -> MaskSet:
    """New masks: the ``ceil(fraction * R)`` smallest-|w| of the ``R`` unpruned weights removed,
    ranked globally over all masked tensors (ties broken by :func:`torch.topk`)."""
    keys = list(masks.masks)
    modules = dict(model.named_modules())
    weights = [modules[k.removesuffix(".weight")].weight.detach() for k in keys]
    flat_w = torch.cat([w.abs().reshape(-1).float().cpu() for w in weights])
    flat_m = torch.cat([masks.masks[k].reshape(-1).cpu() for k in keys]).bool()
    remaining = int(flat_m.sum())
    n_prune = math.ceil(fraction * remaining)
    alive = flat_m.nonzero().squeeze(1)
    order = torch.topk(flat_w[alive], n_prune, largest=False).indices
    new_flat = flat_m.clone()
    new_flat[alive[order]] = False
    out: dict[str, torch.Tensor] = {}
    start = 0
    for k, w in zip(keys, weights, strict=True):
        n = w.numel()
        out[k] = new_flat[start:start + n].reshape(w.shape).to(w.dtype).to(w.device)
        start += n
    return MaskSet(model, out)


def _step_name(step: int, per_epoch: int) -> str:
    return f"model_ep{step // per_epoch}_it{step % per_epoch}.pth"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def imp_prune(
    model: nn.Module,
    data: TrainData,
    cfg: IMPConfig,
    out_dir: str | Path,
    device: torch.device | str = "cpu",
    on_level: Callable[[IMPLevel], None] | None = None,
) -> list[IMPLevel]:
    """Run IMP on ``model`` (left holding the last level's ticket) and write every level.

    Returns the levels in order (level 0 is the dense run). The teacher of the default
    distillation loss is the model as given (frozen copy).
    """
    run = Path(out_dir) / "replicate_1"
    per_epoch = max(1, math.ceil(len(data.images) / max(1, cfg.finetune.batch_size)))
    teacher = copy.deepcopy(model).eval()
    if not prunable_layers(model, cfg.exclude_first_conv, cfg.exclude_classifier):
        raise HiddenCostError("the model has no prunable layers in scope")
    trainer = Trainer(model, data, cfg.finetune, device, teacher=teacher)
    masks = MaskSet.ones(model, cfg.exclude_first_conv, cfg.exclude_classifier)
    trainer.after_step.append(lambda: masks.apply())
    if cfg.rewind_step > 0:
        for _ in range(cfg.rewind_step):
            trainer.step()
        save_open_lth_level(run / "level_pretrain" / "main", masks.cpu_int(),
                            {_step_name(cfg.rewind_step, per_epoch): _state(model)})
    rewind_state = _state(model)
    levels: list[IMPLevel] = []
    for level in range(cfg.levels + 1):
        if level > 0:
            masks = prune_fraction(model, masks, cfg.fraction)
            trainer.after_step[-1] = masks.apply
            model.load_state_dict(rewind_state)
            masks.apply()
            trainer.reset_optimizer()
        start_state = _state(model)
        for _ in range(cfg.train_steps):
            trainer.step()
        end_step = cfg.rewind_step + cfg.train_steps
        states = {_step_name(cfg.rewind_step, per_epoch): start_state}
        states[_step_name(end_step, per_epoch)] = _state(model)
        path = save_open_lth_level(run / f"level_{level}" / "main", masks.cpu_int(), states)
        info = IMPLevel(level=level, path=path, remaining=masks.remaining(), total=masks.total(),
                        sparsity=masks.sparsity(),
                        final_loss=trainer.history[-1] if trainer.history else None)
        levels.append(info)
        if on_level is not None:
            on_level(info)
    model.eval()
    return levels
