"""Visual prompting (model reprogramming) of a frozen backbone: the model and its training loop.

Protocol (ILM-VP): frozen eval-mode backbone, pad prompt, Adam lr 0.01 on the
prompt (and the FM layer, for ``fm``), MultiStepLR at ⌊0.5E⌋, ⌊0.72E⌋ with γ = 0.1, no data
augmentation, final-epoch result. Mappings: ``rlm`` fixed random; ``flm`` computed once with the
initial prompt; ``ilm`` recomputed without gradients at the start of epoch e (0-based) when
e mod k = 0 for ``mapping_interval`` k (k = 1: every epoch; epoch 0 = FLM), kept in between.
``mapping_num`` m > 1 gives each target m sources whose logits are averaged (``rlm``, ``flm``,
``ilm``; see :mod:`hiddencost.prompting.label_mapping`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.device import autocast_for
from hiddencost.errors import HiddenCostError
from hiddencost.frozen import freeze
from hiddencost.prompting.label_mapping import (
    FullyConnectedMapping,
    MappingList,
    apply_mapping,
    check_class_counts,
    frequency_mapping,
    random_mapping,
)
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.schedule import adam_multistep, descend, epoch_batches

VPMethod = Literal["rlm", "flm", "ilm", "fm"]
VP_METHODS: tuple[str, ...] = get_args(VPMethod)


class ReprogrammedModel(nn.Module):
    """prompt → frozen backbone (channels_last) → label mapping (index selection or FM layer).

    ``mapping`` is a length-K buffer (``mapping_num`` m = 1, initially arange(K) mod K′) or a
    (K, m) one (initially arange(K·m) mod K′, row-wise), see :func:`apply_mapping`.
    """

    def __init__(
        self,
        backbone: nn.Module,
        prompt: PadPrompt,
        num_source: int,
        num_target: int,
        fully_connected: bool = False,
        mapping_num: int = 1,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompt = prompt
        self.num_source = num_source
        self.num_target = num_target
        self.fm = FullyConnectedMapping(num_source, num_target) if fully_connected else None
        initial = torch.arange(num_target * mapping_num) % num_source
        if mapping_num > 1:
            initial = initial.view(num_target, mapping_num)
        self.register_buffer("mapping", initial)

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.prompt(x).contiguous(memory_format=torch.channels_last)
        return self.backbone(z)

    def map_logits(self, source_logits: torch.Tensor) -> torch.Tensor:
        if self.fm is not None:
            return self.fm(source_logits.float())
        return apply_mapping(source_logits, self.mapping).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.map_logits(self.source_logits(x))


def to_unit(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images → float in [0, 1] on ``device``."""
    return images_u8.to(device, non_blocking=True).float().div_(255.0)


