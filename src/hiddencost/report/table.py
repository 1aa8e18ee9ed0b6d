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
``budget``             ``"10"``, ``"full"``, …; ``budget_rank`` the number of shots (full = inf)
``family``             ``dense`` or the compression family (``magnitude``, ``quantize``, ``lth``…)
``compression``        the compression label (``dense``, ``magnitude-global-s0.90``, ``w4``…)
``level, unit``        the family's level and its unit (``sparsity``, ``bits``, …)
``severity``           0 for dense, larger = more compressed within a family (see :func:`severity`)
``compression_name``   a display name (``magnitude 90% sparse``, ``quantize w4``)
metrics                ``accuracy, ece, mce, nll, brier, paper_ece, mean_confidence_correct,
                       kl_to_uniform_incorrect, sparsity, weight_bits, final_train_loss``
lists                  ``per_class_accuracy, reliability, label_mapping, history`` (None if absent)
``artifacts``          the run's artifact folder (None when unknown); ``prompt_history`` and
                       ``weights`` the safetensors files in it, when they exist
=====================  ===========================================================================
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hiddencost.errors import HiddenCostError

METRICS: tuple[str, ...] = (
    "accuracy", "ece", "mce", "nll", "brier", "paper_ece", "mean_confidence_correct",
    "kl_to_uniform_incorrect", "sparsity", "weight_bits", "activation_bits", "final_train_loss",
)
LISTS: tuple[str, ...] = ("per_class_accuracy", "reliability", "label_mapping", "history")
#: Non-axis configuration fields that, when they differ between runs, split the backbone column.
SETTING_FIELDS: tuple[str, ...] = (
    "weights", "split_seed", "epochs", "lr", "canvas_size", "inner_size", "lp_image_size",
    "many_to_one",
)
PROMPT_HISTORY_FILE = "prompt_history.safetensors"
WEIGHTS_FILE = "weights.safetensors"
RESULT_FILE = "result.json"


def severity(family: str, level: Any, unit: str | None) -> float:
    """How compressed a point is, for ordering within a family: 0 for dense, then

    - ``sparsity`` (fraction zeroed): the level; ``sparsity_percent``: level / 100;
    - ``remaining_percent`` (lottery tickets): 1 − level / 100;
    - ``bits``: 1 − level / 32 (32-bit float = dense);
    - any other unit: the level itself when it is a number, else NaN (order of appearance).
    """
    if family == "dense":
        return 0.0
    try:
        x = float(level)
    except (TypeError, ValueError):
        return math.nan
    if unit == "sparsity_percent":
        return x / 100.0
    if unit == "remaining_percent":
        return 1.0 - x / 100.0
    if unit == "bits":
        return 1.0 - x / 32.0
    return x


def level_label(level: Any, unit: str | None) -> str:
    """A short text for a level: ``90% sparse``, ``4-bit``, ``11.571% remaining``."""
    try:
        x = float(level)
    except (TypeError, ValueError):
        return str(level)
    if unit == "sparsity":
        return f"{100 * x:.4g}% sparse"
    if unit == "sparsity_percent":
        return f"{x:.4g}% sparse"
    if unit == "remaining_percent":
        return f"{x:.5g}% remaining"
    if unit == "bits":
        return f"{x:g}-bit"
    return f"{unit} {x:g}" if unit and unit != "level" else f"{x:g}"


def unit_axis_label(unit: str | None) -> str:
    """The axis label of a compression level in ``unit``."""
    return {
        "sparsity": "sparsity (% of weights zeroed)",
        "sparsity_percent": "sparsity (% of weights zeroed)",
        "remaining_percent": "weights remaining (%)",
        "bits": "bit-width (bits)",
    }.get(unit or "", f"compression level ({unit or 'level'})")


