"""Structured channel pruning through Torch-Pruning (``torch-pruning``, VainF/Torch-Pruning).

Torch-Pruning traces the model into a dependency graph, so removing an output channel of a conv
also removes the matching BatchNorm entries, the next layer's input channels, and keeps residual
additions and depthwise convs consistent: the result is a physically smaller network (fewer
parameters and FLOPs), not a masked one. Importance is the group magnitude (``p``-norm of every
tensor slice in a dependency group, mean-reduced; ``tp.importance.GroupMagnitudeImportance``).

Target. ``target_ratio`` is the fraction of parameters (``target="params"``) or of FLOPs
(``target="flops"``, multiply-accumulates counted by ``tp.utils.count_ops_and_params`` at
``input_size``) to remove. Pruning proceeds in ``max_steps`` equal channel-ratio increments (up to
``max_channel_ratio`` of each layer's channels) and stops at the first step whose reduction
reaches the target, so the achieved reduction is at least the target and at most one increment
beyond it. The classifier's outputs are never pruned (the class count stays). Optional
fine-tuning afterwards (distillation from the dense model by default).

Rebuilding: the pruned shapes are recorded by :func:`hiddencost.recipes.artifact.capture_structure`
as plain data, so a saved model is rebuilt from JSON and loaded strictly, never unpickled.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.recipes.training import FinetuneConfig, TrainData, Trainer

__all__ = ["StructuredConfig", "StructuredResult", "count_params_flops", "structured_prune"]


@dataclass(frozen=True)
class StructuredConfig:
    """What to remove (fraction of params or FLOPs) and how finely to search for it."""

    target_ratio: float
    target: Literal["params", "flops"] = "params"
    p: int = 2
    max_steps: int = 90
    max_channel_ratio: float = 0.9
    round_to: int | None = None
    input_size: int = 224
    finetune_steps: int = 0
    finetune: FinetuneConfig | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.target_ratio < 1.0:
            raise HiddenCostError(f"target_ratio must be in (0, 1), got {self.target_ratio}")
        if self.target not in ("params", "flops"):
            raise HiddenCostError(f"target must be params or flops, got {self.target!r}")
        if self.max_steps < 1 or not 0.0 < self.max_channel_ratio < 1.0:
            raise HiddenCostError("max_steps >= 1 and max_channel_ratio in (0, 1) required")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return d


@dataclass
class StructuredResult:
    """Parameters and FLOPs (MACs) before and after, and the achieved reduction."""

    params_before: int
    params_after: int
    flops_before: int
    flops_after: int
    steps: int
    reduction: float
    losses: list[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params_flops(model: nn.Module, input_size: int) -> tuple[int, int]:
    """``(parameters, MACs)`` of ``model`` for one ``3 x input_size x input_size`` image."""
    import torch_pruning as tp

    param = next(model.parameters())
    example = torch.zeros(1, 3, input_size, input_size, device=param.device)
    flops, params = tp.utils.count_ops_and_params(model, example)
    return int(params), int(flops)


def _classifier(model: nn.Module) -> list[nn.Module]:
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
        return [head]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def structured_prune(
    model: nn.Module,
    cfg: StructuredConfig,
    data: TrainData | None = None,
    device: torch.device | str = "cpu",
) -> StructuredResult:
    """Prune channels of ``model`` in place until the target reduction; optionally fine-tune."""
    import torch_pruning as tp

    model.eval()
    teacher = copy.deepcopy(model) if cfg.finetune_steps and data is not None else None
    params0, flops0 = count_params_flops(model, cfg.input_size)
    example = torch.zeros(1, 3, cfg.input_size, cfg.input_size,
                          device=next(model.parameters()).device)
    pruner = tp.pruner.BasePruner(
        model, example,
        importance=tp.importance.GroupMagnitudeImportance(p=cfg.p),
        pruning_ratio=cfg.max_channel_ratio,
        iterative_steps=cfg.max_steps,
        ignored_layers=_classifier(model),
        round_to=cfg.round_to,
    )
    before = params0 if cfg.target == "params" else flops0
    reduction = 0.0
    steps = 0
    params, flops = params0, flops0
    for steps in range(1, cfg.max_steps + 1):  # noqa: B007
        pruner.step()
        params, flops = count_params_flops(model, cfg.input_size)
        reduction = 1.0 - (params if cfg.target == "params" else flops) / before
        if reduction >= cfg.target_ratio:
            break
    else:
        raise HiddenCostError(
            f"structured pruning reached a {reduction:.3f} {cfg.target} reduction, not the "
            f"{cfg.target_ratio} asked for; raise max_channel_ratio"
        )
    losses: list[float] = []
    if teacher is not None and data is not None:
        trainer = Trainer(model, data, cfg.finetune or FinetuneConfig(), device, teacher=teacher)
        for _ in range(cfg.finetune_steps):
            losses.append(trainer.step())
    model.eval()
    return StructuredResult(params_before=params0, params_after=params, flops_before=flops0,
                            flops_after=flops, steps=steps, reduction=reduction, losses=losses)
