"""Visual prompting of CLIP: the frame prompt, the class scores and the training loop.

Protocol (Bahng et al. 2022; ILM-VP's CLIP scripts; the paper §3.2.2): the [0, 1] image is
resized to the model's input size and CLIP-normalised, then an additive frame prompt
x′ = x + δ ⊙ M (δ zero-initialised, M = 1 on a border of ``pad`` = 30 px, no sigmoid) is added
to the *normalised* image. Class scores are s_j = logit_scale · cos(f(x′), t_j) over the text
table's columns (logit_scale frozen, ≤ 100). ``vp``: one column per class. ``ilm``: 81 columns
per class; at the start of every epoch e with e mod k = 0 the greedy frequency mapping (the CNN
path's :func:`~hiddencost.prompting.label_mapping.frequency_mapping`) picks one of the T·K
columns per class, any column (the reference's behaviour) or, ``restrict_templates``, one of the
class's own T columns (:func:`own_template_mapping`). SGD lr 40, momentum 0.9, cosine schedule
stepped per iteration over all steps, batch 16, cross-entropy on the K selected scores.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.precision import exact, training
from hiddencost.prompting.label_mapping import frequency_mapping
from hiddencost.prompting.run_state import StateFile
from hiddencost.prompting.schedule import EpochSums, descend, epoch_batches, sgd_cosine
from hiddencost.prompting.visual_prompt import TrainHistory, resident, to_unit
from hiddencost.records import EpochRecord

#: The frame width of Bahng et al.'s padding prompt.
CLIP_PAD = 30
CLIP_LR = 40.0
CLIP_BATCH = 16


class FramePrompt(nn.Module):
    """x + δ ⊙ M on normalised images: δ (3, S, S) zero-initialised, M = 1 on the outer ``pad``
    pixels of every side and 0 inside (the whole image when S = 2·pad)."""

    def __init__(self, size: int, pad: int = CLIP_PAD) -> None:
        super().__init__()
        if 2 * pad > size:
            raise HiddenCostError(f"a {pad}-px frame does not fit a {size}-px image")
        mask = torch.ones(1, size, size)
        mask[:, pad:size - pad, pad:size - pad] = 0
        self.register_buffer("mask", mask)
        self.delta = nn.Parameter(torch.zeros(3, size, size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.delta * self.mask


def clip_scores(towers: nn.Module, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """logit_scale · cos(f(x), t_j) for every column t_j of the unit-norm ``text`` table; the
    image tower runs in the caller's precision, the scores in fp32 (with scale 100, bf16 would
    flip the argmax over ILM's 810 columns for 16% of images)."""
    features = towers(x)
    with exact(x.device):
        image = F.normalize(features.float(), dim=-1)
        return towers.logit_scale.float() * image @ text.float().t()


def own_template_mapping(scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                         num_templates: int) -> torch.Tensor:
    """``--restrict-templates``: per class k, the template whose column t·K + k scores highest
    (among the class's own T columns) on most of the class's training images; ties and classes
    absent from the subset take the lowest template (the default one). Returns the K columns."""
    own = scores.view(len(scores), num_templates, num_classes)  # [n, t, k] = column t·K + k
    columns = []
    for k in range(num_classes):
        rows = own[labels == k, :, k]
        counts = torch.bincount(rows.argmax(1), minlength=num_templates) if len(rows) else \
            torch.zeros(num_templates, dtype=torch.long)
        columns.append(int(counts.argmax()) * num_classes + k)  # argmax: first of the maxima
    return torch.tensor(columns)


def column_mapping(scores: torch.Tensor, labels: torch.Tensor, num_classes: int,
                   num_templates: int, restrict: bool) -> torch.Tensor:
    """The K columns ILM maps the classes to: greedy frequency mapping over all T·K columns
    (top-1 column of each image against its label), or :func:`own_template_mapping`."""
    if restrict:
        return own_template_mapping(scores, labels, num_classes, num_templates)
    return frequency_mapping(scores.argmax(1), labels, scores.shape[1], num_classes)


@torch.inference_mode()
def clip_predict(towers: nn.Module, prompt: nn.Module | None, preprocess: nn.Module,
                 images_u8: torch.Tensor, text: torch.Tensor, device: torch.device,
                 batch_size: int = 256) -> torch.Tensor:
    """Scores (float32, CPU) of all text columns for uint8 images, prompted or not; in fp32
    (they choose ILM's columns and are the test scores)."""
    out = []
    with exact(device):
        for chunk in images_u8.split(batch_size):
            x = preprocess(to_unit(chunk, device))
            out.append(clip_scores(towers, prompt(x) if prompt is not None else x, text)
                       .float().cpu())
    return torch.cat(out)