def tags_from_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Study tags (family, compression, level, unit) derived from a record's compression, for
    records stored without tags."""
    comp = record.get("compression") or {}
    cfg = (record.get("config") or {}).get("compression") or {}
    method = comp.get("method", cfg.get("method", "none"))
    label = comp.get("label")
    if method == "none":
        return {"family": "dense", "compression": label or "dense", "level": None, "unit": None}
    if method == "quantize":
        bits = comp.get("weight_bits", cfg.get("weight_bits")) or comp.get(
            "activation_bits", cfg.get("activation_bits"))
        return {"family": "quantize", "compression": label or f"w{bits}", "level": bits,
                "unit": "bits"}
    sparsity = comp.get("target_sparsity", cfg.get("sparsity"))
    return {"family": method, "compression": label or f"{method}-s{sparsity}",
            "level": sparsity, "unit": "sparsity"}


def _budget(n_shot: Any) -> tuple[str, float]:
    if n_shot is None or (isinstance(n_shot, float) and math.isnan(n_shot)):
        return "full", math.inf
    return str(int(n_shot)), float(n_shot)


def _row(record: Mapping[str, Any], tags: Mapping[str, Any] | None, key: str | None,
         artifacts: Path | None, study: str | None) -> dict[str, Any]:
    cfg = dict(record.get("config") or {})
    t = dict(tags) if tags and tags.get("family") else tags_from_record(record)
    model = str(cfg.get("model", "?"))
    budget, rank = _budget(cfg.get("n_shot"))
    row: dict[str, Any] = {
        "key": key, "study": study, "arch": model.split(".")[0], "model": model,
        "dataset": cfg.get("dataset", "?"), "method": cfg.get("method", "?"),
        "n_shot": cfg.get("n_shot"), "budget": budget, "budget_rank": rank,
        "seed": int(cfg.get("seed", 0)),
        "family": t.get("family"), "compression": t.get("compression"),
        "level": t.get("level"), "unit": t.get("unit"),
        "epochs": cfg.get("epochs"),
    }
    row["severity"] = severity(row["family"], row["level"], row["unit"])
    for k in METRICS:
        v = record.get(k)
        row[k] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None
    for k in LISTS:
        row[k] = record.get(k)
    row["settings"] = {k: cfg.get(k) for k in SETTING_FIELDS}
    row["canvas_size"] = cfg.get("canvas_size")
    row["inner_size"] = cfg.get("inner_size")
    row["artifacts"] = str(artifacts) if artifacts is not None else None
    hist = artifacts / PROMPT_HISTORY_FILE if artifacts is not None else None
    weights = artifacts / WEIGHTS_FILE if artifacts is not None else None
    row["prompt_history"] = str(hist) if hist is not None and hist.is_file() else None
    row["weights"] = str(weights) if weights is not None and weights.is_file() else None
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
    records: Sequence[Mapping[str, Any]],
    tags: Sequence[Mapping[str, Any] | None] | None = None,
    keys: Sequence[str | None] | None = None,
    artifacts: Sequence[str | Path | None] | None = None,
    study: str | None = None,
) -> pd.DataFrame:
    """The tidy table of ``records`` (``result.json`` dicts, see :func:`hiddencost.run.run_one`).

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
    varying = [f for f in SETTING_FIELDS
               if len({json.dumps(s.get(f), sort_keys=True) for s in df["settings"]}) > 1]
    df["backbone"] = [
        a if not varying else a + " (" + ", ".join(f"{f}={s.get(f)}" for f in varying) + ")"
        for a, s in zip(df["arch"], df["settings"], strict=True)
    ]
    # pandas infers NaN-padded str / float columns: keep None for "absent" in these
    for col in ("key", "study", "level", "unit", "artifacts", "prompt_history", "weights"):
        df[col] = pd.Series([None if _missing(v) else v for v in df[col]], dtype=object,
                            index=df.index)
    df["compression_name"] = _names(df)
    df["is_dense"] = df["family"] == "dense"
    df.attrs["varying_settings"] = varying
    return df.reset_index(drop=True)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _empty_columns() -> list[str]:
    return ["key", "study", "arch", "model", "dataset", "method", "n_shot", "budget",
            "budget_rank", "seed", "family", "compression", "level", "unit", "epochs",
            "severity", *METRICS, *LISTS, "settings", "canvas_size", "inner_size", "artifacts",
            "prompt_history", "weights"]


def _read_record(folder: Path, fallback: Mapping[str, Any]) -> dict[str, Any]:
    try:
        record = json.loads((folder / RESULT_FILE).read_text())
        if isinstance(record, dict):
            return record
    except (OSError, ValueError):
        pass
    return dict(fallback)


