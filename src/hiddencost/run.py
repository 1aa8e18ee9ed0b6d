"""One experiment: backbone → compression → dataset + few-shot subset → transfer → metrics.

:func:`run_one` is the single entry point that the CLI, the quickstart and studies call. It looks
the transfer method up in the registry (:mod:`hiddencost.prompting.methods`) and returns a typed
:class:`~hiddencost.records.RunRecord` (written as ``result.json``) plus, when ``out_dir`` is
given, the learned prompt (or LP head) as safetensors beside it.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from hiddencost import __version__
from hiddencost.backbones import BackboneEntry, BackboneInfo, create_model
from hiddencost.compression import CompressionReport, apply_compression
from hiddencost.config import (  # noqa: F401 (re-exported: run_one's configuration)
    ENVIRONMENT_FIELDS,
    MAX_LR,
    Method,
    RunConfig,
    make_config,
)
from hiddencost.data import (
    FewShotSubset,
    TaskData,
    dataset_info,
    few_shot_indices,
    load_dataset,
)
from hiddencost.data.few_shot import validation_split
from hiddencost.data.sequences import SequenceTask
from hiddencost.device import resolve_device
from hiddencost.errors import HiddenCostError
from hiddencost.frozen import prepare_frozen
from hiddencost.metrics import calibration_summary, fit_temperature, paper_ece
from hiddencost.precision import resolve_precision, training_dtype
from hiddencost.predictions import write_predictions
from hiddencost.prompting.catalog import (
    card_of,
)
from hiddencost.prompting.methods import (
    TransferJob,
    TransferMethod,
    TransferOutcome,
    TransferSettings,
)
from hiddencost.prompting.run_state import STATE_FILE, StateFile
from hiddencost.records import EpochRecord, Recalibration, RunRecord

#: Images used to calibrate activation quantizers (the training subset's first ones).
CALIBRATION_IMAGES = 256


@dataclass
class RunCache:
    """Objects worth reusing between runs of one process: loaded datasets and LP features."""

    datasets: dict[tuple, TaskData | SequenceTask] = field(default_factory=dict)
    features: dict[tuple, Any] = field(default_factory=dict)

    def dataset(self, cfg: RunConfig, image_size: int,
                fit: str = "squash") -> TaskData | SequenceTask:
        env = cfg.environment
        key = (cfg.dataset, env.data_root, image_size, fit, cfg.split_seed, cfg.skip_unreadable)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(
                cfg.dataset, root=env.data_root, download=env.download,
                image_size=image_size, split_seed=cfg.split_seed,
                skip_unreadable=cfg.skip_unreadable, fit=fit,
            )
        return self.datasets[key]

    def memo(self, cfg: RunConfig, image_size: int,
             fit: str = "squash") -> Callable[[Callable[[], Any]], Any]:
        """A memo for work that depends only on the backbone, its compression and the task
        (LP features). Activation quantizers calibrate on the training subset, so a model with
        quantized activations gets no cache: its features are per run."""
        if cfg.compression.activation_bits is not None:
            return lambda compute, *extra: compute()
        key = (cfg.model, cfg.weights, cfg.checkpoint, cfg.mask, cfg.compression, cfg.dataset,
               cfg.split_seed, cfg.skip_unreadable, image_size, fit, cfg.lp_image_size)

        def memo(compute: Callable[[], Any], *extra: Any) -> Any:
            full = (key, extra)
            if full not in self.features:
                self.features[full] = compute()
            return self.features[full]

        return memo


@dataclass(frozen=True)
class ResolvedRun:
    """A configuration resolved once (:func:`resolve`): protocol defaults filled in, the
    backbone, the method and its options looked up in their registries. Packing, the cost plan,
    the run and its record read this instead of resolving names again."""

    config: RunConfig  # resolved: no field left to a default
    backbone: BackboneEntry
    method: TransferMethod
    settings: TransferSettings

    @property
    def family(self) -> str:
        """The backbone's network family (``timm``, ``open_clip``)."""
        return self.backbone.family

    def pack_signature(self) -> str | None:
        """What runs must share to train as one pack (:func:`run_pack`): backbone, weights,
        compression, dataset and its split, device, and the method's :meth:`pack_key` (VP:
        epochs, batch size, canvas and inner size). None: the run trains alone (its method
        does not pack, or its activation quantizers calibrate on its own training subset)."""
        key = self.method.pack_key(self.settings)
        if key is None or self.config.compression.activation_bits is not None:
            return None
        shared = self.config.model_dump(mode="json", include={
            "model", "weights", "checkpoint", "mask", "compression", "dataset", "split_seed",
            "skip_unreadable", "environment"})
        return json.dumps([shared, list(key) if isinstance(key, tuple) else key],
                          sort_keys=True)


