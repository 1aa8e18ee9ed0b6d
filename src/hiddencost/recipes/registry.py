"""The recipes of ``hiddencost compress`` as registered objects: one-shot (magnitude, random,
quantize), GMP, IMP and structured pruning, behind one ``run`` signature.

Every recipe reads the same typed :class:`CompressOptions` (the command's knobs), says whether it
needs training images (:meth:`Recipe.needs_data`), compresses the model in place and returns a
:class:`RecipeResult` (its configuration, claimed weight bits, extra JSON for the artifact). A new
recipe is one ``RECIPES.add`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from hiddencost.compression import apply_compression, compression_or_error
from hiddencost.compression.parse import flag_fields
from hiddencost.data import image_dataset, load_dataset
from hiddencost.errors import HiddenCostError, validation_message
from hiddencost.model_table import BackboneInfo
from hiddencost.recipes.gmp import GMPConfig, gmp_prune
from hiddencost.recipes.imp import IMPConfig, imp_prune
from hiddencost.recipes.structured import StructuredConfig, structured_prune
from hiddencost.recipes.training import FinetuneConfig, TrainData
from hiddencost.registry import Registry

__all__ = [
    "RECIPES",
    "CompressOptions",
    "Recipe",
    "RecipeResult",
    "train_data",
]

Log = Callable[[str], None]


class CompressOptions(BaseModel):
    """Every knob of ``hiddencost compress``; each recipe reads the ones it uses."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sparsity: float = 0.5
    scope: Literal["global", "layer"] = "global"
    weight_bits: int | None = None
    activation_bits: int | None = None
    exclude_first_conv: bool = False
    exclude_classifier: bool = False
    input_size: int | None = None
    steps: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    loss: Literal["distill", "ce"] = "distill"
    n_events: int = 10
    frequency: int = 5
    start_step: int = 0
    levels: int = 3
    fraction: float = 0.2
    rewind_step: int = 0
    target_ratio: float = 0.5
    target: Literal["params", "flops"] = "params"
    seed: int = 0
    compression: str | None = None

    @property
    def exclusions(self) -> dict[str, bool]:
        return {"exclude_first_conv": self.exclude_first_conv,
                "exclude_classifier": self.exclude_classifier}

    @classmethod
    def parse(cls, **options: Any) -> CompressOptions:
        """Validated options; bad values are a one-line :class:`HiddenCostError`."""
        try:
            return cls(**options)
        except ValidationError as exc:
            raise HiddenCostError(f"invalid --{validation_message(exc).replace('_', '-')}") \
                from None

    def finetune(self) -> FinetuneConfig:
        return FinetuneConfig(batch_size=self.batch_size, lr=self.lr, loss=self.loss,
                              seed=self.seed)


@dataclass
class RecipeResult:
    """What a recipe did: its configuration, the weight bits it claims, extra artifact JSON."""

    config: dict[str, Any]
    weight_bits: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Recipe(Protocol):
    """One way of compressing a backbone."""

    name: str

    def needs_data(self, opts: CompressOptions) -> bool:
        """Whether :meth:`run` needs training images."""
        ...

    def run(self, net: nn.Module, info: BackboneInfo, opts: CompressOptions,
            data: TrainData | None, device: torch.device, out: Path, log: Log) -> RecipeResult:
        """Compress ``net`` in place (``out`` is the artifact folder, for recipes that write
        more, e.g. IMP's open_lth levels)."""
        ...


class OneShot:
    """One-shot compression with a :data:`~hiddencost.compression.CompressionSpec`, no training."""

    def __init__(self, name: Literal["magnitude", "random", "quantize"]) -> None:
        self.name = name

    def spec(self, opts: CompressOptions) -> Any:
        if self.name == "quantize":
            if opts.weight_bits is None and opts.activation_bits is None:
                raise HiddenCostError(
                    "--recipe quantize needs --weight-bits and/or --activation-bits")
            fields = flag_fields("none", 0.0, opts.scope, opts.weight_bits, opts.activation_bits,
                                 opts.exclude_first_conv, opts.exclude_classifier, opts.seed)
        else:
            fields = flag_fields(self.name, opts.sparsity, opts.scope, None, None,
                                 opts.exclude_first_conv, opts.exclude_classifier, opts.seed)
        return compression_or_error(fields)

    def needs_data(self, opts: CompressOptions) -> bool:
        return opts.activation_bits is not None  # activation quantizers calibrate on images

    def run(self, net: nn.Module, info: BackboneInfo, opts: CompressOptions,
            data: TrainData | None, device: torch.device, out: Path, log: Log) -> RecipeResult:
        spec = self.spec(opts)
        calibration = None
        if data is not None:
            calibration = data.preprocess()(data.images[:256].float() / 255)
        report = apply_compression(net, spec, calibration_images=calibration)
        return RecipeResult(spec.model_dump(mode="json"), spec.weight_bits,
                            {"compression_report": report.to_dict()})


