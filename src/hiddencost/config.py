"""The configuration of one experiment: :class:`RunConfig`, its protocol defaults and identity.

Torch-free at import: a study's specs and runs are parsed, keyed and compared without loading a
model. Filling the protocol defaults (:meth:`RunConfig.resolved`) reads the registries of
backbones, datasets and transfer methods, which is when torch loads.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from hiddencost.compression import CompressionSpec, Dense
from hiddencost.errors import HiddenCostError, validation_message


def _known_method(name: str) -> str:
    from hiddencost.prompting.catalog import method_names  # lazy: the registry loads torch

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
        from hiddencost.backbones import resolve_backbone_name  # lazy: registries load torch
        from hiddencost.data import dataset_info  # lazy: as above
        from hiddencost.prompting.catalog import (  # lazy: as above
            method_for,
            methods_reading,
            methods_where,
        )

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


