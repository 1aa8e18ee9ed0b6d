"""A study's finished runs as one tidy table: one row per run, configuration and metrics flat.

Sources: a study spec and its output folder (:func:`table_from_spec`), a results store file
alone (:func:`table_from_db`; artifacts are looked up in ``artifacts/`` beside it), or result
records in memory (:func:`table_from_records`, e.g. synthetic ones in tests). Every source ends
in :func:`table_from_records`, so the columns are the same whatever the source:

=====================  ===========================================================================
``key``                the run key (content hash of its configuration)
``backbone``           the architecture (``resnet50`` for ``resnet50.lth``), plus the settings
                       that differ between runs of the table (e.g. ``epochs=5``) if any do
``dataset, method``    as configured; ``seed`` an int
``method_id``          the family-qualified method (``timm/ilm`` is ILM-VP, ``open_clip/ilm``
                       ILM-TP-VP); ``method_label``, ``method_marker`` how it is shown;
                       ``learns_prompt`` whether it learns an input prompt; ``modality`` the
                       tasks it reads (``image``, ``sequence``);
                       ``network_family`` the backbone's family (``timm``, ``open_clip``)
``budget``             ``"10"``, ``"full"``, …; ``budget_rank`` the number of shots (full = inf)
``family``             ``dense`` or the compression family (``magnitude``, ``quantize``, ``lth``…)
``compression``        the compression label (``dense``, ``magnitude-global-s0.90``, ``w4``…)
``level, unit``        the family's level and its unit (``sparsity``, ``bits``, …)
``severity``           0 for dense, larger = more compressed within a family (see :func:`severity`)
``compression_name``   a display name (``magnitude 90% sparse``, ``quantize w4``)
metrics                :data:`METRICS`, every numeric field of a
                       :class:`~hiddencost.records.RunRecord`: ``accuracy, ece, mce, nll,
                       brier, paper_ece, mean_confidence_correct, kl_to_uniform_incorrect``,
                       then ``sparsity, weight_bits, activation_bits, n_train, n_test,
                       final_train_loss, wall_time_s`` (floats; None where absent)
lists                  ``per_class_accuracy, reliability, label_mapping, history`` (None if absent)
``artifacts``          the run's artifact folder (None when unknown); ``prompt_history``,
                       ``weights`` and ``predictions`` the safetensors files in it, when they
                       exist
=====================  ===========================================================================
"""

from __future__ import annotations

import json
import math
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hiddencost.compression import parse_compression
from hiddencost.compression.levels import LevelUnit
from hiddencost.errors import HiddenCostError
from hiddencost.predictions import PREDICTIONS_FILE
from hiddencost.records import METRIC_FIELDS, RunRecord
from hiddencost.study.catalog import load_spec
from hiddencost.study.results import (
    StudyRuns,
    is_store_source,
    read_store,
    read_study,
    record_or_metrics,
)
from hiddencost.study.spec import StudySpec

#: A record as the report takes it: a typed record, or its ``result.json`` dict (possibly
#: partial: a store row's scalar metrics stand in for a missing ``result.json``).
Record = RunRecord | Mapping[str, Any]


def _scalar_fields() -> tuple[str, ...]:
    """The numeric scalar fields of :class:`~hiddencost.records.RunRecord` (``float``, ``int``
    or either ``| None``; not ``schema_version``): :data:`METRIC_FIELDS` first, then the rest in
    field order (sparsity, bits, sizes, loss, time)."""
    def numeric(annotation: Any) -> bool:
        if typing.get_origin(annotation) is typing.Annotated:  # a bounded int (records.Count)
            return numeric(typing.get_args(annotation)[0])
        if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is \
                typing.Union:
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            return bool(args) and all(numeric(a) for a in args)
        return annotation in (int, float)

    rest = [name for name, field in RunRecord.model_fields.items()
            if numeric(field.annotation) and name != "schema_version"
            and name not in METRIC_FIELDS]
    return (*METRIC_FIELDS, *rest)


#: The scalar metric columns: every numeric field of a record (None when a record lacks it).
METRICS: tuple[str, ...] = _scalar_fields()
#: The structured record fields the analyses read (None when absent).
LISTS: tuple[str, ...] = ("per_class_accuracy", "reliability", "label_mapping", "history")
#: Non-axis configuration fields that, when they differ between runs of one method, split the
#: backbone column (a method's own options are not among them: methods are shown apart anyway).
SETTING_FIELDS: tuple[str, ...] = (
    "weights", "split_seed", "epochs", "lr", "canvas_size", "inner_size", "lp_image_size",
)
PROMPT_HISTORY_FILE = "prompt_history.safetensors"
WEIGHTS_FILE = "weights.safetensors"
RESULT_FILE = "result.json"


