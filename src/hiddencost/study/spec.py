"""Study specs: one YAML file describes a grid of runs; :func:`expand` turns it into runs.

A spec lists values per axis and shares everything else::

    name: sparse-vp                 # names the default output folder
    description: ILM-VP vs LP on pruned EfficientNet-Lite0
    model: [efficientnet_lite0]     # axis: backbone names (see `hiddencost models`)
    dataset: [digits]               # axis: dataset names (see `hiddencost datasets`)
    compression:                    # axis: one entry per compression family, with its levels
      - method: none                #   dense
      - method: magnitude           #   any CompressionSpec field may be a list: one point each
        sparsity: [0.5, 0.9]
      - method: quantize
        weight_bits: [4, 2]
      - nm:2:4                      #   a short form, as `run --compression` takes it
      - name: acdc                  #   checkpoint families: one checkpoint file per level
        tag: "acdc-s{level}"        #   model becomes <arch>.acdc-s80 (a hiddencost.zoo name)
        checkpoint: "acdc/{arch}_s{level}.pth"   # relative to checkpoint_root
        levels: [80, 90]
        unit: sparsity_percent
      - name: lth                   #   the paper's lottery tickets: a mask file per level, and
        tag: lth-paper              #   file names that count IMP rounds, not levels
        checkpoint: "lth/{arch}_dyn4_{key}_checkpoint.pth"
        mask: "lth/{arch}_dyn4_{key}_mask.pth"  # optional (this one is the format's default)
        levels: [79.122, 11.571]
        keys: [1, 9]                #   {key} of each level (default: the level itself)
        unit: remaining_percent
        models: [resnet50]          #   optional: only these spec models (name or arch)
    method: [ilm, flm, rlm, lp]     # axis
    n_shot: [1, 10, full]           # axis: positive ints or "full"
    seed: [0, 1, 2]                 # axis
    params:                         # shared: any other RunConfig field, or a method option
      epochs: 100                   #   (mapping_interval: 2 reaches the methods that have it)
    checkpoint_root: /data/ckpts    # where relative checkpoint paths live (not part of identity)

An axis may be written as a scalar (``seed: 0``). Unknown keys are errors. The grid is the
product of the axes in the order model → dataset → compression → method → n_shot → seed (so runs
that share data and LP features are adjacent); runs whose resolved configurations are equal are
kept once. ``params`` may also hold the environment fields ``device``, ``data_root`` and
``download``; like ``checkpoint_root`` they say where and how runs execute, not what they
compute, and are not part of a run's identity (see :mod:`hiddencost.study.identity`).

``runner`` (advanced) names a registered study runner, a callable with
:func:`hiddencost.run.run_one`'s signature; the default is ``run_one``. Packages add runners
through the ``hiddencost.runners`` entry-point group (the project's tests install one that
trains nothing, ``synthetic``), a process through
:func:`hiddencost.study.worker.register_runner`; a study file names code, never a path to it.
Whatever a runner returns is checked against the result-record schema
(:class:`hiddencost.records.RunRecord`).
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hiddencost.budgets import parse_n_shot
from hiddencost.compression import CompressionSpec, Dense, parse_compression
from hiddencost.compression.parse import short_form_fields
from hiddencost.compression.spec import FIELD_NAMES
from hiddencost.config import ENVIRONMENT_FIELDS, RunConfig, make_config
from hiddencost.errors import HiddenCostError, validation_message
from hiddencost.locations import is_url
from hiddencost.study.identity import key_of_identity
from hiddencost.study.worker import resolve_runner

#: The axes of a study grid, outermost first (the expansion order).
AXES: tuple[str, ...] = ("model", "dataset", "compression", "method", "n_shot", "seed")
#: Placeholders a checkpoint template may use.
TEMPLATE_FIELDS = frozenset({"level", "key", "model", "arch"})
_PARAM_FIELDS = (frozenset(RunConfig.model_fields) | ENVIRONMENT_FIELDS) - set(AXES) - {
    "environment"}


class CheckpointFamily(BaseModel):
    """A family of compressed checkpoints (e.g. lottery tickets), one file per level.

    ``checkpoint`` is a path template with ``{level}`` (or ``{key}``: the entry of ``keys`` at
    the level's position, e.g. the IMP round a file is named by; the level when there are no
    ``keys``) and optionally ``{model}`` (the name as written in the spec) or ``{arch}`` (the
    registry architecture, e.g. ``resnet50``); ``mask``, a template like it, names a 0/1 mask
    file the checkpoint's format applies (lottery tickets: weight × mask). Relative
    paths are resolved against the study's ``checkpoint_root`` when a run executes (an
    ``http(s)://`` URL template is fetched instead, with ``download: true``), and the
    relative path (not the root) is what identifies the run. ``tag``, a template with the same
    placeholders, names the model ``<arch>.<tag>``: a name of the compression zoo
    (:mod:`hiddencost.zoo`, e.g. ``acdc-s{level}`` → ``resnet50.acdc-s90``) reads the file in
    its published format and checks its claim; without a tag the file is a plain state dict
    loaded strictly into the spec's model. No further compression is applied. A family of
    models that need no file (compact and distilled models, :mod:`hiddencost.compact`: ``tag:
    compact-{key}``, weights from the hub) has a ``tag`` and no ``checkpoint``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    checkpoint: str | None = Field(None, min_length=1)
    levels: list[float | int | str] = Field(min_length=1)
    keys: list[int | str] | None = None
    mask: str | None = Field(None, min_length=1)
    tag: str | None = Field(None, min_length=1)
    unit: str = "level"
    #: The spec models the family applies to, by the name as written or its architecture
    #: (``resnet34``); None: every model. A family published for one architecture only (e.g.
    #: VVTQ's DeiT-T) is then crossed with that model alone.
    models: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _file_or_tag(self) -> CheckpointFamily:
        if self.checkpoint is None and self.tag is None:
            raise ValueError("a checkpoint family needs a checkpoint template or a tag")
        return self

    @field_validator("keys")
    @classmethod
    def _one_key_per_level(cls, v: list | None, info: Any) -> list | None:
        levels = info.data.get("levels")
        if v is not None and levels is not None and len(v) != len(levels):
            raise ValueError(f"keys has {len(v)} entries for {len(levels)} levels")
        return v


