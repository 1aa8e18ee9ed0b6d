"""One experiment: backbone → compression → dataset + few-shot subset → transfer → metrics.

:func:`run_one` is the single entry point that the CLI, the quickstart and studies call. It looks
the transfer method up in the registry (:mod:`hiddencost.prompting.methods`) and returns a typed
:class:`~hiddencost.records.RunRecord` (written as ``result.json``) plus, when ``out_dir`` is
given, the learned prompt (or LP head) as safetensors beside it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors.torch import save_file

from hiddencost import __version__
from hiddencost.backbones import BackboneInfo, create_model, resolve_backbone_name
from hiddencost.compression import CompressionReport, CompressionSpec, Dense, apply_compression
from hiddencost.data import (
    FewShotSubset,
    TaskData,
    dataset_info,
    few_shot_indices,
    load_dataset,
)
from hiddencost.data.sequences import SequenceTask
from hiddencost.device import resolve_device
from hiddencost.errors import HiddenCostError, validation_message
from hiddencost.frozen import prepare_frozen
from hiddencost.metrics import calibration_summary, paper_ece
from hiddencost.prompting.catalog import (
    method_card,
    method_for,
    method_names,
    methods_reading,
    methods_where,
)
from hiddencost.prompting.methods import (
    TransferJob,
    TransferMethod,
    TransferOutcome,
    TransferSettings,
)
from hiddencost.records import RunRecord


def _known_method(name: str) -> str:
    if name not in method_names():
        raise ValueError(f"unknown transfer method {name!r}; known: {', '.join(method_names())}")
    return name


#: A transfer method's name, checked against the registry.
Method = Annotated[str, AfterValidator(_known_method)]
#: Fields that say where or how a run executes, not what it computes: left out of its identity.
ENVIRONMENT_FIELDS = frozenset({"data_root", "download", "device"})
#: Fields added after run keys were first published, with the default that leaves them out of
#: a run's identity (an old key and a new one of the same experiment are equal).
LATER_FIELD_DEFAULTS: dict[str, Any] = {
    "mask": None, "mapping_interval": 1, "mapping_num": 1, "prompt_init": "zero",
    "test_every_epoch": False, "skip_unreadable": False, "max_steps": None,
    "restrict_templates": False,
}
#: Images used to calibrate activation quantizers (the training subset's first ones).
CALIBRATION_IMAGES = 256


#: The largest learning rate accepted: far above any protocol's (CLIP VP uses 40), below where
#: the optimiser's float arithmetic overflows.
MAX_LR = 1e6


class RunConfig(BaseModel):
    """Every knob of one experiment. ``None`` means "the protocol default", see :meth:`resolved`.
    Numbers must be finite (``inf``/``nan`` are refused where they are read)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = "efficientnet_lite0"
    weights: Literal["pretrained", "random"] = "pretrained"
    checkpoint: str | None = None
    mask: str | None = Field(None, description="0/1 mask file applied as weight × mask")
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    split_seed: int = Field(0, ge=0)
    method: Method = "ilm"
    n_shot: int | None = Field(None, description="examples per class; None = full data")
    seed: int = Field(0, ge=0)
    compression: CompressionSpec = Dense()
    epochs: int = Field(100, ge=1)
    lr: float | None = Field(None, gt=0, le=MAX_LR, description="None: the method's (0.01)")
    batch_size: int | None = Field(None, ge=1)
    canvas_size: int | None = Field(None, ge=8)
    inner_size: int | None = Field(None, ge=1)
    lp_image_size: int | None = Field(None, ge=8)
    many_to_one: bool = False
    mapping_interval: int = Field(1, ge=1, description="ILM: re-map every k epochs")
    mapping_num: int | None = Field(None, ge=1,
                                    description="source classes per target; None: the method's")
    prompt_init: Literal["zero", "randn"] = "zero"
    test_every_epoch: bool = Field(False, description="VP: record test accuracy per epoch")
    max_steps: int | None = Field(None, ge=1, description="xmr: stop after this many "
                                  "optimiser steps (the reference's max_iterations); None: "
                                  "all epochs")
    restrict_templates: bool = Field(False, description="CLIP ilm: map each class to one of "
                                     "its own template texts (the reference lets it take any)")
    skip_unreadable: bool = Field(False, description="leave unreadable image files out")
    device: str = "auto"
    save_prompt_history: bool = False

    @field_validator("n_shot")
    @classmethod
    def _positive_shot(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"n_shot must be a positive integer or None (full data), got {v}")
        return v

    def resolved(self) -> RunConfig:
        """A copy with the protocol defaults filled in (the method's learning rate, batch size
        (VP/LP: the N-shot table) and sources per class; canvas = backbone input size, inner
        size = the dataset's, LP image size = backbone input size), so equal experiments compare
        equal. A method that does not read the dataset's kind of data is a one-line error."""
        entry = resolve_backbone_name(self.model)
        info = dataset_info(self.dataset)  # unknown names: a one-line error
        method = method_for(self.method, entry.family)
        if info.modality != method.modality:
            raise HiddenCostError(
                f"method {self.method!r} reads {method.modality} data and dataset "
                f"{info.name!r} holds {info.modality} data; use "
                f"{', '.join(methods_reading(info.modality))}")
        if self.max_steps is not None and not method.reads_max_steps:
            readers = ", ".join(methods_where(lambda m: m.reads_max_steps))
            raise HiddenCostError(f"max_steps is read by {readers} only; method "
                                  f"{self.method!r} trains for its epochs")
        if self.restrict_templates and not method.reads_templates:
            raise HiddenCostError(f"restrict_templates is read by ilm on CLIP only; method "
                                  f"{self.method!r} of {entry.name} has no template choice")
        return self.model_copy(
            update={
                "model": entry.name,
                "lr": self.lr or method.default_lr,
                "mapping_num": self.mapping_num or method.default_mapping_num,
                "batch_size": self.batch_size or method.default_batch_size(self.n_shot),
                "canvas_size": self.canvas_size or entry.cfg.input_size,
                "inner_size": self.inner_size or info.inner_size,
                "lp_image_size": self.lp_image_size or entry.cfg.input_size,
            }
        )

    def identity(self) -> dict[str, Any]:
        """The resolved configuration without environment fields: what defines the result.
        Fields added after the first release are left out while at their default, so the run
        keys of existing studies stay valid."""
        data = self.resolved().model_dump(mode="json", exclude=set(ENVIRONMENT_FIELDS))
        for name, default in LATER_FIELD_DEFAULTS.items():
            if data.get(name) == default:
                del data[name]
        return data