def level_unit(unit: str | None) -> LevelUnit:
    """The :class:`~hiddencost.compression.levels.LevelUnit` of a table's ``unit`` cell: None
    (dense, or a point without a unit) is ``level``. An unknown string (a unit an older store
    recorded) is read as ``level`` too, so a report over old results still orders and labels
    its points (numeric levels by value) instead of failing."""
    try:
        return LevelUnit(unit or LevelUnit.LEVEL)
    except ValueError:
        return LevelUnit.LEVEL


def severity(family: str, level: Any, unit: str | None) -> float:
    """How compressed a point is, for ordering within a family: 0 for dense, else
    :meth:`LevelUnit.severity <hiddencost.compression.levels.LevelUnit.severity>` of the level
    (``sparsity``: s; ``sparsity_percent``: s / 100; ``remaining_percent``: 1 − r / 100;
    ``bits``: 1 − b / 32; ``level``: the level; NaN for a level that is not a number)."""
    return 0.0 if family == "dense" else level_unit(unit).severity(level)


def level_label(level: Any, unit: str | None) -> str:
    """A short text for a level: ``90% sparse``, ``4-bit``, ``11.571% remaining``."""
    return level_unit(unit).label(level)


def unit_axis_label(unit: str | None) -> str:
    """The axis label of a compression level in ``unit``."""
    return level_unit(unit).axis_label


def _as_dict(record: Record) -> Mapping[str, Any]:
    # a typed record reads as its result.json, so records and dicts give the same row
    return record.to_json() if isinstance(record, RunRecord) else record


def tags_from_record(record: Record) -> dict[str, Any]:
    """Study tags (family, compression, level, unit) of a record's configured compression, for
    records stored without tags: what the study's compression axis would have tagged it with."""
    record = _as_dict(record)
    spec = parse_compression((record.get("config") or {}).get("compression") or {})
    label = (record.get("compression") or {}).get("label") or spec.label
    return {"family": spec.family, "compression": label, "level": spec.level,
            "unit": None if spec.unit is None else str(spec.unit)}


def _budget(n_shot: Any) -> tuple[str, float]:
    if n_shot is None or (isinstance(n_shot, float) and math.isnan(n_shot)):
        return "full", math.inf
    return str(int(n_shot)), float(n_shot)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _existing(folder: Path | None, name: str) -> str | None:
    """``folder/name`` when that file exists, else None."""
    return str(folder / name) if folder is not None and (folder / name).is_file() else None


