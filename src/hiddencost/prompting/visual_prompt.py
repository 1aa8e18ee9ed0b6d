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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.frozen import freeze
from hiddencost.precision import exact, training
from hiddencost.prompting.augment import batch_seed, trivial_augment
from hiddencost.prompting.label_mapping import (
    FullyConnectedMapping,
    MappingList,
    apply_mapping,
    frequency_mapping,
)
from hiddencost.prompting.mappings import (
    MAPPINGS,
    LabelMapping,
    bayesian_weights,
    check_positive_options,
    source_mass,
    top_k_of,
)
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.run_state import StateFile
from hiddencost.prompting.schedule import EpochSums, adam_multistep, descend, epoch_batches
from hiddencost.records import EpochRecord

#: The batch of the inference passes (mapping passes, test pass), per run of a pack.
PREDICT_BATCH = 256
#: A VP run's label mapping by its registered name (:data:`~.mappings.MAPPINGS`).
VPMethod = str


class ReprogrammedModel(nn.Module):
    """prompt → frozen backbone (channels_last) → label mapping (index selection, FM layer or
    BLM weight matrix).

    ``mapping`` is a length-K buffer (``mapping_num`` m = 1, initially arange(K) mod K′) or a
    (K, m) one (initially arange(K·m) mod K′, row-wise), see :func:`apply_mapping`. With
    ``reweights`` the target logits are the source logits times the K′ × K buffer ``weights``
    (BLM's ω, :mod:`hiddencost.prompting.mappings`; zero until the first remap).
    """

    def __init__(
        self,
        backbone: nn.Module,
        prompt: PadPrompt,
        num_source: int,
        num_target: int,
        fully_connected: bool = False,
        mapping_num: int = 1,
        reweights: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.prompt = prompt
        self.num_source = num_source
        self.num_target = num_target
        self.fm = FullyConnectedMapping(num_source, num_target) if fully_connected else None
        self.register_buffer("weights", torch.zeros(num_source, num_target) if reweights
                             else None)
        initial = torch.arange(num_target * mapping_num) % num_source
        if mapping_num > 1:
            initial = initial.view(num_target, mapping_num)
        self.register_buffer("mapping", initial)

    def source_logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.prompt(x).contiguous(memory_format=torch.channels_last)
        return self.backbone(z)

    def map_logits(self, source_logits: torch.Tensor) -> torch.Tensor:
        """The K target logits, in fp32 whatever the backbone's precision (see
        :mod:`hiddencost.precision`): the FM layer and the averaging of m > 1 sources too."""
        with exact(source_logits.device):
            if self.fm is not None:
                return self.fm(source_logits.float())
            if self.weights is not None:
                return source_logits.float() @ self.weights
            return apply_mapping(source_logits.float(), self.mapping)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.map_logits(self.source_logits(x))


def to_unit(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images → float in [0, 1] on ``device``."""
    return images_u8.to(device, non_blocking=True).float().div_(255.0)


#: Training images up to this size live on the accelerator for the whole run (a few-shot
#: subset is a few MB); larger sets stay in pinned host memory and stream batch by batch.
RESIDENT_BYTES = 1 << 30


def resident(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A run's training data (images, tokens) where its steps read it without a copy from
    pageable memory per step: on ``device`` (≤ :data:`RESIDENT_BYTES`) or pinned; unchanged on
    a CPU. Index it with indices on its own device (a CPU tensor takes no CUDA indices)."""
    if device.type == "cpu":
        return data
    if data.numel() * data.element_size() <= RESIDENT_BYTES:
        return data.to(device)
    return data.pin_memory()


def source_predictions(
    model: ReprogrammedModel, images_u8: torch.Tensor, device: torch.device,
    batch_size: int = PREDICT_BATCH,
) -> torch.Tensor:
    """Top-1 source class of each image seen through the current prompt (CPU LongTensor)."""
    return packed_source_predictions([model], [images_u8], device, batch_size)[0]


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images_u8: torch.Tensor, device: torch.device, batch_size: int = PREDICT_BATCH
) -> torch.Tensor:
    """Target logits (float32, CPU) of a model on uint8 images, in fp32."""
    out = []
    with exact(device):
        for chunk in images_u8.split(batch_size):
            out.append(model(to_unit(chunk, device)).float().cpu())
    return torch.cat(out)


@dataclass
class TrainHistory:
    """Per-epoch training record; ``prompts`` holds δ after each epoch when asked for."""

    epochs: list[EpochRecord] = field(default_factory=list)
    prompts: list[torch.Tensor] = field(default_factory=list)
    #: The mapping used in each epoch (``mapping.tolist()``: ints for m = 1, m-lists for m > 1).
    mappings: list[MappingList] = field(default_factory=list)


def fuses_batches(device: torch.device, fuse: bool | None = None) -> bool:
    """Whether a pack concatenates its runs' batches into one backbone call: ``fuse`` when
    given, else only on CUDA.

    On CPU each run's batch gets its own backbone call, so a packed run is bitwise the run
    alone: oneDNN blocks a batch of 256 differently from one of 128, and the last-bit
    differences this makes are turned into full steps by Adam (it divides every gradient
    element by its own magnitude). Concatenating gains nothing on CPU anyway
    (``benchmarks/bench_packing.py``); on a GPU it is the point of packing.
    """
    return device.type == "cuda" if fuse is None else fuse


def packed_source_logits(prompts: Sequence[PadPrompt], backbone: nn.Module,
                         inputs: Sequence[torch.Tensor], fuse: bool = True) -> list[torch.Tensor]:
    """Source logits of several runs: each run's [0, 1] images through its own prompt, then
    (``fuse``) the prompted batches concatenated, one forward, split back per run, or (not
    ``fuse``) one forward per run.

    The backbone is frozen and in eval mode, so samples do not interact: fused logits equal
    those of each batch alone up to the backend's float reordering across batch sizes.
    """
    prompted = [p(x).contiguous(memory_format=torch.channels_last)
                for p, x in zip(prompts, inputs, strict=True)]
    if not fuse or len(prompted) == 1:
        return [backbone(z) for z in prompted]
    z = torch.cat(prompted).contiguous(memory_format=torch.channels_last)
    return list(backbone(z).split([len(x) for x in inputs]))


@torch.inference_mode()
def packed_source_pass(models: Sequence[ReprogrammedModel], image_sets: Sequence[torch.Tensor],
                       device: torch.device, consume: Sequence[Callable[[slice, torch.Tensor],
                                                                         None]],
                       batch_size: int = PREDICT_BATCH, fuse: bool | None = None) -> None:
    """Each model's images through its prompt and the backbone, chunk j of every run's images
    in one step (one backbone pass when :func:`fuses_batches`), in fp32 (they decide the label
    mapping): ``consume[i](rows, logits)`` receives run i's source logits of its images
    ``rows``, chunk by chunk."""
    chunks = [images.split(batch_size) for images in image_sets]
    with exact(device):
        for j in range(max(len(c) for c in chunks)):
            active = [i for i, c in enumerate(chunks) if j < len(c)]
            logits = packed_source_logits([models[i].prompt for i in active],
                                          models[active[0]].backbone,
                                          [to_unit(chunks[i][j], device) for i in active],
                                          fuses_batches(device, fuse))
            for i, out in zip(active, logits, strict=True):
                consume[i](slice(j * batch_size, j * batch_size + len(out)), out.float())


def packed_source_predictions(models: Sequence[ReprogrammedModel],
                              image_sets: Sequence[torch.Tensor], device: torch.device,
                              batch_size: int = PREDICT_BATCH,
                              fuse: bool | None = None) -> list[torch.Tensor]:
    """:func:`source_predictions` of each model on its own images
    (:func:`packed_source_pass`)."""
    preds: list[list[torch.Tensor]] = [[] for _ in models]
    packed_source_pass(models, image_sets, device,
                       [lambda rows, out, p=p: p.append(out.argmax(1).cpu()) for p in preds],
                       batch_size, fuse)
    return [torch.cat(p) for p in preds]


def packed_source_weights(members: Sequence[_Member], device: torch.device,
                          fuse: bool | None = None) -> list[torch.Tensor]:
    """BLM's ω of each member under its current prompt (:func:`packed_source_pass` over its
    training images, F accumulated chunk by chunk; see :mod:`hiddencost.prompting.mappings`)."""
    counts = [torch.zeros(m.model.num_source, m.model.num_target, dtype=torch.float64,
                          device=device) for m in members]

    def add(i: int) -> Callable[[slice, torch.Tensor], None]:
        member = members[i]
        k = (top_k_of(member.run.topk_ratio, member.model.num_target)
             if member.mapping.top_k else None)  # type: ignore[attr-defined]
        return lambda rows, out: counts[i].add_(source_mass(
            out, member.labels[rows], member.model.num_target, k))

    packed_source_pass([m.model for m in members], [m.images for m in members], device,
                       [add(i) for i in range(len(members))], fuse=fuse)
    return [bayesian_weights(c, m.run.laplace).to(device)
            for c, m in zip(counts, members, strict=True)]


@torch.inference_mode()
def packed_predict_logits(models: Sequence[ReprogrammedModel], images_u8: torch.Tensor,
                          device: torch.device, batch_size: int = PREDICT_BATCH,
                          fuse: bool | None = None) -> list[torch.Tensor]:
    """:func:`predict_logits` of several prompted models on the same images, one step per
    chunk for all of them (one backbone pass when :func:`fuses_batches`); in fp32."""
    out: list[list[torch.Tensor]] = [[] for _ in models]
    with exact(device):
        for chunk in images_u8.split(batch_size):
            x = to_unit(chunk, device)
            source = packed_source_logits([m.prompt for m in models], models[0].backbone,
                                          [x] * len(models), fuses_batches(device, fuse))
            for i, (model, s) in enumerate(zip(models, source, strict=True)):
                out[i].append(model.map_logits(s).float().cpu())
    return [torch.cat(o) for o in out]


def runs_that_fit(free_bytes: int, per_run_bytes: int, headroom: float = 0.8) -> int:
    """How many runs' training steps fit in ``headroom`` of the free device memory: ⌊h·free /
    per-run⌋, at least 1."""
    return max(1, int(headroom * free_bytes // max(per_run_bytes, 1)))


def step_bytes(backbone: nn.Module, batch_size: int, canvas_size: int,
               device: torch.device, precision: torch.dtype | None = None) -> int:
    """Measured peak CUDA memory of one run's training step: a forward of ``batch_size``
    canvases and the gradient to the input, above what is allocated before it."""
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x = torch.rand(batch_size, 3, canvas_size, canvas_size, device=device, requires_grad=True)
    with training(device, precision):
        out = backbone(x.contiguous(memory_format=torch.channels_last))
    out.float().sum().backward()
    return torch.cuda.max_memory_allocated(device) - base


def forward_bytes(backbone: nn.Module, batch_size: int, canvas_size: int,
                  device: torch.device) -> int:
    """Measured peak CUDA memory of one run's share of a fused inference pass (the mapping and
    test passes: ``batch_size`` canvases per run, fp32, no gradients)."""
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    with torch.inference_mode(), exact(device):
        x = torch.rand(batch_size, 3, canvas_size, canvas_size, device=device)
        backbone(x.contiguous(memory_format=torch.channels_last))
    return torch.cuda.max_memory_allocated(device) - base


def free_bytes(device: torch.device) -> int:
    """Device memory a pack can use: what the driver reports free plus the blocks PyTorch's
    caching allocator holds but does not use (reserved − allocated)."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def runs_in_memory(backbone: nn.Module, batch_size: int, canvas_size: int,
                   device: torch.device, precision: torch.dtype | None) -> int:
    """How many runs of a pack fit on a CUDA device at once (:func:`runs_that_fit`): each
    needs the larger of its training step (:func:`step_bytes`) and its share of the fused
    mapping / test passes (:func:`forward_bytes` of :data:`PREDICT_BATCH` canvases)."""
    per_run = max(step_bytes(backbone, batch_size, canvas_size, device, precision),
                  forward_bytes(backbone, PREDICT_BATCH, canvas_size, device))
    return runs_that_fit(free_bytes(device), per_run)


@dataclass
class PromptRun:
    """One run of a pack: its prompt (initialised by the caller), training subset, method,
    seed and options. What the runs of a pack share (backbone, classes, epochs, batch size,
    device) is given to :func:`train_visual_prompts` once."""

    prompt: PadPrompt
    train_images: torch.Tensor
    train_labels: torch.Tensor
    method: VPMethod
    seed: int
    lr: float = 0.01
    many_to_one: bool = False
    mapping_interval: int = 1
    mapping_num: int = 1
    save_prompt_history: bool = False
    on_epoch: Callable[[EpochRecord], None] | None = None
    #: Where the run saves its state at every epoch end and resumes from (None: it does not).
    state: StateFile | None = None
    #: BLM / BLM+ only: the Laplace term λ and the top-k ratio (k = max(1, ⌊ratio·K⌋)).
    laplace: float = 1.0
    topk_ratio: float = 0.15
    #: ``"trivial"``: TrivialAugment of every training batch (:mod:`.augment`); None: none.
    augment: str | None = None


@dataclass
class _Member:
    """A run's training state inside a pack."""

    run: PromptRun
    model: ReprogrammedModel
    labels: torch.Tensor
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    #: The training images, where the steps read them (:func:`resident`).
    images: torch.Tensor
    history: TrainHistory = field(default_factory=TrainHistory)
    #: This epoch's loss and correct sums, on the device (:class:`EpochSums`).
    sums: EpochSums | None = None

    mapping: LabelMapping = field(default_factory=LabelMapping)
    #: The first epoch this member still has to train (> 0 when resumed from its state).
    start: int = 0

    def recomputes(self, epoch: int) -> bool:
        """Whether the frequency mapping is (re)computed at the start of ``epoch``."""
        return self.mapping.recomputes(epoch, self.run.mapping_interval)

    def save(self, epochs_done: int) -> None:
        """Save the state after ``epochs_done`` epochs (see :mod:`.run_state`)."""
        if self.run.state is None:
            return
        self.run.state.save({
            "next_epoch": epochs_done,
            "model": {k: v for k, v in self.model.state_dict().items()
                      if not k.startswith("backbone.")},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "epochs": [r.model_dump() for r in self.history.epochs],
            "mappings": self.history.mappings,
            "prompts": self.history.prompts,
        })

    def restore(self) -> None:
        """Continue from the saved state, when there is one for this run."""
        state = self.run.state.load() if self.run.state is not None else None
        if state is None:
            return
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.history = TrainHistory([EpochRecord(**r) for r in state["epochs"]],
                                    list(state["prompts"]), list(state["mappings"]))
        self.start = int(state["next_epoch"])


def _member(backbone: nn.Module, run: PromptRun, num_source: int, num_classes: int,
            epochs: int, device: torch.device) -> _Member:
    mapping = MAPPINGS.get(run.method)
    check_positive_options(run.mapping_interval, run.mapping_num)
    mapping.check(num_source, num_classes, run.many_to_one, run.mapping_num)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(run.seed)  # FM layer initialisation, without touching global RNG state
        model = ReprogrammedModel(backbone, run.prompt, num_source, num_classes,
                                  mapping.fully_connected, run.mapping_num, mapping.reweights)
    model.to(device)
    model.prompt.eval()  # inference passes (mappings, tests) use a BatchNorm's running stats
    optimizer, scheduler = adam_multistep([p for p in model.parameters() if p.requires_grad],
                                          epochs, run.lr)
    initial = mapping.initial(num_source, num_classes, run.seed, run.many_to_one,
                              run.mapping_num)
    if initial is not None:
        model.mapping.copy_(initial)
    return _Member(run, model, run.train_labels.to(device), optimizer, scheduler,
                   torch.Generator().manual_seed(run.seed), resident(run.train_images, device),
                   mapping=mapping)


def _remap(members: Sequence[_Member], device: torch.device, epoch: int,
           fuse: bool | None) -> list[int]:
    """The frequency mapping under each member's current prompt (no gradients) replaces its
    ``model.mapping`` (BLM: ω replaces its ``model.weights``); returns, per member, how many
    targets changed source (m > 1: source set; BLM: most weighted source; all of them at
    epoch 0)."""
    blm = [m for m in members if m.model.weights is not None]
    index = [m for m in members if m.model.weights is None]
    changes = dict(zip(map(id, blm), _reweight(blm, device, epoch, fuse), strict=True))
    preds = packed_source_predictions([m.model for m in index], [m.images for m in index],
                                      device, fuse=fuse) if index else []
    for member, pred in zip(index, preds, strict=True):
        model, run = member.model, member.run
        new = frequency_mapping(pred, run.train_labels, model.num_source, model.num_target,
                                run.many_to_one, run.mapping_num)
        differs = new.to(device) != model.mapping
        if run.mapping_num > 1:  # rows are sorted, so equal rows mean equal source sets
            differs = differs.any(dim=1)
        changes[id(member)] = int(differs.sum()) if epoch else model.num_target
        model.mapping.copy_(new)
    return [changes[id(m)] for m in members]


def _reweight(members: Sequence[_Member], device: torch.device, epoch: int,
              fuse: bool | None) -> list[int]:
    """BLM's ω under each member's current prompt replaces its ``model.weights``; returns how
    many targets changed their most weighted source (all K at epoch 0)."""
    if not members:
        return []
    changes = []
    for member, new in zip(members, packed_source_weights(members, device, fuse), strict=True):
        old = member.model.weights
        changes.append(int((new.argmax(0) != old.argmax(0)).sum()) if epoch
                       else member.model.num_target)
        old.copy_(new)
    return changes


def _train_epoch(members: Sequence[_Member], batch_size: int, device: torch.device,
                 epoch: int, fuse: bool | None, precision: torch.dtype | None) -> None:
    """One pass of every member over its own shuffled training set, step t of all members in
    one backbone pass (a member with fewer batches sits out the last steps); the sums of loss
    and correct predictions accumulate on the device in each member's :class:`EpochSums`, and
    the loss's finiteness is checked once at the end of the epoch: a step waits for the device
    nowhere (no ``.item()``, no ``if tensor``)."""
    batches = [epoch_batches(len(m.labels), batch_size, m.generator, m.images.device)
               for m in members]
    for member in members:
        member.sums = EpochSums(device)
        member.model.prompt.train()  # a prompt with BatchNorm (SMM's mask generator) trains so
    try:
        _steps(members, batches, device, epoch, fuse, precision)
    finally:
        for member in members:
            member.model.prompt.eval()  # ... and every inference pass uses its running stats
    for member in members:
        member.sums.check(epoch)


def _steps(members: Sequence[_Member], batches: list[list[torch.Tensor]], device: torch.device,
           epoch: int, fuse: bool | None, precision: torch.dtype | None) -> None:
    """The optimiser steps of one epoch of :func:`_train_epoch`."""
    for step in range(max(len(b) for b in batches)):
        active = [(m, b[step]) for m, b in zip(members, batches, strict=True) if step < len(b)]
        xs = [to_unit(m.images[idx] if m.run.augment is None else trivial_augment(
            m.images[idx], batch_seed(m.run.seed, epoch, step)), device) for m, idx in active]
        ys = [m.labels[idx] for m, idx in active]
        with training(device, precision):
            source = packed_source_logits([m.model.prompt for m, _ in active],
                                          active[0][0].model.backbone, xs,
                                          fuses_batches(device, fuse))
        logits = [m.model.map_logits(s) for (m, _), s in zip(active, source, strict=True)]
        losses = [F.cross_entropy(out.float(), y) for out, y in zip(logits, ys, strict=True)]
        descend([m.optimizer for m, _ in active], losses, epoch, check_finite=False)
        for (member, _), loss, out, y in zip(active, losses, logits, ys, strict=True):
            member.sums.add(loss, out, y)


def train_visual_prompts(
    backbone: nn.Module,
    runs: Sequence[PromptRun],
    num_classes: int,
    num_source: int,
    epochs: int,
    batch_size: int,
    device: torch.device,
    evaluate: Callable[[list[ReprogrammedModel]], list[float]] | None = None,
    fuse: bool | None = None,
    precision: torch.dtype | None = None,
) -> list[tuple[ReprogrammedModel, TrainHistory]]:
    """Train several pad prompts ("a pack") on one frozen backbone, each as if alone.

    Every run keeps its own prompt, FM layer, label mapping, Adam state, learning-rate schedule
    and data order (a generator seeded with its seed); step t of all runs is one backward of
    the sum of the runs' mean losses, whose gradient with respect to one run's parameters is
    that run's own (the parameter sets are disjoint, the backbone frozen). With ``fuse``
    (default :func:`fuses_batches`: on CUDA) the step is one backbone forward over the
    concatenated batches, and the ILM/FLM mapping passes are fused too; without it (CPU) each
    run has its own forward and a packed run is bitwise the run alone. A pack of one is
    exactly :func:`train_visual_prompt`. On CUDA a pack that would not fit in the free memory
    (:func:`runs_in_memory`: training step and inference passes) trains as consecutive smaller
    packs. A run with a ``state`` file saves its state at every epoch end and, when the file
    holds its state, resumes from the epoch after it (bitwise the uninterrupted run on CPU; a
    resumed member of a pack waits for the pack to reach its epoch). ``precision``: the
    autocast dtype of the training steps' backbone pass (None: fp32; see
    :mod:`hiddencost.precision` for what always stays fp32).
    See :func:`train_visual_prompt` for the per-run protocol and the history;
    ``evaluate(models)`` returns one test accuracy per run.
    """
    freeze(backbone)  # no weight gradients, eval-mode BatchNorm, whatever the caller did
    if device.type == "cuda" and len(runs) > 1:  # a pack larger than memory: smaller packs
        fit = runs_in_memory(backbone, batch_size, runs[0].prompt.canvas_size, device,
                             precision)
        if fit < len(runs):
            return [trained for i in range(0, len(runs), fit) for trained in train_visual_prompts(
                backbone, runs[i:i + fit], num_classes, num_source, epochs, batch_size, device,
                evaluate, fuse, precision)]
    members = [_member(backbone, run, num_source, num_classes, epochs, device) for run in runs]
    for member in members:
        member.restore()
    for epoch in range(min(m.start for m in members), epochs):
        start = time.perf_counter()
        active = [m for m in members if m.start <= epoch]  # resumed members wait their epoch
        recompute = [m.recomputes(epoch) for m in active]
        todo = [m for m, r in zip(active, recompute, strict=True) if r]
        changed = dict(zip(map(id, todo), _remap(todo, device, epoch, fuse) if todo else [],
                           strict=True))
        for member in active:
            if member.model.weights is None:  # BLM's ω is saved with its weights instead
                member.history.mappings.append(member.model.mapping.tolist())
        _train_epoch(active, batch_size, device, epoch, fuse, precision)
        seconds = time.perf_counter() - start  # training only, as the test pass is optional
        accuracies = evaluate([m.model for m in active]) if evaluate is not None else None
        for i, member in enumerate(active):
            loss, correct = member.sums.values()
            record = EpochRecord(
                epoch=epoch + 1, loss=loss / member.sums.seen,
                train_accuracy=correct / member.sums.seen,
                lr=member.optimizer.param_groups[0]["lr"],
                mapping_changes=changed.get(id(member), 0), mapping_recomputed=recompute[i],
                seconds=seconds, test_accuracy=None if accuracies is None else accuracies[i])
            member.scheduler.step()
            member.history.epochs.append(record)
            if member.run.save_prompt_history:
                member.history.prompts.append(member.model.prompt.delta.detach().cpu().clone())
            member.save(epoch + 1)
            if member.run.on_epoch is not None:
                member.run.on_epoch(record)
    return [(m.model, m.history) for m in members]


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
    on_epoch: Callable[[EpochRecord], None] | None = None,
    mapping_interval: int = 1,
    mapping_num: int = 1,
    evaluate: Callable[[ReprogrammedModel], float] | None = None,
    precision: torch.dtype | None = None,
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
    the mapping used in each epoch. This is a pack of one run of :func:`train_visual_prompts`.
    """
    run = PromptRun(prompt, train_images, train_labels, method, seed, lr, many_to_one,
                    mapping_interval, mapping_num, save_prompt_history, on_epoch)
    each = None if evaluate is None else (lambda models: [evaluate(m) for m in models])
    [(model, history)] = train_visual_prompts(backbone, [run], num_classes, num_source, epochs,
                                              batch_size, device, evaluate=each,
                                              precision=precision)
    return model, history
