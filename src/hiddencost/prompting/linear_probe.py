"""Linear probing: a fresh linear head on the frozen backbone's penultimate features.

Images are resized to the backbone's input size, normalised, and passed once through the frozen
eval-mode backbone. Nothing upstream of the head is trained and there is no augmentation, so the
features are computed once and cached: training on cached features gives the same result as
recomputing them every epoch, at a fraction of the cost (see ``benchmarks/``). Adam lr 0.01 and the
MultiStepLR schedule of VP.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.data.transforms import ResizeNormalize
from hiddencost.frozen import penultimate_features
from hiddencost.precision import exact
from hiddencost.prompting.schedule import adam_multistep, descend, epoch_batches
from hiddencost.prompting.visual_prompt import TrainHistory, to_unit
from hiddencost.records import EpochRecord


@torch.inference_mode()
def extract_features(
    backbone: nn.Module,
    preprocess: ResizeNormalize,
    images_u8: torch.Tensor,
    device: torch.device,
    batch_size: int = 128,
) -> torch.Tensor:
    """Penultimate features (float32, CPU) of uint8 images through a frozen backbone, in fp32
    (they are the head's inputs, train and test alike).

    The backbone is put in eval mode first, so BatchNorm uses its running statistics and a
    feature never depends on which other images share its batch.
    """
    backbone.eval()
    preprocess = preprocess.to(device)
    feats = []
    with exact(device):
        for chunk in images_u8.split(batch_size):
            feats.append(penultimate_features(backbone, preprocess(to_unit(chunk, device)))
                         .float().cpu())
    return torch.cat(feats)


def train_linear_head(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 0.01,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> tuple[nn.Linear, TrainHistory]:
    """Train ``nn.Linear(D, K)`` on cached features with Adam + MultiStepLR; seeded init/shuffle."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(features.shape[1], num_classes)
    head.to(device)
    feats, labels = features.to(device), labels.to(device)
    optimizer, scheduler = adam_multistep(head.parameters(), epochs, lr)
    generator = torch.Generator().manual_seed(seed)
    history = TrainHistory()
    for epoch in range(epochs):
        start = time.perf_counter()
        total_loss, correct = 0.0, 0
        for idx in epoch_batches(len(labels), batch_size, generator):
            idx = idx.to(device)
            logits = head(feats[idx])
            loss = F.cross_entropy(logits, labels[idx])
            descend(optimizer, loss, epoch)
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == labels[idx]).sum())
        record = EpochRecord(epoch=epoch + 1, loss=total_loss / len(labels),
                             train_accuracy=correct / len(labels),
                             lr=optimizer.param_groups[0]["lr"],
                             seconds=time.perf_counter() - start)
        scheduler.step()
        history.epochs.append(record)
        if on_epoch is not None:
            on_epoch(record)
    return head, history