def _method_card(record: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The record's method card and network family. Records of schema < 3 carry neither:
    they are looked up in the registries of this installation (which imports torch); a model
    or method it does not know is shown by its name."""
    card, family = record.get("method"), record.get("network_family")
    if card is None or family is None:
        from hiddencost.backbones import resolve_backbone_name  # lazy: torch, old records only
        from hiddencost.prompting.catalog import method_card  # lazy: as above

        try:
            family = family or resolve_backbone_name(str(cfg.get("model"))).family
            card = card or method_card(str(cfg.get("method")), family).model_dump()
        except HiddenCostError:
            name = str(cfg.get("method", "?"))
            card = card or {"name": name, "id": f"{family}/{name}", "display_name": name,
                            "marker": "o", "learns_prompt": False, "modality": "image"}
    card = dict(card)
    return {"method_id": card["id"], "method_label": card["display_name"],
            "method_marker": card["marker"], "learns_prompt": bool(card["learns_prompt"]),
            "modality": card.get("modality", "image"),
            "network_family": family}


def method_styles(df: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Method name → (display name, marker) over the runs of ``df``; a name shown two ways
    (``ilm`` on a CNN and on CLIP) joins both names."""
    if df.empty:
        return {}
    styles: dict[str, tuple[str, str]] = {}
    for method, label, marker in df[["method", "method_label", "method_marker"]].drop_duplicates(
            ).itertuples(index=False):
        if method in styles and styles[method][0] != label:
            label = f"{styles[method][0]} / {label}"
        styles[method] = (label, styles.get(method, (label, marker))[1])
    return styles


def _row(record: Record, tags: Mapping[str, Any] | None, key: str | None,
         artifacts: Path | None, study: str | None) -> dict[str, Any]:
    record = _as_dict(record)
    cfg = dict(record.get("config") or {})
    t = dict(tags) if tags and tags.get("family") else tags_from_record(record)
    model = str(cfg.get("model", "?"))
    budget, rank = _budget(cfg.get("n_shot"))
    row: dict[str, Any] = {
        "key": key, "study": study, "arch": model.split(".")[0], "model": model,
        "dataset": cfg.get("dataset", "?"), "method": cfg.get("method", "?"),
        **_method_card(record, cfg), "n_shot": cfg.get("n_shot"), "budget": budget,
        "budget_rank": rank,
        "seed": int(cfg.get("seed", 0)),
        "family": t.get("family"), "compression": t.get("compression"),
        "level": t.get("level"), "unit": t.get("unit"),
        "epochs": cfg.get("epochs"),
    }
    row["severity"] = severity(row["family"], row["level"], row["unit"])
    row.update({k: _number(record.get(k)) for k in METRICS})
    row.update({k: record.get(k) for k in LISTS})
    row["settings"] = {k: cfg.get(k) for k in SETTING_FIELDS}
    row["canvas_size"] = cfg.get("canvas_size")
    row["inner_size"] = cfg.get("inner_size")
    row["artifacts"] = str(artifacts) if artifacts is not None else None
    row["data_root"] = (cfg.get("environment") or {}).get("data_root")
    row["prompt_history"] = _existing(artifacts, PROMPT_HISTORY_FILE)
    row["weights"] = _existing(artifacts, WEIGHTS_FILE)
    row["predictions"] = _existing(artifacts, PREDICTIONS_FILE)
    row["result_missing"] = bool(record.get("result_missing", False))
    # what the weight source measured (UPop: the inference model's parameter count)
    row["parameters"] = (record.get("backbone") or {}).get("parameters")
    comp = record.get("compression") or {}
    prunable, zeros = comp.get("n_prunable_weights"), comp.get("n_zero_weights")
    recal = record.get("recalibration") or {}
    row["temperature"], row["ts_ece"], row["ts_nll"] = (recal.get(k) for k in
                                                        ("temperature", "ece", "nll"))
    row["prunable_weights"] = prunable
    row["nonzero_weights"] = prunable - zeros if prunable is not None and zeros is not None \
        else None
    return row


def _names(df: pd.DataFrame) -> list[str]:
    names: dict[str, str] = {}
    for comp, family, level, unit in df[["compression", "family", "level", "unit"]].itertuples(
            index=False):
        if family == "dense":
            names[comp] = "dense"
        elif family == "quantize" or level is None:
            names[comp] = f"{family} {comp.removeprefix(family + '-')}".strip()
        else:
            names[comp] = f"{family} {level_label(level, unit)}"
    # two labels with one display name (e.g. two pruning scopes at one sparsity): use labels
    seen: dict[str, list[str]] = {}
    for comp, name in names.items():
        seen.setdefault(name, []).append(comp)
    for name, comps in seen.items():
        if len(comps) > 1:
            for comp in comps:
                names[comp] = f"{name} ({comp})"
    return [names[c] for c in df["compression"]]


def table_from_records(
    records: Sequence[Record],
    tags: Sequence[Mapping[str, Any] | None] | None = None,
    keys: Sequence[str | None] | None = None,
    artifacts: Sequence[str | Path | None] | None = None,
    study: str | None = None,
) -> pd.DataFrame:
    """The tidy table of ``records``: :class:`~hiddencost.records.RunRecord` objects or their
    ``result.json`` dicts (see :func:`hiddencost.run.run_one`), in any mix.

    ``tags`` (study tags per record: family, compression, level, unit), ``keys`` and
    ``artifacts`` (the run folders) are optional and aligned with ``records``; without tags
    they are derived from each record's compression report (:func:`tags_from_record`).
    """
    n = len(records)
    tags = list(tags) if tags is not None else [None] * n
    keys = list(keys) if keys is not None else [None] * n
    arts = [Path(a) if a is not None else None for a in artifacts] if artifacts is not None \
        else [None] * n
    if not len(tags) == len(keys) == len(arts) == n:
        raise ValueError("tags, keys and artifacts must align with records")
    rows = [_row(r, t, k, a, study) for r, t, k, a in zip(records, tags, keys, arts, strict=True)]
    df = pd.DataFrame(rows, columns=None if rows else _empty_columns())
    if df.empty:
        return df
    # a setting splits the backbone when it differs between runs of one method: methods'
    # own protocol defaults (FT's lr 1e-4 beside VP's 0.01) compare on one backbone
    varying = [f for f in SETTING_FIELDS
               if any(len({json.dumps(s.get(f), sort_keys=True) for s in g}) > 1
                      for _, g in df.groupby("method_id", sort=False)["settings"])]
    df["backbone"] = [
        a if not varying else a + " (" + ", ".join(f"{f}={s.get(f)}" for f in varying) + ")"
        for a, s in zip(df["arch"], df["settings"], strict=True)
    ]
    # pandas infers NaN-padded str / float columns: keep None for "absent" in these
    for col in ("key", "study", "level", "unit", "artifacts", "prompt_history", "weights",
                "predictions"):
        df[col] = pd.Series([None if _missing(v) else v for v in df[col]], dtype=object,
                            index=df.index)
    df["compression_name"] = _names(df)
    df["is_dense"] = df["family"] == "dense"
    df.attrs["varying_settings"] = varying
    return df.reset_index(drop=True)


def missing_results_warning(df: pd.DataFrame) -> str | None:
    """One line naming the done runs read without their ``result.json``, or None."""
    if df.empty or "result_missing" not in df or not df["result_missing"].any():
        return None
    n = int(df["result_missing"].sum())
    runs = "runs have" if n > 1 else "run has"
    return (f"{n} done {runs} no result.json (artifacts deleted?): "
            "shown from the store's scalar metrics, without per-class accuracy, label "
            "mappings, reliability or training curves; `hiddencost study run SPEC --verify` "
            "runs them again")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _empty_columns() -> list[str]:
    return ["key", "study", "arch", "model", "dataset", "method", "method_id", "method_label",
            "method_marker", "learns_prompt", "modality", "network_family", "n_shot", "budget",
            "budget_rank", "seed", "family", "compression", "level", "unit", "epochs",
            "severity", *METRICS, *LISTS, "settings", "canvas_size", "inner_size", "artifacts",
            "data_root",
            "prompt_history", "weights", "predictions", "result_missing", "parameters",
            "prunable_weights", "nonzero_weights", "temperature", "ts_ece", "ts_nll"]


def table_from_study(study: StudyRuns, name: str | None = None) -> pd.DataFrame:
    """The done runs of ``study``, in its order: read by the reader
    :func:`~hiddencost.study.results.load_results` and export use, so they list the same runs.
    A run whose ``result.json`` is missing keeps its store row's scalar metrics (list-valued
    fields are then None)."""
    done = list(study.done())
    folders = [study.paths.run_dir(run.key) for run, _ in done]
    return table_from_records(
        [record_or_metrics(folder, row) for (_, row), folder in zip(done, folders, strict=True)],
        [run.tags for run, _ in done], [run.key for run, _ in done], folders, study=name)


def table_from_spec(spec: StudySpec, out: str | Path | None = None,
                    store: str | Path | None = None) -> pd.DataFrame:
    """The done runs of a study in expansion order, read from its store and artifact folders
    (``out`` default ``hiddencost-results/<name>``)."""
    study = read_study(spec, out, store)
    if not study.store_exists:
        raise HiddenCostError(f"study {spec.name} has no results yet: {study.paths.store} does "
                              "not exist (run it with `hiddencost study run`, or pass --results)")
    return table_from_study(study, spec.name)


def table_from_db(db: str | Path, artifacts: str | Path | None = None,
                  study: str | None = None) -> pd.DataFrame:
    """The done runs of a results store file (all studies in it, or only ``study``) in the
    order they were added; artifact folders are ``<artifacts>/<key>`` with ``artifacts``
    defaulting to ``artifacts/`` beside the store (the layout of a study's output folder)."""
    return table_from_study(read_store(db, artifacts, study), study)


def load_table(source: Any, *, results: str | Path | None = None,
               store: str | Path | None = None) -> pd.DataFrame:
    """Dispatch: a DataFrame (returned as is), a list of records, a StudySpec, a results store
    file (``.sqlite``/``.db`` or ``sqlite:///``), or a study YAML file / preset name."""
    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, list | tuple):
        return table_from_records(source)
    if isinstance(source, StudySpec):
        return table_from_spec(source, results, store)
    if is_store_source(str(source)):
        return table_from_db(str(source))
    return table_from_spec(load_spec(str(source), check=False), results, store)


def class_names(df: pd.DataFrame, dataset: str) -> dict[int, str]:
    """Target class names of ``dataset`` from any run's label mapping (LP and FM runs have
    none); empty when no run of the dataset has one."""
    for mapping in df.loc[df["dataset"] == dataset, "label_mapping"]:
        if isinstance(mapping, list) and mapping:
            return {int(m["target"]): str(m["target_name"]) for m in mapping}
    return {}


def iter_tasks(df: pd.DataFrame) -> Iterable[tuple[str, str]]:
    """The (backbone, dataset) pairs of the table, in order of appearance."""
    seen: dict[tuple[str, str], None] = {}
    for b, d in zip(df["backbone"], df["dataset"], strict=True):
        seen.setdefault((b, d), None)
    return list(seen)