@dataclass(frozen=True)
class CompressionPoint:
    """One point of the compression axis: what to apply, and how to tag it in the store."""

    spec: CompressionSpec
    family: str
    label: str
    level: float | int | str | None = None
    unit: str | None = None
    checkpoint: str | None = None  # template, for checkpoint families
    tag: str | None = None  # template of the model's tag, for checkpoint families
    mask: str | None = None  # template of the mask file, for checkpoint families
    key: float | int | str | None = None  # the {key} of this level's templates
    models: tuple[str, ...] | None = None  # the spec models it applies to (None: all)

    def applies_to(self, model: str, arch: str) -> bool:
        """Whether this point is crossed with the spec model ``model`` (architecture ``arch``)."""
        return self.models is None or model in self.models or arch in self.models

    def _fill(self, template: str | None, model: str, arch: str) -> str | None:
        if template is None:
            return None
        key = self.level if self.key is None else self.key
        return template.format(level=self.level, key=key, model=model, arch=arch)

    def checkpoint_for(self, model: str, arch: str) -> str | None:
        """The checkpoint path of this point for one backbone (None when there is none)."""
        return self._fill(self.checkpoint, model, arch)

    def mask_for(self, model: str, arch: str) -> str | None:
        """The mask path of this point for one backbone (None when there is none)."""
        return self._fill(self.mask, model, arch)

    def model_for(self, model: str, arch: str) -> str:
        """The model name of this point: ``<arch>.<tag>`` for tagged families, else ``model``."""
        tag = self._fill(self.tag, model, arch)
        return model if tag is None else f"{arch}.{tag}"

    def tags(self) -> dict[str, Any]:
        return {"family": self.family, "compression": self.label, "level": self.level,
                "unit": self.unit}


@dataclass(frozen=True)
class PlannedRun:
    """One run of an expanded study: its key, its environment-free configuration, its tags."""

    key: str
    identity: dict[str, Any]
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """A short human name: ``arch compression dataset method shot seed``."""
        c = self.identity
        shot = "full" if c["n_shot"] is None else f"{c['n_shot']}-shot"
        return (f"{c['model'].split('.')[0]} {self.tags.get('compression', '?')} {c['dataset']} "
                f"{c['method']} {shot} s{c['seed']}")


