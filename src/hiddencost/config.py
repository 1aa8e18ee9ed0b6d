"""The configuration of one experiment: :class:`RunConfig`, its protocol defaults and identity.

Torch-free at import: a study's specs and runs are parsed, keyed and compared without loading a
model. Filling the protocol defaults (:meth:`RunConfig.resolved`) reads the registries of
backbones, datasets and transfer methods, which is when torch loads.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hiddencost.compression import CompressionSpec, Dense
from hiddencost.errors import HiddenCostError, validation_message
from hiddencost.records import check_int64


def _known_method(name: str) -> str:
    from hiddencost.prompting.catalog import method_names  # lazy: the registry loads torch

    if name not in method_names():
        raise ValueError(f"unknown transfer method {name!r}; known: {', '.join(method_names())}")
    return name


#: A transfer method's name, checked against the registry.
Method = Annotated[str, AfterValidator(_known_method)]
#: Fields that say where or how a run executes, not what it computes: left out of its identity.
ENVIRONMENT_FIELDS = frozenset({"data_root", "download", "device", "precision"})


class Precision(StrEnum):
    """A run's numeric precision (see :mod:`hiddencost.precision` for what may run in bf16):
    ``fp32`` throughout, ``bf16`` autocast in training steps, or ``auto`` (bf16 on a CUDA GPU
    with native bf16, else fp32)."""

    FP32 = "fp32"
    BF16 = "bf16"
    AUTO = "auto"


class Environment(BaseModel):
    """Where and how runs execute, never part of a run's identity: the ``device`` (``auto``:
    CUDA when present), the ``precision`` (:class:`Precision`; the one a run used is in its
    record, and a study's store holds one precision), the ``data_root`` of datasets, whether
    downloads are allowed, and the ``checkpoint_root`` that a study's relative checkpoint
    paths are read from. A study run on a laptop and resumed on a cluster keeps its keys
    whatever these are."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = "auto"
    precision: Precision = Precision.AUTO
    data_root: str | None = None
    download: bool = False
    checkpoint_root: str | None = None

    def run_fields(self) -> dict[str, Any]:
        """The :data:`ENVIRONMENT_FIELDS` a :class:`RunConfig` carries (device, precision,
        data_root, download)."""
        return self.model_dump(include=set(ENVIRONMENT_FIELDS))


#: The version of a run's identity (what its key hashes). 2: every field with its value,
#: defaults included, and the method's own ``options``; 1 (stores written before): fields
#: added after the first release left out at their default, method options as top-level
#: fields. A store of version-1 keys is re-keyed once (:mod:`hiddencost.study.migrate`).
IDENTITY_VERSION = 2
#: Method options that were top-level fields of a configuration (identity version 1), with
#: the value that meant "unset": given at any other value they become the run's ``options``.
LEGACY_OPTIONS: dict[str, Any] = {
    "many_to_one": False, "mapping_interval": 1, "mapping_num": None, "prompt_init": "zero",
    "test_every_epoch": False, "max_steps": None, "restrict_templates": False,
}


#: Fields added after identity version 2 that are part of a run's identity (and of its record's
#: configuration) only when set: a run that leaves them unset keeps the key (and the record) it
#: had before they existed.
OPTIONAL_FIELDS: tuple[str, ...] = ("validation_fraction",)

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
    #: The method's own options (its :class:`~hiddencost.prompting.methods.MethodOptions`:
    #: VP's mapping_interval, mapping_num, prompt_init, ...; xmr's max_steps), checked and
    #: completed with their defaults by :meth:`resolved`.
    options: dict[str, Any] = Field(default_factory=dict)
    skip_unreadable: bool = Field(False, description="leave unreadable image files out")
    save_prompt_history: bool = False
    validation_fraction: float | None = Field(
        None, gt=0, lt=1, description="hold out this share of each class of the training pool "
        "(seeded by split_seed) and report the test calibration after temperature scaling "
        "fitted on it; None: no validation split (the paper's protocol)")
    #: Where and how the run executes (device, data root, downloads): never in its identity.
    #: ``device=...``, ``data_root=...`` and ``download=...`` given flat are read into it.
    environment: Environment = Field(default_factory=Environment)

    @model_validator(mode="before")
    @classmethod
    def _from_identity(cls, data: Any) -> Any:
        # a run's identity reads back as its configuration (its version is not a knob); the
        # identity-1 spelling had method options as top-level fields (flags, old records)
        if not isinstance(data, dict):
            return data
        data = {k: v for k, v in data.items() if k != "identity_version"}
        if ENVIRONMENT_FIELDS & data.keys():
            env = {k: data.pop(k) for k in list(data) if k in ENVIRONMENT_FIELDS}
            given = data.get("environment") or {}
            base = given.model_dump() if isinstance(given, Environment) else dict(given)
            data["environment"] = {**base, **env}
        if not LEGACY_OPTIONS.keys() & data.keys():
            return data
        options = dict(data.get("options") or {})
        for name, unset in LEGACY_OPTIONS.items():
            if name in data:
                value = data.pop(name)
                if value != unset:
                    options.setdefault(name, value)
        return {**data, "options": options}

    @model_validator(mode="before")
    @classmethod
    def _ints_fit(cls, data: Any) -> Any:
        # every integer (fields, method options) is stored and exported: 64 bits at most
        if isinstance(data, dict):
            check_int64(data)
        return data

    @field_validator("n_shot")
    @classmethod
    def _positive_shot(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"n_shot must be a positive integer or None (full data), got {v}")
        return v

    def resolved(self) -> RunConfig:
        """:meth:`resolved_parts`' configuration."""
        return self.resolved_parts()[0]

    def resolved_parts(self) -> tuple[RunConfig, Any, Any]:
        """(resolved copy, backbone entry, transfer method). The copy has the protocol defaults
        filled in (the method's learning rate, batch size (VP/LP: the N-shot table) and options
        (its options model's defaults; an option it does not have is a one-line error); canvas =
        backbone input size, inner size = the dataset's, LP image size = backbone input size),
        so equal experiments compare equal; the entry and method are the registry objects the
        names resolved to. A method that does not read the dataset's kind of data is a one-line
        error."""
        from hiddencost.backbones import resolve_backbone_name  # lazy: registries load torch
        from hiddencost.data import dataset_info  # lazy: as above
        from hiddencost.prompting.catalog import (  # lazy: as above
            method_for,
            methods_reading,
        )

        entry = resolve_backbone_name(self.model)
        info = dataset_info(self.dataset)  # unknown names: a one-line error
        method = method_for(self.method, entry.family)
        if info.modality != method.modality:
            raise HiddenCostError(
                f"method {self.method!r} reads {method.modality} data and dataset "
                f"{info.name!r} holds {info.modality} data; use "
                f"{', '.join(methods_reading(info.modality))}")
        return self.model_copy(
            update={
                "model": entry.name,
                "lr": self.lr or method.default_lr,
                "batch_size": self.batch_size or method.default_batch_size(self.n_shot),
                "canvas_size": self.canvas_size or entry.cfg.input_size,
                "inner_size": self.inner_size or info.inner_size,
                "lp_image_size": self.lp_image_size or entry.cfg.input_size,
                "options": method_options(method.options, self.options, self.method, entry.name),
            }
        ), entry, method

    def unset_optional(self) -> set[str]:
        """The :data:`OPTIONAL_FIELDS` this configuration leaves unset (None)."""
        return {f for f in OPTIONAL_FIELDS if getattr(self, f) is None}

    def identity(self) -> dict[str, Any]:
        """The resolved configuration without environment fields, with its
        ``identity_version`` (:data:`IDENTITY_VERSION`): what defines the result and what the
        run key hashes. Every field is there with its value, defaults included, but for the
        :data:`OPTIONAL_FIELDS` left unset."""
        data = self.resolved().model_dump(mode="json",
                                          exclude={"environment", *self.unset_optional()})
        return {"identity_version": IDENTITY_VERSION, **data}


def method_options(model: type[BaseModel], given: dict[str, Any], method: str,
                   backbone: str) -> dict[str, Any]:
    """``given`` checked against a method's options ``model`` and completed with its defaults;
    an option the method does not have (or a bad value) is a one-line error naming the ones
    it has."""
    try:
        options = model.model_validate(given).model_dump(mode="json")
    except ValidationError as exc:
        names = ", ".join(model.model_fields) or "none"
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        problem = (f"has no option {where!r}" if err["type"] == "extra_forbidden" else
                   f"option {where}: {err['msg'].removeprefix('Value error, ')}")
        raise HiddenCostError(f"method {method!r} on {backbone} {problem} (its options: "
                              f"{names})") from None
    optional = getattr(model, "OPTIONAL", ())
    return {k: v for k, v in options.items() if k not in optional or v is not None}


def make_config(**kwargs: Any) -> RunConfig:
    """Build a :class:`RunConfig`, turning validation errors into one-line HiddenCostErrors."""
    try:
        return RunConfig(**kwargs)
    except ValidationError as exc:
        msg = validation_message(exc)
        raise HiddenCostError(msg if msg.startswith("unknown key") else f"invalid {msg}") from None