@dataclass
class ClipPromptRun:
    """One CLIP prompt run: its training subset, text table, how columns are chosen
    (``num_templates`` T = 1: the identity; T > 1: ILM, re-mapped every ``mapping_interval``
    epochs) and the schedule."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    text: torch.Tensor
    num_classes: int
    num_templates: int
    epochs: int
    batch_size: int
    seed: int
    lr: float = CLIP_LR
    mapping_interval: int = 1
    restrict_templates: bool = False
    on_epoch: Callable[[EpochRecord], None] | None = None
    #: Where the run saves its state at every epoch end and resumes from (None: it does not).
    state: StateFile | None = None


def train_clip_prompt(towers: nn.Module, preprocess: nn.Module, run: ClipPromptRun,
                      device: torch.device, precision: torch.dtype | None = None,
                      evaluate: Callable[[FramePrompt, torch.Tensor], float] | None = None,
                      ) -> tuple[FramePrompt, torch.Tensor, TrainHistory]:
    """Train a frame prompt on a frozen CLIP; returns it, the final K columns and the history
    (per epoch: loss, training accuracy, the lr of its last step, mapping changes / recomputed;
    ``history.mappings`` the columns used in each epoch). ``precision``: the autocast dtype of
    the image tower in training steps (None: fp32); the scores are fp32 regardless. With
    ``run.state`` the run saves its state at every epoch end and resumes from it (see
    :mod:`hiddencost.prompting.run_state`). ``evaluate(prompt, columns)``, when given, is called
    after every epoch and its value recorded as the epoch's ``test_accuracy`` (curves only)."""
    prompt = FramePrompt(towers.image_size).to(device)
    text = run.text.to(device)
    labels = run.train_labels.to(device)
    images = resident(run.train_images, device)
    generator = torch.Generator().manual_seed(run.seed)
    steps = run.epochs * -(-len(labels) // run.batch_size)
    optimizer, scheduler = sgd_cosine([prompt.delta], steps, run.lr)
    columns = torch.arange(run.num_classes, device=device)
    history = TrainHistory()
    saved = run.state.load() if run.state is not None else None
    if saved is not None:
        prompt.load_state_dict(saved["prompt"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        columns = saved["columns"].to(device)
        history = TrainHistory([EpochRecord(**r) for r in saved["epochs"]], [],
                               list(saved["mappings"]))
    for epoch in range(0 if saved is None else int(saved["next_epoch"]), run.epochs):
        start = time.perf_counter()
        remap = run.num_templates > 1 and epoch % run.mapping_interval == 0
        changes = 0
        if remap:
            scores = clip_predict(towers, prompt, preprocess, images, text, device)
            new = column_mapping(scores, run.train_labels, run.num_classes, run.num_templates,
                                 run.restrict_templates).to(device)
            changes = int((new != columns).sum()) if epoch else run.num_classes
            columns = new
        history.mappings.append(columns.tolist())
        sums = EpochSums(device)  # no host-device sync per step: see EpochSums
        for idx in epoch_batches(len(labels), run.batch_size, generator, images.device):
            x = preprocess(to_unit(images[idx], device))
            y = labels[idx]
            with training(device, precision):
                logits = clip_scores(towers, prompt(x), text)[:, columns]
            loss = F.cross_entropy(logits.float(), y)
            lr = optimizer.param_groups[0]["lr"]
            descend(optimizer, loss, epoch, check_finite=False)
            scheduler.step()
            sums.add(loss, logits, y)
        sums.check(epoch)
        total, correct = sums.values()
        record = EpochRecord(epoch=epoch + 1, loss=total / len(labels),
                             train_accuracy=correct / len(labels), lr=lr,
                             mapping_changes=changes, mapping_recomputed=remap,
                             seconds=time.perf_counter() - start,
                             test_accuracy=None if evaluate is None else evaluate(prompt, columns))
        history.epochs.append(record)
        if run.state is not None:
            run.state.save({"next_epoch": epoch + 1, "prompt": prompt.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(),
                            "generator": generator.get_state(), "columns": columns.cpu(),
                            "epochs": [r.model_dump() for r in history.epochs],
                            "mappings": history.mappings})
        if run.on_epoch is not None:
            run.on_epoch(record)
    return prompt, columns.cpu(), history