def _as_list(value: Any) -> Any:
    return value if isinstance(value, list) else [value]


def _grid_points(entry: dict[str, Any]) -> list[CompressionPoint]:
    unknown = sorted(set(entry) - set(FIELD_NAMES), key=str)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} in a compression entry; known keys: "
                         f"{', '.join(FIELD_NAMES)} (or name/checkpoint/levels/keys/mask/tag/"
                         "unit/models for checkpoint families)")
    keys = list(entry)
    points = []
    for combo in itertools.product(*(_as_list(entry[k]) for k in keys)):
        fields = dict(zip(keys, combo, strict=True))
        try:
            spec = parse_compression(fields)
        except ValidationError as exc:
            raise ValueError(f"compression {fields}: "
                             f"{validation_message(exc, skip=1)}") from None
        points.append(CompressionPoint(spec, spec.family, spec.label, spec.level,
                                       None if spec.unit is None else str(spec.unit)))
    return points


def _family_points(entry: dict[str, Any]) -> list[CompressionPoint]:
    try:
        family = CheckpointFamily.model_validate(entry)
    except ValidationError as exc:
        raise ValueError(f"checkpoint family {entry.get('name', '?')!r}: "
                         f"{validation_message(exc)}") from None
    for what, template in (("checkpoint", family.checkpoint), ("tag", family.tag),
                           ("mask", family.mask)):
        if template is None:
            continue
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as exc:
            raise ValueError(f"{what} template {template!r}: {exc}") from None
        if names - TEMPLATE_FIELDS:
            raise ValueError(f"{what} template {template!r} uses "
                             f"{{{sorted(names - TEMPLATE_FIELDS)[0]}}}; "
                             "only {level}, {key}, {model} and {arch} are known")
    what, template = (("checkpoint", family.checkpoint) if family.checkpoint is not None
                      else ("tag", family.tag))
    names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if not names & {"level", "key"} and len(family.levels) > 1:
        raise ValueError(f"{what} template {template!r} needs {{level}} or {{key}}: "
                         f"family {family.name!r} has {len(family.levels)} levels")
    keys = family.keys or [None] * len(family.levels)
    return [
        CompressionPoint(Dense(), family.name, f"{family.name}-{level}", level,
                         family.unit, family.checkpoint, family.tag, family.mask, key,
                         None if family.models is None else tuple(family.models))
        for level, key in zip(family.levels, keys, strict=True)
    ]


def compression_points(entries: list[dict[str, Any]]) -> list[CompressionPoint]:
    """The points of a compression axis, in the order written (see the module docstring)."""
    points: list[CompressionPoint] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):  # a short form: "w4", "magnitude:0.9", "nm:2:4"
            try:
                entry = short_form_fields(entry)
            except HiddenCostError as exc:
                raise ValueError(f"compression[{i}]: {exc}") from None
        if not isinstance(entry, dict):
            raise ValueError(f"compression[{i}] must be a mapping such as "
                             f"{{method: magnitude, sparsity: [0.5, 0.9]}} or a short form "
                             f"such as w4 or magnitude:0.9, got {entry!r}")
        is_family = {"checkpoint", "levels", "name", "tag", "mask", "keys", "models"} & set(entry)
        try:
            points += _family_points(entry) if is_family else _grid_points(entry)
        except ValueError as exc:
            raise ValueError(f"compression[{i}]: {exc}") from None
    return points


