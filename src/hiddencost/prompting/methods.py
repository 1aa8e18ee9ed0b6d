"""Transfer methods as registered objects: each owns its input transformation, its output mapping
and its training loop, so :func:`hiddencost.run.run_one` looks a method up instead of branching.

==========  =================================================================================
name        method
==========  =================================================================================
``ilm``     VP, pad prompt + iterative label mapping (recomputed every epoch; ILM-VP)
``flm``     VP, pad prompt + frequency label mapping (computed once, initial prompt)
``rlm``     VP, pad prompt + random label mapping (seeded, fixed)
``fm``      VP, pad prompt + a trainable fully-connected mapping K' → K (AutoVP)
``blm``     VP, pad prompt + Bayesian-guided label mapping (a K' × K weight matrix)
``blm+``    VP, pad prompt + BLM over the top-k source probabilities
``smm``     VP, sample-specific masked prompt over the resized image + ILM (Cai et al. 2024)
``lp``      linear probing: a linear head on cached penultimate features
``xmr``     cross-modal reprogramming of sequence tasks (text, DNA; Neekhara et al. 2022)
==========  =================================================================================

A new method implements :class:`TransferMethod` and is added to :data:`METHODS` (the methods of
classifier backbones) once; CLIP's are in :mod:`hiddencost.prompting.clip_methods`; a new VP
label mapping is a :mod:`~hiddencost.prompting.mappings` strategy plus one
:class:`VisualPrompting` registration. A method says which data it reads (``modality``: image
or sequence tasks), its protocol's defaults (learning rate, batch size, sources per class), how
it is shown (``display_name``, ``marker``), whether it learns an input prompt, and what it puts
through the backbone (:meth:`TransferMethod.work`, for ``study plan``). Nothing outside a
method's own module branches on its name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from hiddencost.compression.spec import CompressionSpec, Dense
from hiddencost.data import TaskData, batch_size_for
from hiddencost.data.sequences import SequenceTask
from hiddencost.data.transforms import ResizeNormalize
from hiddencost.prompting.crossmodal import (
    SlotLayout,
    TokenPatches,
    canvas_to_input,
    slot_layout,
    tile_patches,
    used_token_ids,
)
from hiddencost.prompting.crossmodal_train import (
    REFERENCE_MAPPING_SEED,
    XMR_BATCH,
    XMR_LR,
    XMR_PATCH,
    CrossModalReprogram,
    output_mapping,
    predict_xmr,
    train_xmr,
)
from hiddencost.prompting.label_mapping import MappingList
from hiddencost.prompting.linear_probe import extract_features, train_linear_head
from hiddencost.prompting.mappings import MAPPINGS
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.run_state import StateFile
from hiddencost.prompting.smm import SampleMaskPrompt
from hiddencost.prompting.visual_prompt import (
    PromptRun,
    ReprogrammedModel,
    TrainHistory,
    VPMethod,
    packed_predict_logits,
    predict_logits,
    to_unit,
    train_visual_prompts,
)
from hiddencost.records import EpochRecord, TrainedBackbone
from hiddencost.registry import Registry

__all__ = [
    "METHODS",
    "LinearProbe",
    "Memo",
    "MethodOptions",
    "PackMember",
    "TransferJob",
    "TransferMethod",
    "TransferOutcome",
    "TransferSettings",
    "VisualPrompting",
    "Work",
]

#: ``memo(compute, *key)``: the cached value for this run's backbone and task (and ``key``, what
#: else the value depends on), or ``compute()`` stored under it.
Memo = Callable[..., Any]


class MethodOptions(BaseModel):
    """A transfer method's own options: part of a run's identity (``options`` in its
    configuration and record), given as keyword arguments of a run, a study's ``params`` or
    ``hiddencost run --set KEY=VALUE``. A method declares its model
    (:attr:`TransferMethod.options`); this base has none. Adding an option is one field here
    or in a subclass: validation, the defaults in the record and the run key follow. An option
    added to a method that already has runs is named in :attr:`OPTIONAL` with a None default:
    left unset it is not part of the identity, so earlier runs keep their keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)
    #: Options that are part of the identity only when set (not None).
    OPTIONAL: ClassVar[tuple[str, ...]] = ()