def table_from_spec(spec: Any, out: str | Path | None = None,
                    store: str | Path | None = None) -> pd.DataFrame:
    """The done runs of a study (a :class:`~hiddencost.study.spec.StudySpec`) in expansion
    order, read from its store and artifact folders (``out`` default
    ``hiddencost-results/<name>``). A run whose ``result.json`` is missing keeps the scalar
    metrics of its store row (list-valued fields are then None)."""
    from hiddencost.study.driver import StudyPaths
    from hiddencost.study.spec import expand
    from hiddencost.study.store import open_store

    paths = StudyPaths.resolve(spec, out, store)
    if "://" not in paths.store and not Path(paths.store).is_file():
        raise HiddenCostError(f"study {spec.name} has no results yet: {paths.store} does not "
                              "exist (run it with `hiddencost study run`, or pass --results)")
    runs = expand(spec)
    with open_store(paths.store) as db:
        rows = db.rows(r.key for r in runs)
    records, tags, keys, arts = [], [], [], []
    for run in runs:
        row = rows.get(run.key)
        if row is None or row.status != "done":
            continue
        folder = paths.run_dir(run.key)
        records.append(_read_record(folder, {"config": run.identity, **(row.metrics or {})}))
        tags.append(run.tags)
        keys.append(run.key)
        arts.append(folder)
    return table_from_records(records, tags, keys, arts, study=spec.name)


def store_file(db: str | Path) -> Path:
    """The file a store path or URL names, as :func:`~hiddencost.study.store.open_store` opens
    it: ``sqlite:///rel`` → ``rel``, ``sqlite:////abs`` → ``/abs``, a path → itself."""
    text = str(db)
    if "://" not in text:
        return Path(text)
    rest = text.split("://", 1)[1]
    return Path(rest[1:] if rest.startswith("/") else rest)


def table_from_db(db: str | Path, artifacts: str | Path | None = None,
                  study: str | None = None) -> pd.DataFrame:
    """The done runs of a results store file (all studies in it, or only ``study``); artifact
    folders are ``<artifacts>/<key>`` with ``artifacts`` defaulting to ``artifacts/`` beside
    the store (the layout of a study's output folder)."""
    from hiddencost.study.store import open_store

    text = str(db)
    if "://" not in text and not Path(text).is_file():
        raise HiddenCostError(f"results store {db} does not exist")
    if artifacts is not None:
        root = Path(artifacts)
    else:
        root = store_file(text).parent / "artifacts"
    with open_store(text) as store:
        rows = store.rows()
    done = sorted((r for r in rows.values() if r.status == "done"
                   and (study is None or r.study == study)),
                  key=lambda r: (r.finished_at or 0.0, r.key))
    records = [_read_record(root / r.key, {"config": r.config, **(r.metrics or {})})
               for r in done]
    return table_from_records(records, [r.tags for r in done], [r.key for r in done],
                              [root / r.key for r in done], study=study)


def load_table(source: Any, *, results: str | Path | None = None,
               store: str | Path | None = None) -> pd.DataFrame:
    """Dispatch: a DataFrame (returned as is), a list of records, a StudySpec, a SQLite file
    (``.sqlite``/``.db`` or ``sqlite:///``), or a study YAML file / preset name."""
    from hiddencost.study.spec import StudySpec, load_spec

    if isinstance(source, pd.DataFrame):
        return source
    if isinstance(source, list | tuple):
        return table_from_records(source)
    if isinstance(source, StudySpec):
        return table_from_spec(source, results, store)
    text = str(source)
    if is_store_source(text):
        return table_from_db(text)
    return table_from_spec(load_spec(text), results, store)


def is_store_source(text: str) -> bool:
    """Whether a report source names a results store (``sqlite://`` URL, ``.sqlite`` / ``.db``
    / ``.sqlite3`` suffix, or a file with SQLite's header) rather than a study."""
    return text.startswith("sqlite://") or Path(text).suffix in (".sqlite", ".db", ".sqlite3") \
        or is_sqlite_file(text)


def is_sqlite_file(path: str | Path) -> bool:
    """Whether ``path`` is a file that starts with SQLite's magic header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


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
