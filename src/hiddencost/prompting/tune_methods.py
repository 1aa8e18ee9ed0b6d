"""Transfer methods that train inside the backbone and keep its compression: full fine-tuning
(``ft``), BitFit (``bitfit``) and LoRA (``lora``), each a fresh linear head on the penultimate
features trained jointly (:mod:`hiddencost.prompting.tuning`).

==========  =====================================================================  ==========
name        what trains (besides the head)                                         defaults
==========  =====================================================================  ==========
``ft``      every backbone weight and bias; a pruned backbone's zero set and a     Adam 1e-4,
            weight-quantized backbone's k-bit grid are kept                        wd 5e-4
            (:mod:`~hiddencost.prompting.keep_compression`)
``bitfit``  the biases only (BatchNorm folded: each convolution's bias carries     Adam 1e-3,
            its BatchNorm shift)                                                   wd 0
``lora``    rank-r adapters on every Linear and groups-1 Conv2d (depthwise ones    Adam 1e-3,
            skipped), unmerged; ``merge=true`` folds them into the weights after   wd 0, r 8,
            training, which a dense update makes dense (recorded, and warned)      α 8
``vpt``     prompt tokens in a Vision Transformer, deep (a set per block) or       Adam 1e-3,
            shallow (:mod:`~hiddencost.prompting.vpt`)                             wd 0, 10
                                                                                   tokens
==========  =====================================================================  ==========

Sources: ``ft`` follows ILM-VP's ``experiments/cnn/full_finetune.py`` (Adam lr 1e-4, weight decay
5e-4, cosine over the epochs; that script trains the 1000-way ImageNet head on labels 0..K−1 in
train mode with crop-and-flip augmentation, where this trains a fresh K-way head in eval mode
without augmentation, as LP does); the kept mask follows Iofinova et al., CVPR'22. ``bitfit``:
Ben Zaken et al., ACL'22 (lr 1e-4–1e-3). ``lora``: Hu et al., ICLR'22; r = α = 8 are PEFT's
defaults. ``vpt``: Jia et al., ECCV'22 (its Xavier-uniform init; 10 tokens, deep). The
backbone's own classifier is not used (the head replaces it) and never trains.
Each record's ``trained_backbone`` says what trained and what of the compression survived.
"""

from __future__ import annotations

import copy
import logging
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from hiddencost.prompting.keep_compression import (
    compressed_layers,
    finish,
    keep_compression,
    measure_kept,
)
from hiddencost.prompting.lora import add_lora, lora_targets, merge_lora
from hiddencost.prompting.methods import (
    METHODS,
    MethodOptions,
    ResizedInput,
    TransferJob,
    TransferOutcome,
    TransferSettings,
    Work,
)
from hiddencost.prompting.tuning import TunedClassifier, count, predict_tuned, train_tuned
from hiddencost.prompting.vpt import PromptedViT
from hiddencost.records import TrainedBackbone

log = logging.getLogger(__name__)

#: A backbone whose measured sparsity reaches this is "sparse": ``ft`` keeps its zero set by
#: default. A dense pretrained backbone holds a few exact zeros (under 0.1% here), never this.
SPARSE_AT = 0.01


class TuneOptions(MethodOptions):
    """What every method that trains inside the backbone reads."""

    weight_decay: float = Field(0.0, ge=0, description="Adam's L2 weight decay")
    augment: bool = Field(False, description="random left-right flips and shifts of up to 4 "
                          "px per training batch (light augmentation; ILM-VP's full_finetune "
                          "crops and flips)")


class FineTuneOptions(TuneOptions):
    weight_decay: float = Field(5e-4, ge=0, description="Adam's L2 weight decay (ILM-VP's "
                                "full_finetune: 5e-4)")
    keep_zeros: bool | None = Field(None, description="keep every zero weight at zero; None: "
                                    "when the backbone is sparse (measured sparsity ≥ 1%) and "
                                    "not weight-quantized (its zeros are grid values)")


class VPTOptions(TuneOptions):
    tokens: int = Field(10, ge=1, description="prompt tokens per set (VPT's lengths: 1–200)")
    deep: bool = Field(True, description="a fresh set before every block (VPT-deep) or one "
                       "before the first (shallow)")


class LoRAOptions(TuneOptions):
    rank: int = Field(8, ge=1, description="the adapters' rank r")
    alpha: float = Field(8.0, gt=0, description="the scale α (updates are α/r · B A)")
    merge: bool = Field(False, description="fold the adapters into the weights after "
                        "training (a dense update: a pruned backbone's zeros are lost)")


def _classifier_ids(backbone: nn.Module) -> set[int]:
    """The ``id`` of the backbone's own classifier (replaced by the head, never trained)."""
    get = getattr(backbone, "get_classifier", None)
    found = get() if callable(get) else None
    return {id(found)} if isinstance(found, nn.Module) else set()


