"""Training a cross-modal reprogram (Neekhara et al., WACV 2022) on a frozen vision backbone.

The model (:class:`CrossModalReprogram`) is tokens → :class:`~hiddencost.prompting.crossmodal.
TokenPatches` → :func:`~hiddencost.prompting.crossmodal.tile_patches` → the canvas read as a
normalised image (:func:`~hiddencost.prompting.crossmodal.canvas_to_input`) → frozen backbone →
m source logits per class reduced by max (or mean). Only the token table is trained.

Protocol (the reference's): Adam, learning rate 1e-3, batch 4, loss CE + α‖δ‖₂/N
(:func:`~hiddencost.prompting.crossmodal.xmr_loss`), a fixed number of epochs over the training
subset in a seeded order, and the **final** model evaluated on the whole test split (the
reference keeps the best of up to 100 test batches; this never looks at the test split while
training). The sources are fixed before training from the backbone's logits on one seeded random
image, the reference's ``2·U[0, 1) − 1`` fed as the already *normalised* input (for mean = std =
0.5 the same as uniform pixels normalised; for ImageNet's mean/std another image), as
:func:`~hiddencost.prompting.crossmodal.round_robin_sources` deals them; when K·m exceeds the
backbone's classes, a :class:`~hiddencost.prompting.crossmodal.SoftmaxRemapper` is trained with
the table instead (:func:`output_mapping`). The reference seeds that image with
:data:`REFERENCE_MAPPING_SEED` whatever the run; a run uses its own seed unless its
``mapping_seed`` option says ``reference``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from hiddencost.frozen import freeze
from hiddencost.precision import exact, training
from hiddencost.prompting.crossmodal import (
    DEFAULT_ALPHA,
    REPEAT_LAST,
    SlotLayout,
    SoftmaxRemapper,
    TokenPatches,
    canvas_to_input,
    check_lengths,
    needs_remapper,
    reduce_mapped,
    round_robin_sources,
    tile_patches,
    xmr_loss,
)
from hiddencost.prompting.run_state import StateFile
from hiddencost.prompting.schedule import EpochSums, descend, epoch_batches
from hiddencost.prompting.visual_prompt import TrainHistory, resident
from hiddencost.records import EpochRecord

__all__ = ["REFERENCE_MAPPING_SEED", "CrossModalReprogram", "mapping_image", "output_mapping",
           "predict_xmr", "seeded_logits", "seeded_sources", "train_xmr"]

#: The reference's optimiser settings and patch size.
XMR_LR = 1e-3
XMR_BATCH = 4
XMR_PATCH = 16
#: The seed of the reference's label-mapping image (``torch.manual_seed(42)``), for any run.
REFERENCE_MAPPING_SEED = 42


def mapping_image(canvas: int, seed: int) -> torch.Tensor:
    """The reference's label-mapping image: ``2·U[0, 1) − 1``, (1, 3, C, C), drawn from a CPU
    generator seeded with ``seed`` (the same numbers as its ``torch.manual_seed(seed)`` then
    ``torch.rand(3, C, C)``) and read as an already normalised input."""
    generator = torch.Generator().manual_seed(seed)
    return 2 * torch.rand(1, 3, canvas, canvas, generator=generator) - 1.0


def seeded_logits(backbone: nn.Module, canvas: int, seed: int,
                  device: torch.device) -> torch.Tensor:
    """(K′,) float32 CPU logits of the backbone on :func:`mapping_image`."""
    with torch.inference_mode(), exact(device):  # it picks the sources: fp32
        return backbone(mapping_image(canvas, seed).to(device)).float().cpu()[0]


def seeded_sources(backbone: nn.Module, canvas: int, num_classes: int, per_class: int,
                   seed: int, device: torch.device) -> torch.Tensor:
    """(K, m) source classes from the backbone's logits on one seeded random image."""
    return round_robin_sources(seeded_logits(backbone, canvas, seed, device), num_classes,
                               per_class)