def make_config(**kwargs: Any) -> RunConfig:
    """Build a :class:`RunConfig`, turning validation errors into one-line HiddenCostErrors."""
    try:
        return RunConfig(**kwargs)
    except ValidationError as exc:
        msg = validation_message(exc)
        raise HiddenCostError(msg if msg.startswith("unknown key") else f"invalid {msg}") from None


@dataclass
class RunCache:
    """Objects worth reusing between runs of one process: loaded datasets and LP features."""

    datasets: dict[tuple, TaskData | SequenceTask] = field(default_factory=dict)
    features: dict[tuple, Any] = field(default_factory=dict)

    def dataset(self, cfg: RunConfig, image_size: int) -> TaskData | SequenceTask:
        key = (cfg.dataset, cfg.data_root, image_size, cfg.split_seed, cfg.skip_unreadable)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(
                cfg.dataset, root=cfg.data_root, download=cfg.download,
                image_size=image_size, split_seed=cfg.split_seed,
                skip_unreadable=cfg.skip_unreadable,
            )
        return self.datasets[key]

    def memo(self, cfg: RunConfig, image_size: int) -> Callable[[Callable[[], Any]], Any]:
        """A memo for work that depends only on the backbone, its compression and the task
        (LP features). Activation quantizers calibrate on the training subset, so a model with
        quantized activations gets no cache: its features are per run."""
        if cfg.compression.activation_bits is not None:
            return lambda compute, *extra: compute()
        key = (cfg.model, cfg.weights, cfg.checkpoint, cfg.mask, cfg.compression, cfg.dataset,
               cfg.split_seed, cfg.skip_unreadable, image_size, cfg.lp_image_size)

        def memo(compute: Callable[[], Any], *extra: Any) -> Any:
            full = (key, extra)
            if full not in self.features:
                self.features[full] = compute()
            return self.features[full]

        return memo