def resolve(cfg: RunConfig) -> ResolvedRun:
    """``cfg`` resolved once (see :class:`ResolvedRun`); bad names or options are one-line
    errors."""
    cfg, backbone, method = cfg.resolved_parts()
    settings = TransferSettings(
        epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,  # type: ignore[arg-type]
        seed=cfg.seed, canvas_size=cfg.canvas_size, inner_size=cfg.inner_size,  # type: ignore[arg-type]
        lp_image_size=cfg.lp_image_size,  # type: ignore[arg-type]
        save_prompt_history=cfg.save_prompt_history,
        options=method.options.model_validate(cfg.options),
    )
    return ResolvedRun(cfg, backbone, method, settings)


def _backbone(
    run: ResolvedRun, task: TaskData | SequenceTask, subset: torch.Tensor, device: torch.device,
) -> tuple[torch.nn.Module, BackboneInfo, CompressionReport]:
    """The compressed, frozen backbone; activation quantizers calibrate on the first training
    examples as the method feeds them."""
    cfg, method, settings = run.config, run.method, run.settings
    model, info = create_model(cfg.model, weights=cfg.weights, checkpoint=cfg.checkpoint,
                               download=cfg.environment.download, mask=cfg.mask, seed=cfg.seed)
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


def _record(run: ResolvedRun, outcome: TransferOutcome, task: TaskData | SequenceTask,
            subset: FewShotSubset,
            info: BackboneInfo, report: CompressionReport, device: torch.device,
            precision: str, start: float) -> RunRecord:
    cfg, logits = run.config, outcome.logits
    summary = calibration_summary(logits.softmax(dim=1), task.test_labels)
    return RunRecord(
        config=cfg.model_dump(mode="json", exclude=cfg.unset_optional() or None),
        method=card_of(run.method, run.family),
        network_family=run.family,
        label_mapping=_mapping_table(outcome, task, info),
        mapping_history=outcome.mapping_history,
        **summary,
        paper_ece=paper_ece(logits, task.test_labels, batch_size=_reference_test_batch(cfg)),
        compression=report,
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
        final_train_loss=outcome.history.epochs[-1].loss if outcome.history.epochs else None,
        wall_time_s=time.perf_counter() - start,
        device=str(device),
        precision=precision,
        versions=run_versions(),
        warnings=[*task.warnings(), *subset.warnings()],
        trained_backbone=outcome.trained_backbone,
        prompt_parameters=outcome.prompt_parameters,
    )


def run_versions() -> dict[str, str]:
    """The software a run used and the CPU's vector ISA (``AVX512``, ``AVX2``, ...): oneDNN
    computes the same run to different last bits on different ISAs, so a bitwise comparison
    of two records holds only when these agree."""
    return {"hiddencost": __version__, "torch": torch.__version__,
            "python": platform.python_version(), "cpu": torch.backends.cpu.get_cpu_capability()}


def pack_signature(cfg: RunConfig) -> str | None:
    """:meth:`ResolvedRun.pack_signature` of a configuration."""
    return resolve(cfg).pack_signature()


