"""The optimisers and learning-rate schedules: Adam + MultiStepLR for VP and LP (ILM-VP), SGD +
per-iteration cosine for CLIP VP."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from hiddencost.errors import TrainingDivergedError


def milestones(epochs: int, fractions: tuple[float, ...] = (0.5, 0.72)) -> list[int]:
    """MultiStepLR milestones ⌊f·E⌋ for each fraction f.

    Milestones below 1 are dropped: with very few epochs ⌊0.5·E⌋ can be 0, and a milestone at 0
    would cut the learning rate before the first step. Coinciding milestones are kept, as
    MultiStepLR (and the ILM-VP code) then applies γ once per listed milestone.
    """
    return sorted(int(f * epochs) for f in fractions if int(f * epochs) >= 1)


def adam_multistep(
    params: Iterable[torch.nn.Parameter], epochs: int, lr: float = 0.01, gamma: float = 0.1
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.MultiStepLR]:
    """Adam(lr) with MultiStepLR(milestones=⌊0.5E⌋, ⌊0.72E⌋; γ), stepped once per epoch."""
    optimizer = torch.optim.Adam(params, lr=lr)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(epochs), gamma=gamma)
    return optimizer, scheduler


def sgd_cosine(
    params: Iterable[torch.nn.Parameter], total_steps: int, lr: float, momentum: float = 0.9
) -> tuple[torch.optim.SGD, torch.optim.lr_scheduler.CosineAnnealingLR]:
    """SGD(lr, momentum) with CosineAnnealingLR over ``total_steps``, stepped once per
    iteration: lr_t = lr·(1 + cos(π·t/T))/2 (the CLIP VP protocol of ILM-VP; no warm-up)."""
    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    return optimizer, scheduler


def epoch_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device | None = None) -> list[torch.Tensor]:
    """A seeded shuffle of range(n) cut into batches (the last one may be smaller); drawn on
    the CPU (the CPU generator's order, whatever the device) and, with ``device``, moved there
    in one copy."""
    order = torch.randperm(n, generator=generator)
    return list((order if device is None else order.to(device)).split(batch_size))


def descend(optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer],
            loss: torch.Tensor | Sequence[torch.Tensor], epoch: int,
            check_finite: bool = True) -> None:
    """One optimiser step on ``loss``; a NaN or infinite loss stops training with a one-line
    :class:`TrainingDivergedError` naming the (0-based) ``epoch`` + 1. ``check_finite=False``
    leaves that check to the caller (e.g. once per epoch, :meth:`EpochSums.check`): the
    per-step check waits for the device.

    Several optimisers with one loss each (the runs of a pack, over disjoint parameters): one
    backward pass of the sum of the losses, then every optimiser steps; the gradient each one
    sees is that of its own loss.
    """
    optimizers = [optimizer] if isinstance(optimizer, torch.optim.Optimizer) else optimizer
    losses = [loss] if isinstance(loss, torch.Tensor) else list(loss)
    for value in losses if check_finite else ():
        if not torch.isfinite(value):
            raise TrainingDivergedError(
                f"training loss became {value.item()} at epoch {epoch + 1}")
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    total = losses[0]
    for value in losses[1:]:
        total = total + value
    total.backward()
    for opt in optimizers:
        opt.step()


class EpochSums:
    """An epoch's sums of training loss (Σ batch-mean loss × batch size, float64) and correct
    predictions (int64), kept on the device so that a step never waits for it (a ``.item()``
    per step is a host-device sync). The float64 sum is the same number as adding
    ``loss.item() * len(batch)`` in Python, in the same order. :meth:`check` fails the run on a
    non-finite sum (the loss is ≥ 0, so any NaN or ±inf step loss makes the sum non-finite)."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: its mean ``loss``, and its top-1 hits of ``logits`` on ``labels``."""
        self.loss += loss.detach().double() * len(labels)
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.seen += len(labels)

    def check(self, epoch: int) -> None:
        """Raise :class:`TrainingDivergedError` when a loss of the (0-based) ``epoch`` was NaN
        or infinite (one sync per epoch)."""
        if not torch.isfinite(self.loss):
            raise TrainingDivergedError(
                f"training loss became {self.loss.item()} at epoch {epoch + 1}")

    def values(self) -> tuple[float, int]:
        """The loss sum and the correct count as Python numbers (one sync)."""
        return self.loss.item(), int(self.correct.item())