def settings_of(cfg: RunConfig) -> TransferSettings:
    """The transfer hyper-parameters of a resolved configuration."""
    return TransferSettings(
        epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,  # type: ignore[arg-type]
        canvas_size=cfg.canvas_size, inner_size=cfg.inner_size,  # type: ignore[arg-type]
        lp_image_size=cfg.lp_image_size, many_to_one=cfg.many_to_one,  # type: ignore[arg-type]
        save_prompt_history=cfg.save_prompt_history, mapping_interval=cfg.mapping_interval,
        mapping_num=cfg.mapping_num, prompt_init=cfg.prompt_init,
        test_every_epoch=cfg.test_every_epoch, max_steps=cfg.max_steps,
        restrict_templates=cfg.restrict_templates,
    )


def _backbone(
    cfg: RunConfig, method: TransferMethod, settings: TransferSettings,
    task: TaskData | SequenceTask, subset: torch.Tensor, device: torch.device,
) -> tuple[torch.nn.Module, BackboneInfo, CompressionReport]:
    """The compressed, frozen backbone; activation quantizers calibrate on the first training
    examples as the method feeds them."""
    model, info = create_model(cfg.model, weights=cfg.weights, checkpoint=cfg.checkpoint,
                               download=cfg.download, mask=cfg.mask)
    calibration = method.calibration_inputs(task, subset, settings, info.mean, info.std,
                                            CALIBRATION_IMAGES)
    report = apply_compression(model, cfg.compression, calibration_images=calibration)
    return prepare_frozen(model, device, method.input_size(settings)), info, report


def _mapping_entry(target: int, source: int | list[int], task: TaskData | SequenceTask,
                   names: list[str]) -> dict[str, Any]:
    sources = source if isinstance(source, list) else [source]
    entry = {"target": target, "target_name": task.class_names[target], "source": sources[0],
             "source_name": names[sources[0]]}
    if isinstance(source, list):  # mapping_num > 1: every source of the target
        entry |= {"sources": sources, "source_names": [names[s] for s in sources]}
    return entry


def _mapping_table(outcome: TransferOutcome, task: TaskData | SequenceTask,
                   info: BackboneInfo) -> list[dict] | None:
    if outcome.mapping is None:
        return None
    names = outcome.source_names if outcome.source_names is not None else info.class_names
    return [_mapping_entry(t, s, task, names) for t, s in enumerate(outcome.mapping)]


def _reference_test_batch(cfg: RunConfig) -> int:
    """The reference code's test batch size for the dataset (``paper_ece`` sums per batch)."""
    return dataset_info(cfg.dataset).reference_test_batch


def _record(cfg: RunConfig, outcome: TransferOutcome, task: TaskData | SequenceTask,
            subset: FewShotSubset,
            info: BackboneInfo, report: CompressionReport, device: torch.device,
            start: float) -> RunRecord:
    logits = outcome.logits
    summary = calibration_summary(logits.softmax(dim=1), task.test_labels)
    family = resolve_backbone_name(cfg.model).family
    return RunRecord(
        config=cfg.model_dump(mode="json"),
        method=method_card(cfg.method, family),
        network_family=family,
        label_mapping=_mapping_table(outcome, task, info),
        mapping_history=outcome.mapping_history,
        **summary,
        paper_ece=paper_ece(logits, task.test_labels, batch_size=_reference_test_batch(cfg)),
        compression=report.to_dict(),
        sparsity=report.measured_sparsity,
        paper_remaining_percent=report.paper_remaining_percent,
        weight_bits=report.weight_bits,
        activation_bits=report.activation_bits,
        backbone_weights=info.weights,
        backbone=info.compression,
        n_train=len(subset),
        n_test=len(task.test_labels),
        effective_shots={str(k): v for k, v in subset.effective_counts.items()},
        history=outcome.history.epochs,
        final_train_loss=outcome.history.epochs[-1]["loss"] if outcome.history.epochs else None,
        wall_time_s=time.perf_counter() - start,
        device=str(device),
        versions=run_versions(),
        warnings=[*task.warnings(), *subset.warnings()],
    )


def run_versions() -> dict[str, str]:
    """The software a run used and the CPU's vector ISA (``AVX512``, ``AVX2``, ...): oneDNN
    computes the same run to different last bits on different ISAs, so a bitwise comparison
    of two records holds only when these agree."""
    return {"hiddencost": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "cpu": torch.backends.cpu.get_cpu_capability()}


def _method(cfg: RunConfig) -> TransferMethod:
    """The run's transfer method, from its backbone family's registry."""
    return method_for(cfg.method, resolve_backbone_name(cfg.model).family)


