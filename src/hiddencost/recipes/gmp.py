"""Gradual magnitude pruning (GMP; Zhu & Gupta 2017, "To prune, or not to prune").

Sparsity follows the cubic schedule, over ``n`` pruning events ``Delta t`` steps apart starting at
step ``t_0``::

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n * Delta t))^3,   t in {t_0, t_0 + Delta t, ...,
                                                                    t_0 + n * Delta t}

so pruning is fast early (when many redundant weights exist) and slow near the final sparsity
``s_f``. At each event the in-scope weights are magnitude-pruned to exactly ``round(s_t * n_w)``
zeros (``scope="global"``: ranked together; ``"layer"``: per layer), using
:func:`hiddencost.compression.magnitude_prune`; already-pruned weights are zero, hence the
smallest, so they stay pruned because ``s_t`` never decreases. Between events the model is
fine-tuned on the user's images (:class:`~hiddencost.recipes.training.Trainer`) and the masks are
re-applied after every optimizer step. Training runs ``total_steps`` steps (default: until
``Delta t`` steps after the last event); the final event always takes place, so the result has
sparsity ``s_f``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from hiddencost.compression.measure import sparsity_counts
from hiddencost.compression.pruning import magnitude_prune
from hiddencost.errors import HiddenCostError
from hiddencost.recipes.masks import MaskSet
from hiddencost.recipes.training import FinetuneConfig, TrainData, Trainer

__all__ = ["GMPConfig", "GMPResult", "cubic_sparsity", "gmp_prune"]


def cubic_sparsity(
    t: int, final_sparsity: float, initial_sparsity: float, start: int, n_events: int,
    frequency: int,
) -> float:
    """Zhu & Gupta's ``s_t = s_f + (s_i - s_f)(1 - (t - t_0)/(n Delta t))^3``, with the progress
    ``(t - t_0)/(n Delta t)`` clipped to [0, 1] (``s_i`` before ``t_0``, ``s_f`` after the end)."""
    span = n_events * frequency
    progress = 1.0 if span == 0 else min(max((t - start) / span, 0.0), 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


@dataclass(frozen=True)
class GMPConfig:
    """GMP schedule (``t_0 = start_step``, ``n = n_events``, ``Delta t = frequency``) and scope."""

    final_sparsity: float
    initial_sparsity: float = 0.0
    start_step: int = 0
    n_events: int = 10
    frequency: int = 10
    total_steps: int | None = None
    scope: Literal["global", "layer"] = "global"
    exclude_first_conv: bool = False
    exclude_classifier: bool = False
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        if not 0.0 <= self.initial_sparsity <= self.final_sparsity < 1.0:
            raise HiddenCostError("need 0 <= initial_sparsity <= final_sparsity < 1")
        if self.n_events < 1 or self.frequency < 1 or self.start_step < 0:
            raise HiddenCostError("n_events >= 1, frequency >= 1 and start_step >= 0 required")

    @property
    def end_step(self) -> int:
        """Step of the last pruning event, ``t_0 + n * Delta t``."""
        return self.start_step + self.n_events * self.frequency

    @property
    def steps(self) -> int:
        """Total optimizer steps: ``total_steps`` or ``end_step + frequency``."""
        return self.total_steps if self.total_steps is not None else self.end_step + self.frequency

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GMPResult:
    """Pruning events ``(step, target sparsity, measured in-scope sparsity)`` and losses."""

    events: list[tuple[int, float, float]]
    losses: list[float]
    final_sparsity: float


def _in_scope_sparsity(model: nn.Module, cfg: GMPConfig) -> float:
    zeros, total = sparsity_counts(model, cfg.exclude_first_conv, cfg.exclude_classifier)
    return zeros / total if total else 0.0


def gmp_prune(
    model: nn.Module,
    data: TrainData,
    cfg: GMPConfig,
    device: torch.device | str = "cpu",
    on_event: Callable[[int, float, float], None] | None = None,
) -> GMPResult:
    """Prune ``model`` in place with GMP while fine-tuning on ``data``; return the history."""
    trainer = Trainer(model, data, cfg.finetune, device)
    masks: MaskSet | None = None
    events: list[tuple[int, float, float]] = []

    def prune_to(step: int, target: float) -> None:
        nonlocal masks
        if target > 0.0:
            magnitude_prune(model, target, scope=cfg.scope,
                            exclude_first_conv=cfg.exclude_first_conv,
                            exclude_classifier=cfg.exclude_classifier)
        masks = MaskSet.from_zeros(model, cfg.exclude_first_conv, cfg.exclude_classifier)
        measured = _in_scope_sparsity(model, cfg)
        events.append((step, target, measured))
        if on_event is not None:
            on_event(step, target, measured)

    trainer.after_step.append(lambda: masks.apply() if masks is not None else None)
    event_steps = {cfg.start_step + i * cfg.frequency for i in range(cfg.n_events + 1)}
    for t in range(cfg.steps):
        if t in event_steps:
            prune_to(t, cubic_sparsity(t, cfg.final_sparsity, cfg.initial_sparsity,
                                       cfg.start_step, cfg.n_events, cfg.frequency))
        trainer.step()
    if not events or events[-1][1] < cfg.final_sparsity:
        prune_to(cfg.steps, cfg.final_sparsity)
    model.eval()
    return GMPResult(events=events, losses=trainer.history,
                     final_sparsity=_in_scope_sparsity(model, cfg))
