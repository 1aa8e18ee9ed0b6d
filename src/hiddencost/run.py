"""One experiment: backbone → compression → dataset + few-shot subset → VP or LP → metrics.

:func:`run_one` is the single entry point that the CLI, the quickstart and studies call. Its
result is a JSON-safe dict (``result.json``) plus, when ``out_dir`` is given, the learned prompt
(or LP head) as safetensors beside it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from safetensors.torch import save_file

from hiddencost import __version__
from hiddencost.backbones import (
    BackboneInfo,
    create_model,
    prepare_frozen,
    resolve_backbone_name,
)
from hiddencost.compression import CompressionReport, CompressionSpec, apply_compression
from hiddencost.data import (
    DATASETS,
    TaskData,
    batch_size_for,
    dataset_key,
    few_shot_indices,
    load_dataset,
)
from hiddencost.data.transforms import ResizeNormalize
from hiddencost.device import resolve_device
from hiddencost.errors import HiddenCostError
from hiddencost.metrics import calibration_summary, paper_ece
from hiddencost.prompting.linear_probe import extract_features, train_linear_head
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.visual_prompt import predict_logits, to_unit, train_visual_prompt

Method = Literal["ilm", "flm", "rlm", "fm", "lp"]
METHODS: tuple[str, ...] = ("ilm", "flm", "rlm", "fm", "lp")
#: Fields that say where or how a run executes, not what it computes: left out of its identity.
ENVIRONMENT_FIELDS = frozenset({"data_root", "download", "device"})


class RunConfig(BaseModel):
    """Every knob of one experiment. ``None`` means "the protocol default", see :meth:`resolved`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "efficientnet_lite0"
    weights: Literal["pretrained", "random"] = "pretrained"
    checkpoint: str | None = None
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    split_seed: int = Field(0, ge=0)
    method: Method = "ilm"
    n_shot: int | None = Field(None, description="examples per class; None = full data")
    seed: int = Field(0, ge=0)
    compression: CompressionSpec = CompressionSpec()
    epochs: int = Field(100, ge=1)
    lr: float = Field(0.01, gt=0)
    batch_size: int | None = Field(None, ge=1)
    canvas_size: int | None = Field(None, ge=8)
    inner_size: int | None = Field(None, ge=1)
    lp_image_size: int | None = Field(None, ge=8)
    many_to_one: bool = False
    device: str = "auto"
    save_prompt_history: bool = False

    @field_validator("n_shot")
    @classmethod
    def _positive_shot(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"n_shot must be a positive integer or None (full data), got {v}")
        return v

    def resolved(self) -> RunConfig:
        """A copy with the protocol defaults filled in (batch size from the N-shot table, canvas
        = backbone input size, inner size = the dataset's, LP image size = backbone input
        size), so equal experiments compare equal."""
        entry = resolve_backbone_name(self.model)
        info = DATASETS[dataset_key(self.dataset)[0]][0]  # unknown names: a one-line error
        return self.model_copy(
            update={
                "model": entry.name,
                "batch_size": self.batch_size or batch_size_for(self.n_shot),
                "canvas_size": self.canvas_size or entry.cfg.input_size,
                "inner_size": self.inner_size or info.inner_size,
                "lp_image_size": self.lp_image_size or entry.cfg.input_size,
            }
        )

    def identity(self) -> dict[str, Any]:
        """The resolved configuration without environment fields: what defines the result."""
        return self.resolved().model_dump(mode="json", exclude=set(ENVIRONMENT_FIELDS))


def make_config(**kwargs: Any) -> RunConfig:
    """Build a :class:`RunConfig`, turning validation errors into one-line HiddenCostErrors."""
    try:
        return RunConfig(**kwargs)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise HiddenCostError(f"invalid {where}: {err['msg']}") from None


@dataclass
class RunCache:
    """Objects worth reusing between runs of one process: loaded datasets and LP features."""

    datasets: dict[tuple, TaskData] = field(default_factory=dict)
    features: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def dataset(self, cfg: RunConfig, image_size: int) -> TaskData:
        key = (cfg.dataset, cfg.data_root, image_size, cfg.split_seed)
        if key not in self.datasets:
            self.datasets[key] = load_dataset(
                cfg.dataset, root=cfg.data_root, download=cfg.download,
                image_size=image_size, split_seed=cfg.split_seed,
            )
        return self.datasets[key]


def _lp_storage_size(inner_size: int, lp_size: int) -> int:
    # 32-px tasks (CIFAR-10, SVHN, GTSRB, digits) are natively that small, so storing them larger
    # gains nothing; larger-image tasks are stored at the LP input size.
    return min(inner_size, lp_size) if inner_size <= 32 else lp_size


def _backbone(
    cfg: RunConfig, device: torch.device, calibration: torch.Tensor | None
) -> tuple[torch.nn.Module, BackboneInfo, CompressionReport]:
    model, info = create_model(cfg.model, weights=cfg.weights, checkpoint=cfg.checkpoint,
                               download=cfg.download)
    report = apply_compression(model, cfg.compression, calibration_images=calibration)
    size = cfg.lp_image_size if cfg.method == "lp" else cfg.canvas_size
    return prepare_frozen(model, device, size), info, report