@torch.inference_mode()
def source_predictions(
    model: ReprogrammedModel, images_u8: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Top-1 source class of each image seen through the current prompt (CPU LongTensor)."""
    preds = []
    with autocast_for(device):
        for chunk in images_u8.split(batch_size):
            preds.append(model.source_logits(to_unit(chunk, device)).argmax(1).cpu())
    return torch.cat(preds)


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images_u8: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Target logits (float32, CPU) of a model on uint8 images."""
    out = []
    with autocast_for(device):
        for chunk in images_u8.split(batch_size):
            out.append(model(to_unit(chunk, device)).float().cpu())
    return torch.cat(out)


@dataclass
class TrainHistory:
    """Per-epoch training record; ``prompts`` holds δ after each epoch when asked for."""

    epochs: list[dict] = field(default_factory=list)
    prompts: list[torch.Tensor] = field(default_factory=list)
    #: The mapping used in each epoch (``mapping.tolist()``: ints for m = 1, m-lists for m > 1).
    mappings: list[MappingList] = field(default_factory=list)


def _remap(model: ReprogrammedModel, train_images: torch.Tensor, train_labels: torch.Tensor,
           many_to_one: bool, device: torch.device, epoch: int) -> int:
    """The frequency mapping under the current prompt (no gradients) replaces ``model.mapping``;
    returns how many targets changed source (m > 1: source set; all of them at epoch 0)."""
    num_source, num_classes = model.num_source, model.num_target
    mapping_num = 1 if model.mapping.dim() == 1 else model.mapping.shape[1]
    preds = source_predictions(model, train_images, device)
    new = frequency_mapping(preds, train_labels, num_source, num_classes, many_to_one,
                            mapping_num)
    differs = new.to(device) != model.mapping
    if mapping_num > 1:  # rows are sorted, so equal rows mean equal source sets
        differs = differs.any(dim=1)
    changed = int(differs.sum()) if epoch else num_classes
    model.mapping.copy_(new)
    return changed


def _train_epoch(model: ReprogrammedModel, train_images: torch.Tensor, labels: torch.Tensor,
                 batch_size: int, generator: torch.Generator, optimizer: torch.optim.Optimizer,
                 device: torch.device, epoch: int) -> tuple[float, float]:
    """One pass over the shuffled training set; the mean loss and the training accuracy."""
    total_loss, correct, seen = 0.0, 0, 0
    for idx in epoch_batches(len(labels), batch_size, generator):
        x = to_unit(train_images[idx], device)
        y = labels[idx.to(device)]
        with autocast_for(device):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        descend(optimizer, loss, epoch)
        total_loss += loss.item() * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
    return total_loss / seen, correct / seen


def _check_options(method: str, num_source: int, num_classes: int, many_to_one: bool,
                   mapping_interval: int, mapping_num: int) -> None:
    """Refuse an unknown method, non-positive interval/num, fm with m ≠ 1, impossible counts."""
    if method not in VP_METHODS:
        raise ValueError(f"unknown VP method {method!r}")
    for name, value in (("mapping_interval", mapping_interval), ("mapping_num", mapping_num)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise HiddenCostError(f"{name} must be an integer ≥ 1, got {value!r}")
    if method == "fm" and mapping_num != 1:
        raise HiddenCostError(
            f"mapping_num {mapping_num} has no meaning for fm (a dense K′ → K layer); use 1"
        )
    if method != "fm":
        check_class_counts(num_source, num_classes, many_to_one, mapping_num)


def train_visual_prompt(
    backbone: nn.Module,
    prompt: PadPrompt,
    train_images: torch.Tensor,
    train_labels: torch.Tensor,
    num_classes: int,
    num_source: int,
    method: VPMethod,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    lr: float = 0.01,
    many_to_one: bool = False,
    save_prompt_history: bool = False,
    on_epoch: Callable[[dict], None] | None = None,
    mapping_interval: int = 1,
    mapping_num: int = 1,
    evaluate: Callable[[ReprogrammedModel], float] | None = None,
) -> tuple[ReprogrammedModel, TrainHistory]:
    """Train a pad prompt (and FM layer) on uint8 ``train_images`` with a frozen backbone.

    ``mapping_interval`` k (``ilm`` only; ignored by the others): the frequency mapping is
    recomputed at the start of epoch e (0-based) iff e mod k = 0. ``mapping_num`` m: sources
    per target for ``rlm``/``flm``/``ilm`` (needs K·m ≤ K′ when m > 1); ``fm`` refuses m ≠ 1.
    The prompt's initialisation is the caller's (:class:`PadPrompt` ``init``). ``evaluate``,
    when given, is called on the model after every epoch and its value recorded as the epoch's
    ``test_accuracy``: for learning curves only, never used to choose anything.

    Returns the trained model (its ``mapping`` is the one used in the final epoch) and the
    history: per epoch the mean training loss, training accuracy, learning rate, how many
    targets changed source (``mapping_changes``; all K when computed at epoch 0, 0 when not
    recomputed), whether the frequency mapping was (re)computed at the start of that epoch
    (``mapping_recomputed``; never for ``rlm``/``fm``) and seconds; ``history.mappings`` holds
    the mapping used in each epoch.
    """
    _check_options(method, num_source, num_classes, many_to_one, mapping_interval, mapping_num)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # FM layer initialisation, without touching global RNG state
        model = ReprogrammedModel(backbone, prompt, num_source, num_classes, method == "fm",
                                  mapping_num)
    freeze(model.backbone)  # no weight gradients, eval-mode BatchNorm, whatever the caller did
    model.to(device)
    labels = train_labels.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = adam_multistep(params, epochs, lr)
    generator = torch.Generator().manual_seed(seed)
    history = TrainHistory()

    if method == "rlm":
        model.mapping.copy_(random_mapping(num_source, num_classes, seed, many_to_one,
                                           mapping_num))
    for epoch in range(epochs):
        start = time.perf_counter()
        changed = 0
        recompute = ((method == "ilm" and epoch % mapping_interval == 0)
                     or (method == "flm" and epoch == 0))
        if recompute:
            changed = _remap(model, train_images, train_labels, many_to_one, device, epoch)
        history.mappings.append(model.mapping.tolist())
        loss, accuracy = _train_epoch(model, train_images, labels, batch_size, generator,
                                      optimizer, device, epoch)
        record = {
            "epoch": epoch + 1,
            "loss": loss,
            "train_accuracy": accuracy,
            "lr": optimizer.param_groups[0]["lr"],
            "mapping_changes": changed,
            "mapping_recomputed": recompute,
            "seconds": time.perf_counter() - start,
        }
        if evaluate is not None:
            record["test_accuracy"] = evaluate(model)
        scheduler.step()
        history.epochs.append(record)
        if save_prompt_history:
            history.prompts.append(model.prompt.delta.detach().cpu().clone())
        if on_epoch is not None:
            on_epoch(record)
    return model, history
