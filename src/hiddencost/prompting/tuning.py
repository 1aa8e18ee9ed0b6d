"""Training inside the backbone: a fresh linear head on the penultimate features of a trainable
copy of the backbone, for fine-tuning, BitFit and LoRA (:mod:`hiddencost.prompting.tune_methods`).

Inputs are resized to the backbone's input size and normalised (as linear probing); the head is
``nn.Linear(D, K)`` on the pooled pre-classifier features (seeded init). The backbone stays in
eval mode: its BatchNorm is folded into the convolutions (every method's preparation,
:func:`hiddencost.frozen.prepare_frozen`), so there are no running statistics to update, and
dropout and stochastic depth are off, so a step depends only on its batch. Adam with L2 weight
decay, cosine annealing of the learning rate stepped once per epoch (ILM-VP's
``full_finetune.py``: Adam lr 1e-4, weight decay 5e-4, CosineAnnealingLR(T_max = epochs)).
Under bf16 only the backbone's forward and backward run in bf16; the head, the loss and every
evaluation pass run in fp32 (:mod:`hiddencost.precision`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.data.transforms import ResizeNormalize
from hiddencost.frozen import penultimate_features
from hiddencost.precision import exact, training
from hiddencost.prompting.run_state import StateFile
from hiddencost.prompting.schedule import EpochSums, descend, epoch_batches
from hiddencost.prompting.visual_prompt import TrainHistory, to_unit
from hiddencost.records import EpochRecord


class TunedClassifier(nn.Module):
    """``head(features(backbone, pre(x)))`` for [0, 1] images ``x``."""

    def __init__(self, backbone: nn.Module, pre: ResizeNormalize, num_classes: int,
                 input_size: int, seed: int) -> None:
        super().__init__()
        self.backbone, self.pre = backbone, pre
        device = next(backbone.parameters()).device
        with torch.no_grad(), exact(device):
            probe = torch.zeros(1, 3, input_size, input_size, device=device)
            width = penultimate_features(backbone, probe).shape[1]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = nn.Linear(width, num_classes).to(device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return penultimate_features(self.backbone, self.pre(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).float())


#: :func:`flip_and_shift`'s largest shift in pixels (of the stored image).
SHIFT = 4


def flip_and_shift(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Light augmentation of a batch of [0, 1] images (B, 3, H, W): each image flipped left to
    right with probability ½ and shifted by up to :data:`SHIFT` pixels each way (reflect-padded,
    then cropped back to H × W), drawn from ``generator`` (CPU) so a run repeats exactly."""
    b, _, h, w = x.shape
    flip = torch.rand(b, generator=generator) < 0.5
    offsets = torch.randint(0, 2 * SHIFT + 1, (b, 2), generator=generator)
    padded = F.pad(torch.where(flip.to(x.device).view(b, 1, 1, 1), x.flip(3), x),
                   (SHIFT,) * 4, mode="reflect")
    return torch.stack([padded[i, :, r:r + h, c:c + w]
                        for i, (r, c) in enumerate(offsets.tolist())])


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def train_tuned(
    model: TunedClassifier,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float,
    weight_decay: float,
    precision: torch.dtype | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    state: StateFile | None = None,
    augment: bool = False,
) -> TrainHistory:
    """Train the parameters of ``model`` that require grad on the uint8 ``images``: seeded
    batches, Adam(lr, weight_decay) and per-epoch cosine annealing (see the module); with
    ``augment``, :func:`flip_and_shift` on every batch (from the data-order generator). With
    ``state`` the trainable tensors, optimiser, schedule, data order and history are saved at
    every epoch end, and a saved state of the same run is resumed."""
    params = _trainable(model)
    optimizer = torch.optim.Adam(params.values(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    generator = torch.Generator().manual_seed(seed)
    history, start_epoch = TrainHistory(), 0
    saved = state.load() if state is not None else None
    if saved is not None:
        with torch.no_grad():
            for name, value in saved["trainable"].items():
                params[name].copy_(value)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        history.epochs = [EpochRecord.model_validate(e) for e in saved["history"]]
        start_epoch = saved["epoch"]
    labels = labels.to(device)
    for epoch in range(start_epoch, epochs):
        start, sums = time.perf_counter(), EpochSums(device)
        for idx in epoch_batches(len(labels), batch_size, generator):
            x = to_unit(images[idx], device)
            if augment:
                x = flip_and_shift(x, generator)
            with training(device, precision):
                feats = model.features(x)
            y = labels[idx.to(device)]
            with exact(device):
                logits = model.head(feats.float())
                loss = F.cross_entropy(logits, y)
            descend(optimizer, loss, epoch, check_finite=False)
            sums.add(loss, logits, y)
        sums.check(epoch)
        total, correct = sums.values()
        record = EpochRecord(epoch=epoch + 1, loss=total / len(labels),
                             train_accuracy=correct / len(labels),
                             lr=optimizer.param_groups[0]["lr"],
                             seconds=time.perf_counter() - start)
        scheduler.step()
        history.epochs.append(record)
        if state is not None:
            state.save({"trainable": {n: p.detach().cpu() for n, p in params.items()},
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generator.get_state(),
                        "history": [e.model_dump(mode="json") for e in history.epochs],
                        "epoch": epoch + 1})
        if on_epoch is not None:
            on_epoch(record)
    return history


@torch.inference_mode()
def predict_tuned(model: TunedClassifier, images: torch.Tensor, device: torch.device,
                  batch_size: int = 128) -> torch.Tensor:
    """float32 CPU logits of uint8 ``images``, in fp32."""
    with exact(device):
        return torch.cat([model(to_unit(chunk, device)).float().cpu()
                          for chunk in images.split(batch_size)])


def count(params: Iterable[torch.Tensor]) -> int:
    """The number of elements of ``params``."""
    return sum(p.numel() for p in params)