def _mapping_table(mapping: list[int], task: TaskData, info: BackboneInfo) -> list[dict]:
    return [
        {"target": t, "target_name": task.class_names[t], "source": s,
         "source_name": info.class_names[s]}
        for t, s in enumerate(mapping)
    ]


def run_one(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    cache: RunCache | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> dict[str, Any]:
    """Run one experiment and return its result record (also written to ``out_dir``).

    The record holds the resolved configuration, every metric of
    :func:`hiddencost.metrics.calibration_summary`, ``paper_ece``, the label mapping with class
    names, the compression report (measured sparsity and bit-widths), the per-epoch history,
    effective shots per class and wall time. Test results are those of the final epoch.
    """
    start = time.perf_counter()
    cfg = cfg.resolved()
    cache = cache or RunCache()
    device = resolve_device(cfg.device)
    entry = resolve_backbone_name(cfg.model)
    calib_n = 256  # images used to calibrate activation quantizers (training subset only)

    if cfg.method == "lp":
        task = cache.dataset(cfg, _lp_storage_size(cfg.inner_size, cfg.lp_image_size))
    else:
        task = cache.dataset(cfg, cfg.inner_size)
    subset = few_shot_indices(task.train_labels, cfg.n_shot, cfg.seed)
    train_x = task.train_images[subset.indices]
    train_y = task.train_labels[subset.indices]

    record: dict[str, Any] = {"config": cfg.model_dump(mode="json")}
    if cfg.method == "lp":
        pre = ResizeNormalize(cfg.lp_image_size, entry.cfg.mean, entry.cfg.std)
        calibration = pre(to_unit(train_x[:calib_n], torch.device("cpu")))
        backbone, info, report = _backbone(cfg, device, calibration)
        feat_key = (cfg.model, cfg.weights, cfg.checkpoint, cfg.compression, cfg.dataset,
                    cfg.split_seed, task.image_size, cfg.lp_image_size)
        # Activation quantizers calibrate on the training subset, so their features are per run.
        if feat_key not in cache.features or cfg.compression.activation_bits is not None:
            train_all = extract_features(backbone, pre, task.train_images, device)
            test_all = extract_features(backbone, pre, task.test_images, device)
            cache.features[feat_key] = (train_all, test_all)
        train_feats, test_feats = cache.features[feat_key]
        head, history = train_linear_head(
            train_feats[subset.indices], train_y, task.num_classes, cfg.epochs, cfg.batch_size,
            cfg.seed, device, lr=cfg.lr, on_epoch=on_epoch,
        )
        with torch.inference_mode():
            logits = head(test_feats.to(device)).float().cpu()
        record["label_mapping"] = None
        tensors = {"head.weight": head.weight.detach().cpu(), "head.bias": head.bias.detach().cpu()}
    else:
        prompt = PadPrompt(cfg.canvas_size, cfg.inner_size, entry.cfg.mean, entry.cfg.std)
        with torch.no_grad():
            calibration = prompt(to_unit(train_x[:calib_n], torch.device("cpu")))
        backbone, info, report = _backbone(cfg, device, calibration)
        model, history = train_visual_prompt(
            backbone, prompt, train_x, train_y, task.num_classes, info.num_classes, cfg.method,
            cfg.epochs, cfg.batch_size, cfg.seed, device, lr=cfg.lr,
            many_to_one=cfg.many_to_one, save_prompt_history=cfg.save_prompt_history,
            on_epoch=on_epoch,
        )
        logits = predict_logits(model, task.test_images, device)
        if cfg.method == "fm":
            record["label_mapping"] = None
        else:
            record["label_mapping"] = _mapping_table(model.mapping.tolist(), task, info)
            record["mapping_history"] = history.mappings
        tensors = {"prompt.delta": model.prompt.delta.detach().cpu()}
        if model.fm is not None:
            tensors.update({f"fm.{k}": v.detach().cpu() for k, v in model.fm.state_dict().items()})

    probs = logits.softmax(dim=1)
    summary = calibration_summary(probs, task.test_labels)
    record.update(summary)
    record["paper_ece"] = paper_ece(logits, task.test_labels, batch_size=cfg.batch_size)
    record["compression"] = report.to_dict()
    record["sparsity"] = report.measured_sparsity
    record["weight_bits"] = report.weight_bits
    record["activation_bits"] = report.activation_bits
    record["backbone_weights"] = info.weights
    record["n_train"] = len(subset)
    record["n_test"] = len(task.test_labels)
    record["effective_shots"] = {str(k): v for k, v in subset.effective_counts.items()}
    record["history"] = history.epochs
    record["final_train_loss"] = history.epochs[-1]["loss"]
    record["wall_time_s"] = time.perf_counter() - start
    record["device"] = str(device)
    record["versions"] = {"hiddencost": __version__, "torch": torch.__version__,
                          "python": platform.python_version()}
    if out_dir is not None:
        write_result(record, tensors, history.prompts, Path(out_dir))
    return record


def write_result(
    record: dict[str, Any], tensors: dict[str, torch.Tensor], prompts: list[torch.Tensor],
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
    tmp.write_text(json.dumps(record, indent=2, allow_nan=False))
    tmp.replace(out_dir / "result.json")