class OneShotSpec:
    """Any one-shot compression given in its short form (``--compression nm:2:4``,
    ``wanda-nm:2:4``, ``gptq:4``, ``lowrank:0.25``, ...): applied as a run applies it,
    calibrated on the first 256 training images when it needs calibration. A spec that replaces
    layers (low rank) is recorded as the artifact's ``restructure``, re-applied to the fresh
    architecture before its weights load."""

    name = "oneshot"

    def spec(self, opts: CompressOptions) -> Any:
        if opts.compression is None:
            raise HiddenCostError("--recipe oneshot needs --compression (e.g. nm:2:4, gptq:4)")
        return compression_or_error(opts.compression)

    def needs_data(self, opts: CompressOptions) -> bool:
        return self.spec(opts).needs_calibration

    def run(self, net: nn.Module, info: BackboneInfo, opts: CompressOptions,
            data: TrainData | None, device: torch.device, out: Path, log: Log) -> RecipeResult:
        spec = self.spec(opts)
        calibration = data.preprocess()(data.images[:256].float() / 255) if data else None
        report = apply_compression(net, spec, calibration_images=calibration)
        extra: dict[str, Any] = {"compression_report": report.to_dict()}
        if spec.restructures:
            extra["restructure"] = spec.model_dump(mode="json")
        return RecipeResult(spec.model_dump(mode="json"), spec.weight_bits, extra)


class _FineTuning:
    """A recipe that trains (it always needs training images): a config from the options, then
    a training run whose record goes into the artifact's JSON."""

    def needs_data(self, opts: CompressOptions) -> bool:
        return True

    def run(self, net: nn.Module, info: BackboneInfo, opts: CompressOptions,
            data: TrainData | None, device: torch.device, out: Path, log: Log) -> RecipeResult:
        cfg = self.config(opts)
        return RecipeResult(cfg.to_dict(), extra=self.train(net, data, cfg, device, out, log))

    def config(self, opts: CompressOptions) -> Any:
        raise NotImplementedError

    def train(self, net: nn.Module, data: TrainData | None, cfg: Any, device: torch.device,
              out: Path, log: Log) -> dict[str, Any]:
        raise NotImplementedError


class GradualMagnitude(_FineTuning):
    """GMP: cubic sparsity schedule with fine-tuning (:func:`~hiddencost.recipes.gmp_prune`)."""

    name = "gmp"

    def config(self, opts: CompressOptions) -> GMPConfig:
        return GMPConfig(final_sparsity=opts.sparsity, n_events=opts.n_events,
                         frequency=opts.frequency, start_step=opts.start_step,
                         total_steps=opts.steps, scope=opts.scope, finetune=opts.finetune(),
                         **opts.exclusions)

    def train(self, net: nn.Module, data: TrainData | None, cfg: Any, device: torch.device,
              out: Path, log: Log) -> dict[str, Any]:
        result = gmp_prune(net, data, cfg, device, on_event=lambda t, s, m: log(
            f"step {t}: target {s:.4f}, measured {m:.4f}"))
        return {"events": result.events}


class IterativeMagnitude(_FineTuning):
    """IMP (lottery tickets) with rewinding; every level in open_lth's layout under ``out``."""

    name = "imp"

    def config(self, opts: CompressOptions) -> IMPConfig:
        return IMPConfig(levels=opts.levels, fraction=opts.fraction,
                         rewind_step=opts.rewind_step, train_steps=opts.steps,
                         finetune=opts.finetune(), **opts.exclusions)

    def train(self, net: nn.Module, data: TrainData | None, cfg: Any, device: torch.device,
              out: Path, log: Log) -> dict[str, Any]:
        levels = imp_prune(net, data, cfg, out / "open_lth", device, on_level=lambda lv: log(
            f"level {lv.level}: {lv.remaining}/{lv.total} weights remain "
            f"(sparsity {lv.sparsity:.4f}) -> {lv.path}"))
        return {"levels": [{"level": lv.level, "path": str(lv.path), "sparsity": lv.sparsity}
                           for lv in levels]}


class StructuredPruning:
    """Channel pruning to a parameter or FLOP ratio (Torch-Pruning), optional fine-tuning."""

    name = "structured"

    def needs_data(self, opts: CompressOptions) -> bool:
        return opts.steps > 0

    def run(self, net: nn.Module, info: BackboneInfo, opts: CompressOptions,
            data: TrainData | None, device: torch.device, out: Path, log: Log) -> RecipeResult:
        cfg = StructuredConfig(target_ratio=opts.target_ratio, target=opts.target,
                               input_size=opts.input_size or info.input_size,
                               finetune_steps=opts.steps if data is not None else 0,
                               finetune=opts.finetune())
        result = structured_prune(net, cfg, data, device)
        log(f"params {result.params_before} -> {result.params_after}, "
            f"MACs {result.flops_before} -> {result.flops_after}")
        return RecipeResult(cfg.to_dict(), extra={"structured": result.to_dict()})


#: The registered recipes by name (``--recipe``).
RECIPES: Registry[Recipe] = Registry("--recipe")


def train_data(info: BackboneInfo, dataset: str, data_root: str | None,
               input_size: int | None, limit: int | None) -> TrainData:
    """A dataset's training split as recipe input, preprocessed as ``info``'s backbone wants
    (an image dataset: a sequence task is a one-line error)."""
    image_dataset(dataset, "--dataset")
    task = load_dataset(dataset, root=data_root)
    images, labels = task.train_images, task.train_labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    return TrainData(images, labels, input_size or info.input_size, info.mean, info.std)


for _recipe in (OneShot("magnitude"), OneShot("random"), OneShot("quantize"), OneShotSpec(),
                GradualMagnitude(), IterativeMagnitude(), StructuredPruning()):
    RECIPES.add(_recipe.name, _recipe)