def run_pack(
    cfgs: Sequence[RunConfig],
    out_dirs: Sequence[str | Path | None] | None = None,
    cache: RunCache | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> list[RunRecord]:
    """Run several experiments that share a :func:`pack_signature` as one pack: the backbone
    is built once and the method's :meth:`~TransferMethod.fit_pack` trains them together
    (VP: one backbone pass per step for all of them). Each record (and ``out_dirs[i]``, when
    given) is the run's own, equal to what :func:`run_one` gives it alone up to float
    reordering across batch sizes; ``wall_time_s`` is the pack's. ``on_epoch`` follows the
    first run. A pack of one is :func:`run_one`. A run given an ``out_dir`` keeps its state
    there at epoch ends (``state.pt``: VP, CLIP VP, xmr) and a run killed before
    its result was written resumes from it; the file goes once the result is written.
    """
    start = time.perf_counter()
    runs = [resolve(cfg) for cfg in cfgs]
    if not runs:
        return []
    signatures = {r.pack_signature() for r in runs} if len(runs) > 1 else set()
    if None in signatures or len(signatures) > 1:
        raise HiddenCostError("the runs of a pack must share backbone, compression, dataset, "
                              "device and the method's schedule (see pack_signature)")
    out_dirs = list(out_dirs) if out_dirs is not None else [None] * len(runs)
    cache = cache or RunCache()
    first = runs[0]
    device = resolve_device(first.config.environment.device)
    fit = first.method.image_fit(first.settings)
    task = cache.dataset(first.config, first.method.stored_image_size(first.settings), fit)
    splits = [training_split(task, r.config) for r in runs]
    subsets = [subset for subset, _ in splits]
    backbone, info, report = _backbone(first, task, subsets[0].indices, device)
    precision = resolve_precision(first.config.environment.precision, device)
    dtype = training_dtype(precision, quantized_activations=report.activation_bits is not None)
    states = [None if d is None else _state_file(r, Path(d), precision)
              for r, d in zip(runs, out_dirs, strict=True)]
    jobs = [TransferJob(
        backbone=backbone, num_source=info.num_classes, mean=info.mean, std=info.std,
        task=task, subset=subset.indices, settings=r.settings, device=device,
        validation=held, compression=r.config.compression,
        on_epoch=on_epoch if i == 0 else None, memo=cache.memo(r.config, task.image_size, fit),
        precision=dtype, state=state,
    ) for i, (r, (subset, held), state) in enumerate(zip(runs, splits, states, strict=True))]
    outcomes = first.method.fit_pack([(r.method, job) for r, job in zip(runs, jobs, strict=True)])
    records = []
    for run, outcome, (subset, held), out_dir in zip(runs, outcomes, splits, out_dirs,
                                                      strict=True):
        record = _record(run, outcome, task, subset, info, report, device, precision, start)
        if held is not None:
            record = record.model_copy(update={"recalibration": recalibration(
                run, outcome, task.train_labels[held], task.test_labels)})
        if out_dir is not None:
            write_result(record, outcome.tensors, outcome.history.prompts, Path(out_dir),
                         outcome.logits, task.test_labels)
        records.append(record)
    for state in states:  # results written: nothing left to resume
        if state is not None:
            state.remove()
    return records


def training_split(task: TaskData | SequenceTask,
                   cfg: RunConfig) -> tuple[FewShotSubset, torch.Tensor | None]:
    """The run's N-shot subset and, with a ``validation_fraction``, the validation indices held
    out of the training pool first (:func:`~hiddencost.data.few_shot.validation_split`, seeded
    by ``split_seed``: every seed and compression of a cell holds out the same examples); the
    subset is drawn from the rest."""
    if cfg.validation_fraction is None:
        return few_shot_indices(task.train_labels, cfg.n_shot, cfg.seed,
                                num_classes=task.num_classes), None
    pool, held = validation_split(task.train_labels, cfg.validation_fraction, cfg.split_seed)
    subset = few_shot_indices(task.train_labels[pool], cfg.n_shot, cfg.seed,
                              num_classes=task.num_classes)
    return dataclasses.replace(subset, indices=pool[subset.indices]), held


def recalibration(run: ResolvedRun, outcome: TransferOutcome, validation_labels: torch.Tensor,
                  test_labels: torch.Tensor) -> Recalibration:
    """Temperature scaling of a run: T fitted on its validation logits
    (:func:`~hiddencost.metrics.fit_temperature`), the test metrics of softmax(z / T)."""
    if outcome.validation_logits is None:
        raise HiddenCostError(f"method {run.config.method!r} does not score a validation split: "
                              "leave validation_fraction unset")
    t = fit_temperature(outcome.validation_logits, validation_labels)
    scaled = calibration_summary((outcome.logits.double() / t).softmax(dim=1), test_labels)
    return Recalibration(n_validation=len(validation_labels), temperature=t, ece=scaled["ece"],
                         nll=scaled["nll"], brier=scaled["brier"])


def _state_file(run: ResolvedRun, out_dir: Path, precision: str) -> StateFile:
    """The run's resumable state in its folder, tagged with its identity and precision (a
    state saved under another configuration or precision is never resumed)."""
    tag = json.dumps({"identity": run.config.identity(), "precision": precision},
                     sort_keys=True)
    return StateFile(out_dir / STATE_FILE, tag)


def run_one(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    cache: RunCache | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
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
    out_dir: Path, logits: torch.Tensor | None = None, labels: torch.Tensor | None = None,
) -> None:
    """``result.json``, ``weights.safetensors`` (prompt / FM / LP head), with ``logits`` and
    ``labels`` the test predictions (:mod:`hiddencost.predictions`) and, if kept,
    ``prompt_history.safetensors`` (δ after each epoch, stacked E×3×C×C). ``result.json`` is
    written last, atomically: its presence means the rest is there."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if logits is not None and labels is not None:
        write_predictions(out_dir, logits.float().numpy(), labels.numpy())
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "weights.safetensors"))
    if prompts:
        save_file({"delta": torch.stack(prompts).contiguous()},
                  str(out_dir / "prompt_history.safetensors"))
    tmp = out_dir / "result.json.tmp"
    tmp.write_text(json.dumps(record.to_json(), indent=2, allow_nan=False))
    tmp.replace(out_dir / "result.json")