class VPOptions(MethodOptions):
    """Pad-prompt VP with a label mapping (ILM-VP's options)."""

    mapping_interval: int = Field(1, ge=1, description="ILM: re-map every k epochs")
    mapping_num: int = Field(1, ge=1, description="source classes per target, their logits "
                             "averaged (fm: 1 only)")
    prompt_init: Literal["zero", "randn"] = Field("zero", description="δ = 0 or seeded N(0, 1)")
    many_to_one: bool = Field(False, description="allow K > K' by reusing source classes")
    test_every_epoch: bool = Field(False, description="record the test accuracy after every "
                                   "epoch (curves only; the result is the final epoch's)")
    augment: Literal["trivial"] | None = Field(None, description="TrivialAugment of every "
                                               "training batch (the strong-VP arm; AutoVP)")

    OPTIONAL: ClassVar[tuple[str, ...]] = ("augment",)


class BLMOptions(VPOptions):
    """BLM / BLM+ (Bayesian-guided label mapping): VP's options and the weight matrix's."""

    laplace: float = Field(1.0, ge=0, description="Laplace term λ of the row sums "
                           "(BayesianLM's cfg: 1)")
    topk_ratio: float = Field(0.15, gt=0, le=1, description="BLM+: k = max(1, ⌊ratio·K⌋) "
                              "source probabilities per example (BayesianLM's cfg: 0.15)")


class SMMOptions(VPOptions):
    """SMM: VP's options and the mask generator's patch size."""

    patch_size: Literal[1, 2, 4, 8, 16] = Field(8, description="pixels per mask value (the "
                                                 "reference's default: 8)")


class CrossModalOptions(MethodOptions):
    """Cross-modal reprogramming (Neekhara et al.)."""

    mapping_num: int = Field(10, ge=1, description="source classes per target, reduced by max")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimiser "
                                  "steps (the reference's max_iterations); None: all epochs")
    padding: Literal["pad", "repeat-last"] = Field(
        "pad", description="slots past a sequence's end: a trainable pad patch (the "
        "reference's; word pieces framed by [CLS] … [SEP]) or its last token repeated")
    mapping_seed: Literal["run", "reference"] = Field(
        "run", description="seed of the random image that picks the sources: the run's, or "
        "the reference's fixed 42")
    test_every_epoch: bool = Field(False, description="record the test accuracy after every "
                                   "epoch (curves only; the result is the final epoch's)")


@dataclass(frozen=True)
class TransferSettings:
    """The resolved hyper-parameters a method reads (a view of the run's configuration): the
    common ones, and the method's own :class:`MethodOptions` as ``options``."""

    epochs: int
    lr: float
    batch_size: int
    seed: int
    canvas_size: int
    inner_size: int
    lp_image_size: int
    save_prompt_history: bool = False
    options: Any = field(default_factory=MethodOptions)


@dataclass
class TransferJob:
    """Everything one method needs to train and evaluate: the prepared frozen backbone with its
    ``num_source`` classes and normalisation, the task and the training subset's indices, the
    settings, the device, a per-epoch callback and a memo for reusable work (LP features)."""

    backbone: nn.Module
    num_source: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    task: TaskData | SequenceTask
    subset: torch.Tensor
    settings: TransferSettings
    device: torch.device
    on_epoch: Callable[[EpochRecord], None] | None = None
    memo: Memo = field(default=lambda compute, *key: compute())
    #: The autocast dtype of training steps (None: fp32): see :mod:`hiddencost.precision`.
    precision: torch.dtype | None = None
    #: Where a method that supports it saves its state at epoch ends and resumes from
    #: (:mod:`hiddencost.prompting.run_state`); None: the run is not resumable.
    state: StateFile | None = None
    #: Indices of the training split held out for validation (never trained on): the method
    #: scores them too (:attr:`TransferOutcome.validation_logits`); None: no validation split.
    validation: torch.Tensor | None = None
    #: The backbone's compression (methods that train its weights keep it).
    compression: CompressionSpec = field(default_factory=Dense)


@dataclass
class TransferOutcome:
    """What a method produced: test logits (float32, CPU, K columns in target order), the
    training history, the label mapping (per target one source index, or a list of ``m``
    sources with ``mapping_num = m > 1``; None when the method has no index mapping), its
    per-epoch history, the learned tensors to save, and the names of the source columns the
    mapping indexes when they are not the backbone's classes (CLIP: the column texts)."""

    logits: torch.Tensor
    history: TrainHistory
    tensors: dict[str, torch.Tensor]
    mapping: MappingList | None = None
    mapping_history: list[MappingList] | None = None
    source_names: list[str] | None = None
    #: The logits of the job's validation examples (same columns), when it has them.
    validation_logits: torch.Tensor | None = None
    #: Methods that train the backbone: what trained and what of the compression survived.
    trained_backbone: TrainedBackbone | None = None
    #: A prompt with more than δ (SMM's mask generator): the parameters it trained.
    prompt_parameters: int | None = None