class TuneMethod(ResizedInput):
    """A fresh head on a trainable copy of the backbone; subclasses say what else trains."""

    marker = "X"
    options: type[MethodOptions] = TuneOptions
    #: The protocol's weight decay is an option; its learning rate the class default.
    default_lr: ClassVar[float] = 1e-3
    #: Whether it trains the backbone's weights (then their compression is guarded while it
    #: trains, :func:`~hiddencost.prompting.keep_compression.keep_compression`).
    trains_weights: ClassVar[bool] = False

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        return Work(s.lp_image_size, s.epochs * n_train, n_test)

    def prepare(self, model: TunedClassifier, job: TransferJob) -> None:
        """Make what this method trains require grad (the head always does)."""
        raise NotImplementedError

    def conclude(self, model: TunedClassifier, job: TransferJob) -> bool:
        """After training: undo what :meth:`prepare` added; whether adapters were merged."""
        return False

    def learned(self, model: TunedClassifier) -> dict[str, torch.Tensor]:
        """The tensors saved in ``weights.safetensors``: what trained (``ft``: the head only;
        its backbone is as large as the model)."""
        return {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}

    def fit(self, job: TransferJob) -> TransferOutcome:
        s, task = job.settings, job.task
        backbone = copy.deepcopy(job.backbone)
        model = TunedClassifier(backbone, self.input_transform(s, job.mean, job.std),
                                task.num_classes, s.lp_image_size, s.seed)
        compressed = compressed_layers(backbone, job.compression)
        backbone_parameters = count(backbone.parameters())
        self.prepare(model, job)
        if self.trains_weights:
            keep_zeros = getattr(s.options, "keep_zeros", None)
            if keep_zeros is None:  # a quantized backbone's zeros are grid values, not a mask
                keep_zeros = compressed.bits is None and compressed.sparsity >= SPARSE_AT
            keep_compression(compressed, keep_zeros)
        trainable = count(p for p in model.parameters() if p.requires_grad)
        if job.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(job.device)
        history = train_tuned(model, task.train_images[job.subset], task.train_labels[job.subset],
                              s.epochs, s.batch_size, s.seed, job.device, s.lr,
                              s.options.weight_decay, job.precision, job.on_epoch, job.state,
                              s.options.augment)
        peak = (torch.cuda.max_memory_allocated(job.device) / 2**20
                if job.device.type == "cuda" else None)
        tensors = self.learned(model)
        finish(compressed)
        merged = self.conclude(model, job)
        kept = measure_kept(compressed)
        logits = predict_tuned(model, task.test_images, job.device)
        held = None if job.validation is None else predict_tuned(
            model, task.train_images[job.validation], job.device)
        report = TrainedBackbone(
            trainable_parameters=trainable, backbone_parameters=backbone_parameters,
            sparsity_before=kept.sparsity_before, sparsity_after=kept.sparsity_after,
            zero_set_kept=kept.zero_set_kept,
            max_distinct_values_per_channel=kept.max_distinct_values_per_channel,
            bits_kept=kept.bits_kept, merged=merged, peak_memory_mb=peak)
        return TransferOutcome(logits, history, tensors, validation_logits=held,
                               trained_backbone=report)


class FineTune(TuneMethod):
    """Every backbone weight and bias trains; the compression is kept (see the module)."""

    name = "ft"
    description = "full fine-tuning with a fresh head; a pruned zero set / k-bit grid kept"
    display_name = "FT"
    marker = "X"
    default_lr = 1e-4
    options = FineTuneOptions
    trains_weights = True

    def prepare(self, model: TunedClassifier, job: TransferJob) -> None:
        skip = _classifier_ids(model.backbone)
        for module in model.backbone.modules():
            if id(module) not in skip:
                for p in module.parameters(recurse=False):
                    p.requires_grad_(True)

    def learned(self, model: TunedClassifier) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v.detach().cpu() for k, v in model.head.state_dict().items()}


class BitFit(TuneMethod):
    """The biases of the backbone train (BatchNorm folded: the convolutions' biases)."""

    name = "bitfit"
    description = "BitFit: the backbone's biases and a fresh head train"
    display_name = "BitFit"
    marker = "h"

    def prepare(self, model: TunedClassifier, job: TransferJob) -> None:
        skip = _classifier_ids(model.backbone)
        for module in model.backbone.modules():
            bias = getattr(module, "bias", None)
            if id(module) not in skip and isinstance(bias, nn.Parameter):
                bias.requires_grad_(True)


class LoRA(TuneMethod):
    """Rank-r adapters on the backbone's Linear and groups-1 Conv2d layers."""

    name = "lora"
    description = "LoRA adapters (rank r) on Linear and Conv2d layers, unmerged by default"
    display_name = "LoRA"
    marker = "*"
    options = LoRAOptions

    def prepare(self, model: TunedClassifier, job: TransferJob) -> None:
        o = job.settings.options
        targets, skipped = lora_targets(model.backbone, _classifier_ids(model.backbone))
        if skipped:
            log.info("LoRA skips %d grouped convolutions (%s, …)", len(skipped), skipped[0])
        add_lora(model.backbone, targets, o.rank, o.alpha, job.settings.seed)

    def conclude(self, model: TunedClassifier, job: TransferJob) -> bool:
        if not job.settings.options.merge:
            return False
        merge_lora(model.backbone)
        if job.compression.sparsity or job.compression.weight_bits:
            log.warning("LoRA merged into a compressed backbone: the dense update undoes its "
                        "%s (see trained_backbone in the record)", job.compression.label)
        return True


class VisualPromptTuning(TuneMethod):
    """Prompt tokens in a frozen Vision Transformer (:mod:`hiddencost.prompting.vpt`)."""

    name = "vpt"
    description = "visual prompt tuning: shallow or deep prompt tokens in a frozen ViT"
    display_name = "VPT"
    marker = "p"
    options = VPTOptions

    def prepare(self, model: TunedClassifier, job: TransferJob) -> None:
        o = job.settings.options
        model.backbone = PromptedViT(model.backbone, o.tokens, o.deep, job.settings.seed)

    def conclude(self, model: TunedClassifier, job: TransferJob) -> bool:
        model.backbone = model.backbone.vit  # measured and kept as it was: frozen
        return False


#: The methods of this module, registered in :data:`~hiddencost.prompting.methods.METHODS`.
TUNE_METHODS: tuple[TuneMethod, ...] = (FineTune(), BitFit(), LoRA(), VisualPromptTuning())
for _method in TUNE_METHODS:
    METHODS.add(_method.name, _method)