class StudySpec(BaseModel):
    """A validated study: the axes of the grid, shared parameters, execution settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("study", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    model: list[str] = Field(default_factory=lambda: ["efficientnet_lite0"], min_length=1)
    dataset: list[str] = Field(default_factory=lambda: ["digits"], min_length=1)
    compression: list[Any] = Field(default_factory=lambda: [{"method": "none"}], min_length=1)
    #: Method names, checked against the registries when the grid is expanded.
    method: list[str] = Field(default_factory=lambda: ["ilm"], min_length=1)
    n_shot: list[int | None] = Field(default_factory=lambda: [None], min_length=1)
    seed: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [0], min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    checkpoint_root: str | None = None
    runner: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                               description="a registered runner's name (default run_one)")

    @field_validator("model", "dataset", "compression", "method", "seed", mode="before")
    @classmethod
    def _listify(cls, v: Any) -> Any:
        return _as_list(v)

    @field_validator("n_shot", mode="before")
    @classmethod
    def _parse_shots(cls, v: Any) -> list[int | None]:
        try:
            return [parse_n_shot(x) for x in _as_list(v)]
        except HiddenCostError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("compression")
    @classmethod
    def _valid_compression(cls, v: list[Any]) -> list[Any]:
        compression_points(v)
        return v

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any]) -> dict[str, Any]:
        # keys that are not run settings are method options, checked when the grid expands
        for key in v:
            if key in AXES:
                raise ValueError(f"{key!r} is an axis of the grid: list it at the top level, "
                                 "not under params")
        return v

    def environment(self) -> dict[str, Any]:
        """The environment fields given in ``params`` (device, data_root, download)."""
        return {k: v for k, v in self.params.items() if k in ENVIRONMENT_FIELDS}

    def with_params(self, **overrides: Any) -> StudySpec:
        """A copy with some shared parameters replaced (validated again)."""
        data = self.model_dump()
        data["params"] = {**self.params, **overrides}
        return StudySpec.model_validate(data)

    def to_yaml(self) -> str:
        """The spec as YAML (defaults omitted), loadable with :func:`parse_spec`."""
        data = self.model_dump(mode="json")
        data["n_shot"] = ["full" if n is None else n for n in data["n_shot"]]
        data = {k: v for k, v in data.items() if v not in (None, "", {})}
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100,
                              allow_unicode=True)


def _check_family_models(spec: StudySpec) -> None:
    """A checkpoint family's ``models:`` must name models of the study (by name or arch)."""
    points = compression_points(spec.compression)
    if not any(p.models for p in points):
        return
    from hiddencost.backbones import resolve_backbone_name  # lazy: the registry loads torch

    known = set(spec.model)
    for m in spec.model:
        try:
            known.add(resolve_backbone_name(m).arch)
        except HiddenCostError:
            pass  # an unknown model is reported, with its source, by parse_spec
    for point in points:
        unknown = sorted(set(point.models or ()) - known)
        if unknown:
            raise HiddenCostError(f"compression family {point.family!r} names model "
                                  f"{unknown[0]!r}, which is not one of the study's models "
                                  f"({', '.join(spec.model)})")