def pack_signature(cfg: RunConfig) -> str | None:
    """What runs must share to train as one pack (:func:`run_pack`): backbone, weights,
    compression, dataset and its split, device, and the method's :meth:`pack_key` (for VP:
    epochs, batch size, canvas and inner size). None: the run trains alone (its method does
    not pack, or its activation quantizers calibrate on its own training subset)."""
    cfg = cfg.resolved()
    key = _method(cfg).pack_key(settings_of(cfg))
    if key is None or cfg.compression.activation_bits is not None:
        return None
    shared = cfg.model_dump(mode="json", include={
        "model", "weights", "checkpoint", "mask", "compression", "dataset", "data_root",
        "download", "split_seed", "skip_unreadable", "device"})
    return json.dumps([shared, list(key) if isinstance(key, tuple) else key], sort_keys=True)


def run_pack(
    cfgs: Sequence[RunConfig],
    out_dirs: Sequence[str | Path | None] | None = None,
    cache: RunCache | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[RunRecord]:
    """Run several experiments that share a :func:`pack_signature` as one pack: the backbone
    is built once and the method's :meth:`~TransferMethod.fit_pack` trains them together
    (VP: one backbone pass per step for all of them). Each record (and ``out_dirs[i]``, when
    given) is the run's own, equal to what :func:`run_one` gives it alone up to float
    reordering across batch sizes; ``wall_time_s`` is the pack's. ``on_epoch`` follows the
    first run. A pack of one is :func:`run_one`.
    """
    start = time.perf_counter()
    cfgs = [cfg.resolved() for cfg in cfgs]
    if not cfgs:
        return []
    signatures = {pack_signature(c) for c in cfgs} if len(cfgs) > 1 else set()
    if None in signatures or len(signatures) > 1:
        raise HiddenCostError("the runs of a pack must share backbone, compression, dataset, "
                              "device and the method's schedule (see pack_signature)")
    out_dirs = list(out_dirs) if out_dirs is not None else [None] * len(cfgs)
    cache = cache or RunCache()
    first = cfgs[0]
    device = resolve_device(first.device)
    methods = [_method(cfg) for cfg in cfgs]
    settings = [settings_of(cfg) for cfg in cfgs]
    task = cache.dataset(first, methods[0].stored_image_size(settings[0]))
    subsets = [few_shot_indices(task.train_labels, cfg.n_shot, cfg.seed) for cfg in cfgs]
    backbone, info, report = _backbone(first, methods[0], settings[0], task,
                                       subsets[0].indices, device)
    jobs = [TransferJob(
        backbone=backbone, num_source=info.num_classes, mean=info.mean, std=info.std,
        task=task, subset=subset.indices, settings=s, device=device,
        on_epoch=on_epoch if i == 0 else None, memo=cache.memo(cfg, task.image_size),
    ) for i, (cfg, s, subset) in enumerate(zip(cfgs, settings, subsets, strict=True))]
    outcomes = methods[0].fit_pack(list(zip(methods, jobs, strict=True)))
    records = []
    for cfg, outcome, subset, out_dir in zip(cfgs, outcomes, subsets, out_dirs, strict=True):
        record = _record(cfg, outcome, task, subset, info, report, device, start)
        if out_dir is not None:
            write_result(record, outcome.tensors, outcome.history.prompts, Path(out_dir))
        records.append(record)
    return records


def run_one(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    cache: RunCache | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> RunRecord:
    """Run one experiment and return its result record (also written to ``out_dir``).

    The record holds the resolved configuration, every metric of
    :func:`hiddencost.metrics.calibration_summary`, ``paper_ece``, the label mapping with class
    names, the compression report (measured sparsity and bit-widths), the per-epoch history,
    effective shots per class and wall time. Test results are those of the final epoch.
    """
    return run_pack([cfg], [out_dir], cache, on_epoch)[0]


def write_result(
    record: RunRecord, tensors: dict[str, torch.Tensor], prompts: list[torch.Tensor],
    out_dir: Path,
) -> None:
    """``result.json``, ``weights.safetensors`` (prompt / FM / LP head) and, if kept,
    ``prompt_history.safetensors`` (δ after each epoch, stacked E×3×C×C)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "weights.safetensors"))
    if prompts:
        save_file({"delta": torch.stack(prompts).contiguous()},
                  str(out_dir / "prompt_history.safetensors"))
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record.to_json(), indent=2, allow_nan=False))
    tmp.replace(out_dir / "result.json")