@dataclass(frozen=True)
class Work:
    """What one run puts through the backbone, in images at ``input_size``: ``train`` through
    training steps (forward and the gradient to the input), ``forward`` through inference-only
    passes (mapping passes, the test split). ``shared_forward``: the forward work is the
    task's features, computed once per backbone, compression and task and shared by the runs
    that read them (LP)."""

    input_size: int
    train: int
    forward: int
    shared_forward: bool = False


class TransferMethod(ABC):
    """One registered way of adapting a frozen backbone to a task."""

    name: str
    description: str
    #: How figures and tables name it (``ILM-VP``) and the marker of its points.
    display_name: str = ""
    marker: str = "o"
    #: Whether it learns an input prompt (δ in ``weights.safetensors``; prompt analyses).
    learns_prompt: ClassVar[bool] = False
    #: The tasks it reads: ``image`` (:class:`TaskData`) or ``sequence`` (:class:`SequenceTask`).
    modality: ClassVar[str] = "image"
    #: The protocol's learning rate, when a run leaves it unset.
    default_lr: ClassVar[float] = 0.01
    #: The method's own options (see :class:`MethodOptions`; none by default).
    options: type[MethodOptions] = MethodOptions

    def default_batch_size(self, n_shot: int | None) -> int:
        """The protocol's batch size for ``n_shot`` examples per class (the ILM-VP table)."""
        return batch_size_for(n_shot)

    def calibration_inputs(self, task: TaskData | SequenceTask, subset: torch.Tensor,
                           s: TransferSettings, mean: tuple[float, ...], std: tuple[float, ...],
                           limit: int) -> torch.Tensor:
        """Normalised backbone inputs of the first ``limit`` training examples, as this method
        first feeds them (activation quantizers calibrate on them)."""
        transform = self.input_transform(s, mean, std)
        with torch.no_grad():
            return transform(to_unit(task.train_images[subset][:limit], torch.device("cpu")))

    @abstractmethod
    def stored_image_size(self, s: TransferSettings) -> int:
        """The size the task's images are kept at in memory for this method."""

    def image_fit(self, s: TransferSettings) -> str:
        """How the task's images are brought to that size (:data:`hiddencost.data.images.FITS`):
        ``squash`` (ILM-VP's resize) unless the method says otherwise."""
        return "squash"

    @abstractmethod
    def input_size(self, s: TransferSettings) -> int:
        """The backbone's input size under this method (for the prepared backbone's probe)."""

    @abstractmethod
    def input_transform(self, s: TransferSettings, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> nn.Module:
        """[0, 1] images → normalised backbone inputs, as this method feeds them (the initial
        transform for methods that learn it; activation quantizers calibrate on its output)."""

    @abstractmethod
    def fit(self, job: TransferJob) -> TransferOutcome:
        """Train on the job's subset, evaluate on the whole test split (final epoch)."""

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        """The backbone work of a run on ``n_train`` training examples (the task's pool holds
        ``n_pool``, its test split ``n_test``). By default a prompt method's: E·n training
        images and the test split forward."""
        return Work(self.input_size(s), s.epochs * n_train, n_test)

    def pack_key(self, s: TransferSettings) -> Hashable | None:
        """Runs whose methods give equal keys (and that share backbone, compression and task)
        may train together in one :meth:`fit_pack`; None: this method trains each run alone."""
        return None

    def fit_pack(self, members: Sequence[PackMember]) -> list[TransferOutcome]:
        """Fit several runs that share one backbone (equal :meth:`pack_key`), each with its own
        method and job; the outcomes equal those of :meth:`fit` on each alone. By default they
        simply run one after the other."""
        return [method.fit(job) for method, job in members]


def resized_storage(inner_size: int, input_size: int) -> int:
    """The stored size of a task whose images are resized to ``input_size`` per batch: 32-px
    tasks (CIFAR-10, SVHN, GTSRB, digits) are natively that small, so storing them larger gains
    nothing; larger-image tasks are stored at the input size."""
    return min(inner_size, input_size) if inner_size <= 32 else input_size


#: One run of a pack: its method (ilm, flm, … may mix in a VP pack) and its job.
PackMember = tuple[TransferMethod, TransferJob]


class VisualPrompting(TransferMethod):
    """Pad prompt (ILM-VP's "expansive" prompt) with one of the label mappings.

    Reads ``prompt_init`` (δ = 0 or N(0, 1) seeded with ``seed``), ``mapping_interval`` (ILM
    only) and ``mapping_num`` (sources per target; fm refuses ≠ 1), see
    :func:`~hiddencost.prompting.visual_prompt.train_visual_prompt`. The outcome's ``mapping``
    is ``list[int]`` for m = 1 and ``list[list[int]]`` (m sources per target, ascending) for
    m > 1; ``mapping_history`` is one such value per epoch; both None for fm. With
    ``test_every_epoch`` each epoch's history holds the test accuracy after it (curves only:
    the result is always the final epoch's).
    """

    learns_prompt = True
    options = VPOptions

    def __init__(self, mapping: VPMethod, display_name: str, marker: str,
                 description: str, options: type[VPOptions] = VPOptions,
                 name: str | None = None) -> None:
        self.name = name or mapping
        self.mapping = mapping
        self.strategy = MAPPINGS.get(mapping)
        self.display_name, self.marker, self.description = display_name, marker, description
        self.options = options

    def stored_image_size(self, s: TransferSettings) -> int:
        return s.inner_size

    def input_size(self, s: TransferSettings) -> int:
        return s.canvas_size

    def input_transform(self, s: TransferSettings, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> nn.Module:
        # δ = 0 (the grey border) or seeded N(0, 1): the same δ that fit() starts from
        return PadPrompt(s.canvas_size, s.inner_size, mean, std, init=s.options.prompt_init,
                         seed=s.seed)

    def fit(self, job: TransferJob) -> TransferOutcome:
        return self.fit_pack([(self, job)])[0]

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        # training steps, plus one forward of the subset per (re)computed frequency mapping
        passes = sum(self.strategy.recomputes(e, s.options.mapping_interval)
                     for e in range(s.epochs))
        return Work(s.canvas_size, s.epochs * n_train, passes * n_train + n_test)

    def pack_key(self, s: TransferSettings) -> Hashable | None:
        # one epoch and step schedule, one canvas: the runs' batches go through the backbone
        # together (mappings, seeds, learning rates and subsets may differ)
        return ("vp", s.epochs, s.batch_size, s.canvas_size, s.inner_size,
                s.options.test_every_epoch)

    def fit_pack(self, members: Sequence[PackMember]) -> list[TransferOutcome]:
        """All members in one :func:`train_visual_prompts` pack (they must all be VP)."""
        jobs = [job for _, job in members]
        first, task = jobs[0], jobs[0].task
        runs = []
        for method, job in members:
            if not isinstance(method, VisualPrompting):
                raise TypeError(f"a VP pack cannot hold method {method.name!r}")
            s, o = job.settings, job.settings.options
            runs.append(PromptRun(
                method.input_transform(s, job.mean, job.std), task.train_images[job.subset],
                task.train_labels[job.subset], method.mapping, s.seed, lr=s.lr,
                many_to_one=o.many_to_one, mapping_interval=o.mapping_interval,
                mapping_num=o.mapping_num, save_prompt_history=s.save_prompt_history,
                on_epoch=job.on_epoch, state=job.state, augment=o.augment,
                **{k: getattr(o, k) for k in ("laplace", "topk_ratio") if hasattr(o, k)}))

        def test_accuracies(models: list[ReprogrammedModel]) -> list[float]:
            return [float((logits.argmax(1) == task.test_labels).double().mean())
                    for logits in packed_predict_logits(models, task.test_images, first.device)]

        s0 = first.settings
        trained = train_visual_prompts(
            first.backbone, runs, task.num_classes, first.num_source, s0.epochs, s0.batch_size,
            first.device, evaluate=test_accuracies if s0.options.test_every_epoch else None,
            precision=first.precision)
        logits = packed_predict_logits([model for model, _ in trained], task.test_images,
                                       first.device)
        return [replace(self._outcome(model, history, out), validation_logits=None
                        if job.validation is None else
                        predict_logits(model, task.train_images[job.validation], first.device),
                        prompt_parameters=method.prompt_parameters(model.prompt))
                for (model, history), out, (method, job) in zip(trained, logits, members,
                                                                strict=True)]

    def prompt_parameters(self, prompt: nn.Module) -> int | None:
        """What the record states the prompt trained (None: the pad prompt's 3·C·C, which its
        configuration already says)."""
        return None

    @staticmethod
    def _outcome(model: ReprogrammedModel, history: TrainHistory,
                 logits: torch.Tensor) -> TransferOutcome:
        tensors = {f"prompt.{k}": v.detach().cpu() for k, v in model.prompt.state_dict().items()
                   if k == "delta" or k.startswith("mask.")}  # SMM: its mask generator too
        if model.weights is not None:  # BLM: ω, no index mapping
            tensors["mapping.weights"] = model.weights.detach().cpu()
            return TransferOutcome(logits, history, tensors)
        if model.fm is not None:
            tensors.update({f"fm.{k}": v.detach().cpu() for k, v in model.fm.state_dict().items()})
            return TransferOutcome(logits, history, tensors)
        return TransferOutcome(logits, history, tensors, model.mapping.tolist(), history.mappings)


class SampleSpecificPrompting(VisualPrompting):
    """SMM (:mod:`hiddencost.prompting.smm`): the image resized to the canvas, plus δ through a
    mask a small CNN draws from the image, with ILM's label mapping (the reference's default).
    Its prompt covers the image, so the pad-prompt analyses of the report do not apply."""

    learns_prompt = False

    def __init__(self) -> None:
        super().__init__("ilm", "SMM-VP", "d", "VP, sample-specific masked prompt (SMM) with "
                         "iterative label mapping", SMMOptions, name="smm")

    def prompt_parameters(self, prompt: nn.Module) -> int | None:
        return sum(p.numel() for p in prompt.parameters())

    def input_transform(self, s: TransferSettings, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> nn.Module:
        return SampleMaskPrompt(s.canvas_size, mean, std, s.options.patch_size,  # type: ignore[arg-type]
                                s.options.prompt_init, s.seed)


class ResizedInput(TransferMethod):
    """A method that feeds the image resized to the backbone's input size (``lp_image_size``)
    and normalised, no prompt: linear probing and the methods that train inside the backbone."""

    def stored_image_size(self, s: TransferSettings) -> int:
        return resized_storage(s.inner_size, s.lp_image_size)

    def input_size(self, s: TransferSettings) -> int:
        return s.lp_image_size

    def input_transform(self, s: TransferSettings, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> nn.Module:
        return ResizeNormalize(s.lp_image_size, mean, std)


class LinearProbe(ResizedInput):
    """A fresh linear head on the penultimate features, computed once per backbone and task."""

    name = "lp"
    description = "linear probing: a linear head on cached penultimate features"
    display_name = "LP"
    marker = "D"

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        # the head costs nothing beside one forward of the whole task, shared by its LP runs
        return Work(s.lp_image_size, 0, n_pool + n_test, shared_forward=True)

    def fit(self, job: TransferJob) -> TransferOutcome:
        s, task = job.settings, job.task
        pre = self.input_transform(s, job.mean, job.std)
        train_all, test_all = job.memo(lambda: (
            extract_features(job.backbone, pre, task.train_images, job.device),
            extract_features(job.backbone, pre, task.test_images, job.device)))
        head, history = train_linear_head(
            train_all[job.subset], task.train_labels[job.subset], task.num_classes, s.epochs,
            s.batch_size, s.seed, job.device, lr=s.lr, on_epoch=job.on_epoch,
        )
        with torch.inference_mode():
            logits = head(test_all.to(job.device)).float().cpu()
            held = None if job.validation is None else \
                head(train_all[job.validation].to(job.device)).float().cpu()
        tensors = {"head.weight": head.weight.detach().cpu(), "head.bias": head.bias.detach().cpu()}
        return TransferOutcome(logits, history, tensors, validation_logits=held)


class CrossModal(TransferMethod):
    """Cross-modal adversarial reprogramming (:mod:`hiddencost.prompting.crossmodal_train`):
    each token a trainable 16×16 patch tiled onto the canvas, ``mapping_num`` (default 10)
    source classes per target from a seeded random image, max-reduced; Adam lr 1e-3, batch 4
    by default; the final model scores the whole test split."""

    name = "xmr"
    description = "cross-modal reprogramming of sequence tasks (text, DNA): token patches"
    display_name = "XMR"
    marker = "P"
    modality = "sequence"
    default_lr = XMR_LR
    options = CrossModalOptions

    def default_batch_size(self, n_shot: int | None) -> int:
        return XMR_BATCH

    def work(self, s: TransferSettings, n_train: int, n_pool: int, n_test: int) -> Work:
        steps = s.epochs * n_train
        if s.options.max_steps is not None:
            steps = min(steps, s.options.max_steps * s.batch_size)
        return Work(s.canvas_size, steps, n_test)

    def stored_image_size(self, s: TransferSettings) -> int:
        return 0  # a sequence task stores no images

    def input_size(self, s: TransferSettings) -> int:
        return s.canvas_size

    def input_transform(self, s: TransferSettings, mean: tuple[float, ...],
                        std: tuple[float, ...]) -> nn.Module:
        return nn.Identity()  # inputs are made from tokens (see calibration_inputs)

    @staticmethod
    def layout(task: SequenceTask,
               s: TransferSettings) -> tuple[SlotLayout, int, torch.Tensor]:
        """The task's slot layout under the run's ``padding``, the token table's rows and the
        ids of those the task uses (the only rows kept: a huge vocabulary costs nothing)."""
        layout, rows = slot_layout(task.vocab, task.frame, s.options.padding)
        return layout, rows, used_token_ids((task.train_tokens, task.test_tokens), layout)

    def calibration_inputs(self, task: TaskData | SequenceTask, subset: torch.Tensor,
                           s: TransferSettings, mean: tuple[float, ...], std: tuple[float, ...],
                           limit: int) -> torch.Tensor:
        # the canvases of the initial token table fit() starts from (same seed, same layout)
        layout, rows, used = self.layout(task, s)
        patches = TokenPatches(rows, XMR_PATCH, s.seed, used)
        idx = subset[:limit]
        ids, lengths = layout.arrange(task.train_tokens[idx], task.train_lengths[idx],
                                      (s.canvas_size // XMR_PATCH) ** 2)
        with torch.no_grad():
            return canvas_to_input(tile_patches(patches(ids), lengths, s.canvas_size), mean,
                                   std)

    def fit(self, job: TransferJob) -> TransferOutcome:
        s, task, sub = job.settings, job.task, job.subset
        image_seed = REFERENCE_MAPPING_SEED if s.options.mapping_seed == "reference" else s.seed
        sources, remapper = output_mapping(job.backbone, s.canvas_size, task.num_classes,
                                           s.options.mapping_num, image_seed, job.device,
                                           remapper_seed=s.seed)
        layout, rows, used = self.layout(task, s)
        model = CrossModalReprogram(job.backbone, sources, rows, s.canvas_size, job.mean,
                                    job.std, XMR_PATCH, seed=s.seed, remapper=remapper,
                                    layout=layout, token_ids=used)

        def test_accuracy() -> float:
            scores = predict_xmr(model, task.test_tokens, task.test_lengths, job.device)
            return float((scores.argmax(1) == task.test_labels).double().mean())

        history = train_xmr(model, task.train_tokens[sub], task.train_lengths[sub],
                            task.train_labels[sub], s.epochs, job.device, s.seed, s.lr,
                            s.batch_size, on_epoch=job.on_epoch, max_steps=s.options.max_steps,
                            precision=job.precision, state=job.state,
                            evaluate=test_accuracy if s.options.test_every_epoch else None)
        logits = predict_xmr(model, task.test_tokens, task.test_lengths, job.device)
        mapping = None if sources is None else sources.tolist()
        held = None if job.validation is None else predict_xmr(
            model, task.train_tokens[job.validation], task.train_lengths[job.validation],
            job.device)
        return TransferOutcome(logits, history, model.learned_tensors(), mapping,
                               validation_logits=held)


#: The registered transfer methods by name.
METHODS: Registry[TransferMethod] = Registry("transfer method")


for _method in (
    VisualPrompting("ilm", "ILM-VP", "o", "VP, iterative label mapping (ILM-VP)"),
    VisualPrompting("flm", "FLM-VP", "s", "VP, frequency label mapping (computed once)"),
    VisualPrompting("rlm", "RLM-VP", "^", "VP, random label mapping"),
    VisualPrompting("fm", "FM-VP", "v", "VP, fully-connected mapping (AutoVP)"),
    VisualPrompting("blm", "BLM-VP", "<", "VP, Bayesian-guided label mapping (BLM)",
                    BLMOptions),
    VisualPrompting("blm+", "BLM+-VP", ">", "VP, BLM over top-k source probabilities (BLM+)",
                    BLMOptions),
    SampleSpecificPrompting(),
    LinearProbe(),
    CrossModal(),
):
    METHODS.add(_method.name, _method)
