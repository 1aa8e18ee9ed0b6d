"""The fine-tuning loop shared by the compression recipes (GMP, IMP, structured pruning).

The recipes train a compressed ImageNet classifier on whatever images the user gives (digits
here, ImageNet on a GPU machine). Two losses:

- ``"distill"`` (default, label-free): ``T^2 * KL(p_teacher || p_student)`` with
  ``p = softmax(logits / T)``, the teacher being a frozen copy of the dense model. This keeps the
  compressed model close to the dense one on the given images (what upstream fidelity measures)
  and needs no ImageNet labels.
- ``"ce"``: cross-entropy against the given labels, which must index the model's own classes
  (e.g. ImageNet labels on ImageNet).

By default BatchNorm layers stay in eval mode (running statistics fixed, as appropriate for a
small fine-tuning set); ``bn_train=True`` trains them as usual. One optimizer step per batch,
batches drawn by a seeded permutation (deterministic for a seed).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.data.transforms import ResizeNormalize
from hiddencost.errors import HiddenCostError, TrainingDivergedError

__all__ = ["FinetuneConfig", "TrainData", "Trainer", "distillation_loss"]


@dataclass(frozen=True)
class FinetuneConfig:
    """How the recipes fine-tune: optimizer, loss, batch size, learning rate, seed."""

    batch_size: int = 32
    lr: float = 1e-3
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0
    loss: Literal["distill", "ce"] = "distill"
    temperature: float = 1.0
    bn_train: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise HiddenCostError("batch_size >= 1, lr > 0 and temperature > 0 are required")
        if self.loss not in ("distill", "ce") or self.optimizer not in ("sgd", "adam"):
            raise HiddenCostError("loss must be distill or ce, optimizer sgd or adam")


@dataclass(frozen=True)
class TrainData:
    """Training images (uint8 ``N x 3 x S x S``), optional labels, and the model's input
    preprocessing (resize to ``input_size``, normalise with ``mean`` / ``std``)."""

    images: torch.Tensor
    labels: torch.Tensor | None
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or len(self.images) == 0:
            raise HiddenCostError("training images must be a non-empty uint8 N x 3 x S x S tensor")
        if self.labels is not None and len(self.labels) != len(self.images):
            raise HiddenCostError("training labels must have one entry per image")

    def preprocess(self) -> ResizeNormalize:
        return ResizeNormalize(self.input_size, self.mean, self.std)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, t: float = 1.0) -> torch.Tensor:
    """``T^2 * mean_i KL(softmax(teacher_i / T) || softmax(student_i / T))`` (batch mean)."""
    log_p_s = F.log_softmax(student.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher.float() / t, dim=1)
    return (t * t) * F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)


class Trainer:
    """Stateful fine-tuner: call :meth:`step` once per optimizer step.

    ``teacher`` (for ``loss="distill"``) defaults to a frozen deep copy of ``model`` taken at
    construction. ``after_step`` hooks (e.g. re-applying pruning masks) run after every step.
    """

    def __init__(
        self,
        model: nn.Module,
        data: TrainData,
        cfg: FinetuneConfig,
        device: torch.device | str = "cpu",
        teacher: nn.Module | None = None,
    ) -> None:
        self.model = model
        self.data = data
        self.cfg = cfg
        self.device = torch.device(device)
        self.pre = data.preprocess().to(self.device)
        self.after_step: list[Callable[[], None]] = []
        if cfg.loss == "ce":
            if data.labels is None:
                raise HiddenCostError("loss 'ce' needs labels; use loss 'distill' without them")
            self.teacher = None
        else:
            self.teacher = teacher if teacher is not None else copy.deepcopy(model)
            self.teacher.eval().requires_grad_(False).to(self.device)
        self.model.to(self.device)
        self.optimizer = self._make_optimizer()
        self._gen = torch.Generator().manual_seed(cfg.seed)
        self._order: Iterator[torch.Tensor] = iter(())
        self.steps_done = 0
        self.history: list[float] = []

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise HiddenCostError("the model has no trainable parameters")
        if self.cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        return torch.optim.SGD(params, lr=self.cfg.lr, momentum=self.cfg.momentum,
                               weight_decay=self.cfg.weight_decay)

    def reset_optimizer(self) -> None:
        """A fresh optimizer (e.g. after rewinding weights or changing the architecture)."""
        self.optimizer = self._make_optimizer()

    def _next_batch(self) -> torch.Tensor:
        n = len(self.data.images)
        bs = min(self.cfg.batch_size, n)
        idx = next(self._order, None)
        if idx is None:
            perm = torch.randperm(n, generator=self._gen)
            self._order = iter([perm[i:i + bs] for i in range(0, n - bs + 1, bs)])
            idx = next(self._order)
        return idx

    def step(self) -> float:
        """One optimizer step on the next batch; returns the loss."""
        idx = self._next_batch()
        x = self.pre(self.data.images[idx].to(self.device).float().div_(255.0))
        self.model.train(self.cfg.bn_train)  # False: eval mode, BatchNorm statistics fixed
        logits = self.model(x)
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(x)
            loss = distillation_loss(logits, target, self.cfg.temperature)
        else:
            labels = self.data.labels[idx].to(self.device)  # type: ignore[index]
            if int(labels.max()) >= logits.shape[1]:
                raise HiddenCostError(
                    f"labels go up to {int(labels.max())} but the model has {logits.shape[1]} "
                    "outputs; use loss 'distill'"
                )
            loss = F.cross_entropy(logits.float(), labels)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(f"fine-tuning loss became {loss.item()} at step "
                                        f"{self.steps_done}; lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        for hook in self.after_step:
            hook()
        self.steps_done += 1
        value = float(loss.detach())
        self.history.append(value)
        self.model.eval()
        return value
