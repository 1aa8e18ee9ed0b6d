"""The class-wise section: the target classes where each compressed model loses most, and
gains most, against the dense model."""

from __future__ import annotations

import numpy as np
import pandas as pd

import hiddencost.report.figures as fg
from hiddencost.report.builder import SectionSpec, Task, TaskFigure, _Builder, _of
from hiddencost.report.common import (
    COMPRESSION_META,
    PERCENT,
    TASK,
    _dense_pairs,
    _empty,
    _meta,
    _sort,
)
from hiddencost.report.html import Note, Section
from hiddencost.report.table import class_names


def per_class_matrix(g: pd.DataFrame) -> np.ndarray:
    """(S, K) per-class accuracy (recall) of the runs (seeds) in ``g``; NaN for a class without
    test examples."""
    return np.array([[np.nan if v is None else v for v in p] for p in g["per_class_accuracy"]],
                    dtype=float)


def _per_class_mean(g: pd.DataFrame) -> np.ndarray:
    """Per-class accuracy (%) of the runs (seeds) in ``g``, mean over seeds (NaN-aware)."""
    with np.errstate(all="ignore"):
        return np.nanmean(per_class_matrix(g), axis=0) * PERCENT


def _extreme_classes(delta: np.ndarray, k: int) -> list[tuple[str, int, int]]:
    """(kind, rank, class) of the ``k`` most negative (``drop``) and ``k`` most positive
    (``gain``) finite entries of ``delta``; ties by lower class index."""
    valid = [i for i in range(len(delta)) if np.isfinite(delta[i])]
    drops = sorted((i for i in valid if delta[i] < 0), key=lambda i: (delta[i], i))[:k]
    gains = sorted((i for i in valid if delta[i] > 0), key=lambda i: (-delta[i], i))[:k]
    return [(kind, rank, i) for kind, chosen in (("drop", drops), ("gain", gains))
            for rank, i in enumerate(chosen, 1)]


def class_gains_drops(df: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` target classes where each compressed model loses most, and the ``k`` where it
    gains most, against dense: per class, Δ_c = mean_s acc_c(compressed) − mean_s acc_c(dense)
    in pp (per-class test accuracy, means over seeds). ``kind`` is ``drop`` for the most
    negative Δ_c (Δ_c < 0 only) and ``gain`` for the most positive (Δ_c > 0 only); ``rank`` 1
    is the largest change. Per task × method × budget × compressed point."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "budget_rank", "kind",
            "rank", "target", "target_name", "dense_mean", "compressed_mean", "delta",
            "n_dense", "n_compressed"]
    if df.empty:
        return _empty(cols)
    sub = df[[isinstance(p, list) and bool(p) for p in df["per_class_accuracy"]]]
    meta = _meta(df)
    names_by_dataset: dict[str, dict[int, str]] = {}
    rows = []
    for key, d, g in _dense_pairs(sub):
        dm, cm = _per_class_mean(d), _per_class_mean(g)
        if dm.shape != cm.shape:
            continue
        if key[1] not in names_by_dataset:
            names_by_dataset[key[1]] = class_names(df, key[1])
        names = names_by_dataset[key[1]]
        cell = {**dict(zip([*TASK, "method", "budget", "compression"], key, strict=True)),
                **meta[key[4]], "budget_rank": float(g["budget_rank"].iloc[0]),
                "n_dense": len(d), "n_compressed": len(g)}
        rows += [{**cell, "kind": kind, "rank": rank, "target": i,
                  "target_name": names.get(i, f"class {i}"), "dense_mean": float(dm[i]),
                  "compressed_mean": float(cm[i]), "delta": float(cm[i] - dm[i])}
                 for kind, rank, i in _extreme_classes(cm - dm, k)]
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df, ["kind", "rank"])


CLASSES = TaskFigure(
    "classes", "Class-wise changes",
    "Δ per-class test accuracy (compressed − dense, percentage points) of the classes with "
    "the largest drops (red, up to 5) and gains (green, up to 5), one row per transfer method "
    "and one column per compressed model, at the largest budget; {mean}{all_budgets}.",
    fg.plot_class_gains_drops)


def _largest_budget_rows(t: pd.DataFrame) -> pd.DataFrame:
    return t if t.empty else t[t["budget"] == t.loc[t["budget_rank"].idxmax(), "budget"]]


def _fill_classes(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = class_gains_drops(b.df)
    path = b.save_table("class_gains_drops", t)
    if t.empty:
        s.items.append(Note("Class-wise changes: skipped, no dense and compressed runs with "
                            "per-class accuracy in a common cell (or no class changed)."))
        return
    for task in tasks:
        b.task_figure(s, CLASSES, task, _largest_budget_rows(_of(t, task)),
                      mean="one seed" if b.one_seed else "means over seeds",
                      all_budgets=f"; all budgets in {path.name}" if path else "")


SECTION = SectionSpec(
    "classes", "Class-wise gains and drops",
    "The five target classes where each compressed model loses most, and the five "
    "where it gains most, against the dense model (per-class test accuracy, mean "
    "over seeds), at the largest data budget; every budget is in the CSV table.",
    _fill_classes)