def output_mapping(backbone: nn.Module, canvas: int, num_classes: int, per_class: int,
                   seed: int, device: torch.device, remapper_seed: int | None = None,
                   ) -> tuple[torch.Tensor | None, SoftmaxRemapper | None]:
    """``(sources, None)`` as :func:`seeded_sources` deals them (from the image of ``seed``)
    when K·m ≤ K′, else ``(None, remapper)``: a :class:`SoftmaxRemapper` K′ → K seeded with
    ``remapper_seed`` (default ``seed``)."""
    logits = seeded_logits(backbone, canvas, seed, device)
    if needs_remapper(num_classes, per_class, len(logits)):
        return None, SoftmaxRemapper(len(logits), num_classes,
                                     seed if remapper_seed is None else remapper_seed)
    return round_robin_sources(logits, num_classes, per_class), None


class CrossModalReprogram(nn.Module):
    """Token ids and lengths → K class scores through a frozen backbone (see the module): the
    (K, m) ``sources`` reduced by max (or mean), or, with ``sources=None``, the trainable
    ``remapper``. ``vocab_size`` is the token table's row count (the vocabulary and the
    ``layout``'s extra tokens, see :func:`~hiddencost.prompting.crossmodal.slot_layout`);
    ``token_ids``, when given, the rows actually kept (see
    :class:`~hiddencost.prompting.crossmodal.TokenPatches`)."""

    def __init__(self, backbone: nn.Module, sources: torch.Tensor | None, vocab_size: int,
                 canvas: int, mean: tuple[float, ...], std: tuple[float, ...],
                 patch: int = XMR_PATCH,
                 reduce: Literal["max", "mean"] = "max", seed: int = 0,
                 remapper: SoftmaxRemapper | None = None,
                 layout: SlotLayout = REPEAT_LAST,
                 token_ids: torch.Tensor | None = None) -> None:
        super().__init__()
        if (sources is None) == (remapper is None):
            raise ValueError("give either sources or a remapper")
        self.backbone = backbone
        self.patches = TokenPatches(vocab_size, patch, seed, token_ids)
        self.register_buffer("sources", None if sources is None else sources.clone())
        self.remapper = remapper
        self.canvas, self.mean, self.std, self.reduce = canvas, mean, std, reduce
        self.layout = layout

    def trainable(self) -> list[nn.Parameter]:
        """What training updates: the token table, and the remapper when there is one."""
        extra = [] if self.remapper is None else list(self.remapper.parameters())
        return [*self.patches.parameters(), *extra]

    def learned_tensors(self) -> dict[str, torch.Tensor]:
        """The trained tensors by name, on the CPU, for the run's artifacts."""
        out = {"patches.table": self.patches.table.detach().cpu()}
        if self.patches.token_ids is not None:  # which token each row of the table is
            out["patches.token_ids"] = self.patches.token_ids.cpu()
        if self.remapper is not None:
            out |= {f"remapper.{k}": v.detach().cpu()
                    for k, v in self.remapper.linear.state_dict().items()}
        return out

    def perturbation(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The (B, 3, C, C) canvases δ the tokens become (lengths ≥ 1, checked by the callers
        once: no sync per step)."""
        slots = (self.canvas // self.patches.patch) ** 2
        ids, lengths = self.layout.arrange(tokens, lengths, slots)
        return tile_patches(self.patches(ids), lengths, self.canvas, check=False)

    def backbone_logits(self, delta: torch.Tensor) -> torch.Tensor:
        """The backbone's K′ logits for canvases δ (in the caller's precision)."""
        return self.backbone(canvas_to_input(delta, self.mean, self.std))

    def map_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """K class scores from K′ logits, in fp32 (see :mod:`hiddencost.precision`)."""
        with exact(logits.device):
            if self.remapper is not None:
                return self.remapper(logits.float())
            return reduce_mapped(logits.float(), self.sources, self.reduce)

    def scores(self, delta: torch.Tensor) -> torch.Tensor:
        return self.map_scores(self.backbone_logits(delta))

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.scores(self.perturbation(tokens, lengths))


def train_xmr(model: CrossModalReprogram, tokens: torch.Tensor, lengths: torch.Tensor,
              labels: torch.Tensor, epochs: int, device: torch.device, seed: int = 0,
              lr: float = XMR_LR, batch_size: int = XMR_BATCH, alpha: float = DEFAULT_ALPHA,
              on_epoch: Callable[[EpochRecord], None] | None = None,
              max_steps: int | None = None,
              precision: torch.dtype | None = None,
              state: StateFile | None = None,
              evaluate: Callable[[], float] | None = None) -> TrainHistory:
    """Train ``model``'s token table (and remapper) on (tokens, lengths, labels) for ``epochs``
    epochs, or until ``max_steps`` optimiser steps when that comes first (the reference's
    ``num_epochs`` 100 and ``max_iterations`` 100,000); the backbone stays frozen (no weight
    gradients, eval mode). The history has per epoch (a cut-short last epoch too) the mean
    training loss and accuracy over the examples it saw, the learning rate, the steps so far
    and the seconds. ``precision``: the autocast dtype of the backbone pass in training steps
    (None: fp32); the mapped scores and the loss are fp32 regardless. With ``state`` the run
    saves its state at every epoch end and resumes from it (see
    :mod:`hiddencost.prompting.run_state`). ``evaluate()``, when given, is called after every
    epoch and its value recorded as the epoch's ``test_accuracy`` (learning curves only)."""
    check_lengths(lengths)
    freeze(model.backbone)
    model.to(device)
    optimizer = torch.optim.Adam(model.trainable(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    history = TrainHistory()
    steps, first = 0, 0
    saved = state.load() if state is not None else None
    if saved is not None:
        model.load_state_dict(saved["model"], strict=False)
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        history = TrainHistory([EpochRecord(**r) for r in saved["epochs"]])
        steps, first = int(saved["steps"]), int(saved["next_epoch"])
    # on the device once, so a step copies nothing from pageable host memory
    tokens, lengths, labels = (resident(t, device) for t in (tokens, lengths, labels))
    for epoch in range(first, epochs):
        if max_steps is not None and steps >= max_steps:
            break
        start, sums = time.perf_counter(), EpochSums(device)  # no sync per step: EpochSums
        for idx in epoch_batches(len(labels), batch_size, generator, tokens.device):
            if max_steps is not None and steps >= max_steps:
                break
            steps += 1
            x, n, y = (t[idx].to(device, non_blocking=True) for t in (tokens, lengths, labels))
            delta = model.perturbation(x, n)
            with training(device, precision):
                logits = model.backbone_logits(delta)
            scores = model.map_scores(logits)
            loss = xmr_loss(scores, y, delta, alpha)
            descend(optimizer, loss, epoch, check_finite=False)
            sums.add(loss, scores, y)
        sums.check(epoch)
        total, correct = sums.values()
        seen = sums.seen
        seconds = time.perf_counter() - start  # training only, as the test pass is optional
        record = EpochRecord(epoch=epoch + 1, loss=total / seen, train_accuracy=correct / seen,
                             lr=lr, seconds=seconds, steps=None if max_steps is None else steps,
                             test_accuracy=None if evaluate is None else evaluate())
        history.epochs.append(record)
        if state is not None:
            state.save({"next_epoch": epoch + 1, "steps": steps,
                        "model": {k: v for k, v in model.state_dict().items()
                                  if not k.startswith("backbone.")},
                        "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                        "epochs": [r.model_dump() for r in history.epochs]})
        if on_epoch is not None:
            on_epoch(record)
    return history


def predict_xmr(model: CrossModalReprogram, tokens: torch.Tensor, lengths: torch.Tensor,
                device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """(N, K) float32 CPU scores of the whole split, in order."""
    check_lengths(lengths)
    model.eval()
    out = []
    with torch.inference_mode(), exact(device):
        for start in range(0, len(tokens), batch_size):
            sl = slice(start, start + batch_size)
            out.append(model(tokens[sl].to(device), lengths[sl].to(device)).float().cpu())
    return torch.cat(out)