def parse_spec(text: str, source: str = "<spec>", default_name: str = "study",
               check: bool = True) -> StudySpec:
    """Parse and validate YAML text; every problem becomes a one-line HiddenCostError. With
    ``check`` (the default) every run of the grid is resolved too (names against the
    registries, values against the protocol), which loads torch; without it only the file's
    structure is checked (enough to read a finished study's results)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise HiddenCostError(f"{source} is not valid YAML: {problem}{where}") from None
    if raw is None:
        raise HiddenCostError(f"{source} is empty; a study needs at least a model and a dataset")
    if not isinstance(raw, dict):
        raise HiddenCostError(f"{source} must be a mapping of keys (name, model, dataset, ...), "
                              f"not a {type(raw).__name__}")
    unknown = [k for k in raw if k not in StudySpec.model_fields]
    if unknown:
        raise HiddenCostError(f"{source}: unknown key {unknown[0]!r}; known keys: "
                              f"{', '.join(StudySpec.model_fields)}")
    raw = {"name": default_name, **raw}
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as exc:
        raise HiddenCostError(f"{source}: {validation_message(exc)}") from None
    if not check:
        return spec
    try:
        _check_family_models(spec)
        if spec.runner is not None:
            resolve_runner(spec.runner)  # an unknown runner fails here, not in every run
        expand(spec)  # every run must be a valid configuration (names, values)
    except HiddenCostError as exc:
        raise HiddenCostError(f"{source}: {exc}") from None
    return spec


def _option_names(method: str, family: str) -> frozenset[str]:
    """The options ``method`` has on ``family`` backbones (none for a method the family lacks:
    resolving the run then says so)."""
    from hiddencost.prompting.catalog import method_for  # lazy: the registry loads torch

    try:
        return frozenset(method_for(method, family).options.model_fields)
    except HiddenCostError:
        return frozenset()


def _grid(spec: StudySpec, environment: dict[str, Any]
          ) -> Iterator[tuple[RunConfig, CompressionPoint]]:
    """Every point of the grid as written (protocol defaults unresolved, duplicates kept), in
    expansion order, with its compression point. A ``params`` key that is not a run setting is
    a method option, given to the runs whose method has it; one that no method of the study
    has is a one-line error."""
    from hiddencost.backbones import resolve_backbone_name  # lazy: the registry loads torch

    points = compression_points(spec.compression)
    params = {k: v for k, v in spec.params.items() if k not in ENVIRONMENT_FIELDS}
    options = {k: params.pop(k) for k in list(params) if k not in _PARAM_FIELDS}
    used: set[str] = set()
    for model in spec.model:
        entry = resolve_backbone_name(model)
        arch = entry.arch
        readable = {m: _option_names(m, entry.family) for m in spec.method}
        for dataset, point, method, shot, seed in itertools.product(
            spec.dataset, [p for p in points if p.applies_to(model, arch)], spec.method,
            spec.n_shot, spec.seed
        ):
            mine = {k: v for k, v in options.items() if k in readable[method]}
            used |= mine.keys()
            kwargs = {**params, "model": point.model_for(model, arch), "dataset": dataset,
                      "compression": point.spec, "method": method, "n_shot": shot, "seed": seed,
                      "options": {**params.get("options", {}), **mine}, **environment}
            for name, path in (("checkpoint", point.checkpoint_for(model, arch)),
                               ("mask", point.mask_for(model, arch))):
                if path is not None:
                    kwargs[name] = path
            yield make_config(**kwargs), point
    unused = sorted(options.keys() - used)
    if unused:
        raise HiddenCostError(f"unknown parameter {unused[0]!r}: not a run setting "
                              f"({', '.join(sorted(_PARAM_FIELDS))}) nor an option of the "
                              f"study's methods ({', '.join(spec.method)})")


def spec_fingerprint(spec: StudySpec) -> str:
    """What identifies a spec's expansion, hashed as a run key is: its name, grid and shared
    parameters, not its description, runner, environment fields or checkpoint root (which do
    not change its runs)."""
    data = spec.model_dump(mode="json", exclude={"description", "checkpoint_root", "runner"})
    data["params"] = {k: v for k, v in data["params"].items() if k not in ENVIRONMENT_FIELDS}
    return key_of_identity(data)


def expand(spec: StudySpec) -> list[PlannedRun]:
    """Every run of the grid, once each, in expansion order (see the module docstring)."""
    runs: dict[str, PlannedRun] = {}
    for cfg, point in _grid(spec, {}):
        identity = cfg.identity()
        key = key_of_identity(identity)
        if key not in runs:
            runs[key] = PlannedRun(key, identity, point.tags())
    return list(runs.values())


def run_configs(spec: StudySpec, **environment: Any) -> list[RunConfig]:
    """The configuration of each run of :func:`expand` (same runs, same order) as the spec
    writes it: protocol defaults unresolved, environment fields (device, data_root, download)
    from the spec's ``params`` and, overriding them, from ``environment``."""
    unknown = set(environment) - ENVIRONMENT_FIELDS
    if unknown:
        raise ValueError(f"not environment fields: {', '.join(sorted(unknown))}")
    configs: dict[str, RunConfig] = {}
    for cfg, _ in _grid(spec, {**spec.environment(), **environment}):
        configs.setdefault(key_of_identity(cfg.identity()), cfg)
    return list(configs.values())


def execution_config(
    identity: dict[str, Any], environment: dict[str, Any], checkpoint_root: str | None = None
) -> dict[str, Any]:
    """RunConfig keyword arguments for executing a run: its identity plus environment fields,
    with the checkpoint and its mask located by :func:`checkpoint_location`."""
    config = {**identity, **environment}
    for name in ("checkpoint", "mask"):
        if config.get(name) is not None:
            config[name] = checkpoint_location(config[name], checkpoint_root)
    return config


def checkpoint_location(path: str | None, checkpoint_root: str | None) -> str | None:
    """Where a run opens a spec's checkpoint: a relative path joined to ``checkpoint_root``
    (when there is one); absolute paths and ``http(s)://`` URLs as written."""
    if not path or not checkpoint_root or Path(path).is_absolute() or is_url(path):
        return path
    return str(Path(checkpoint_root) / path)
