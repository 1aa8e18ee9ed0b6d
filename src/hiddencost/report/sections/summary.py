"""The summary section (like the paper's Table 1): per compressed model and transfer method,
the mean accuracy drop and ECE change against dense over every dataset and budget."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

import hiddencost.report.figures as fg
from hiddencost.report.builder import SectionSpec, Task, _Builder, _fmt, _interval
from hiddencost.report.common import COMPRESSION_META, TASK, _empty, _meta, delta_heatmap
from hiddencost.report.html import Note, Section, TableItem
from hiddencost.report.order import compression_order
from hiddencost.report.stats import mean_ci


def _cost_over_cells(g: pd.DataFrame) -> dict[str, Any]:
    """Mean and 95% t-interval over the cells in ``g`` of the accuracy drop (``delta``) and the
    ECE change (``ece_delta``), with the cell counts and the mean dense accuracy and ECE."""
    a, e = mean_ci(g["delta"]), mean_ci(g["ece_delta"])
    return {
        "n_cells": len(g), "n_datasets": g["dataset"].nunique(),
        "n_budgets": g["budget"].nunique(),
        "acc_drop_mean": a.mean, "acc_drop_lo": a.lo, "acc_drop_hi": a.hi,
        "ece_change_mean": e.mean, "ece_change_lo": e.lo, "ece_change_hi": e.hi,
        "dense_accuracy_mean": float(np.mean(g["dense_mean"])),
        "dense_ece_mean": float(np.nanmean(g["ece_dense"].astype(float)))
        if g["ece_dense"].notna().any() else math.nan,
    }


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per transfer method (and ``all`` methods) × compressed point: the mean accuracy drop
    (dense − compressed, pp) and ECE change (compressed − dense, pp) across datasets and
    budgets, with 95% t-intervals over those cells.

    Each cell (task × method × budget) contributes one Δ, the difference of its seed means, so
    a study with one seed still has intervals here: they describe the spread over datasets and
    budgets, not seed noise. ``n_cells`` < 2 gives no interval.
    """
    cols = ["method", "compression", *COMPRESSION_META, "n_cells", "n_datasets", "n_budgets",
            "acc_drop_mean", "acc_drop_lo", "acc_drop_hi", "ece_change_mean", "ece_change_lo",
            "ece_change_hi", "dense_accuracy_mean", "dense_ece_mean"]
    if df.empty:
        return _empty(cols)
    acc = delta_heatmap(df, "accuracy")
    ece = delta_heatmap(df, "ece", dense_minus_compressed=False)
    if acc.empty:
        return _empty(cols)
    keys = [*TASK, "method", "budget", "compression"]
    merged = acc[[*keys, "delta", "dense_mean"]].merge(
        ece[[*keys, "delta", "dense_mean"]].rename(
            columns={"delta": "ece_delta", "dense_mean": "ece_dense"}), on=keys, how="left")
    meta = _meta(df)
    rows = []
    for label, part in [*((m, merged[merged["method"] == m]) for m in
                          dict.fromkeys(merged["method"])), ("all", merged)]:
        rows += [{"method": label, "compression": comp, **meta[comp], **_cost_over_cells(g)}
                 for comp, g in part.groupby("compression", sort=False)]
    out = pd.DataFrame(rows)[cols]
    methods = [*dict.fromkeys(merged["method"]), "all"]
    order = {c: i for i, c in enumerate(compression_order(df))}
    out["_m"] = [methods.index(m) for m in out["method"]]
    out["_c"] = [order.get(c, len(order)) for c in out["compression"]]
    return out.sort_values(["_m", "_c"]).drop(columns=["_m", "_c"]).reset_index(drop=True)


def _summary_shown(b: _Builder, t: pd.DataFrame) -> pd.DataFrame:
    """The summary table as shown on the page (formatted, intervals in brackets)."""
    return pd.DataFrame({
        "method": [b.label(m) for m in t["method"]],
        "compression": t["compression_name"],
        "cells": t["n_cells"],
        "datasets": t["n_datasets"],
        "budgets": t["n_budgets"],
        "dense accuracy (%)": [_fmt(x) for x in t["dense_accuracy_mean"]],
        "accuracy drop (pp) [95% CI]": [_interval(m, lo, hi) for m, lo, hi in zip(
            t["acc_drop_mean"], t["acc_drop_lo"], t["acc_drop_hi"], strict=True)],
        "ECE change (pp) [95% CI]": [_interval(m, lo, hi) for m, lo, hi in zip(
            t["ece_change_mean"], t["ece_change_lo"], t["ece_change_hi"], strict=True)],
    })


def _fill_summary(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = summary_table(b.df)
    path = b.save_table("summary", t)
    if t.empty:
        s.items.append(Note("Summary: skipped, no dense and compressed runs to compare."))
        return
    b.figure(s, "summary", "Mean cost of compression",
             "Mean accuracy drop (dense − compressed, left) and ECE change (compressed − dense, "
             "right), in percentage points, over all (dataset, budget) cells, one bar per "
             "transfer method; error bars are 95% t-intervals over those cells (they describe "
             "the spread across datasets and budgets, not seed noise; none with one cell; cut "
             "at the axis when far wider than the bars, the table has them in full).",
             t, fg.plot_summary)
    s.items.append(TableItem("Mean accuracy drop and ECE change per compression",
                             "Each (dataset, budget) cell contributes the difference of its "
                             "seed means; intervals are 95% t-intervals over cells.",
                             _summary_shown(b, t), path))


SECTION = SectionSpec(
    "summary", "Summary table",
    "Like the paper's Table 1: per compressed model and transfer method, the mean "
    "accuracy drop and ECE change against dense over every dataset and budget.",
    _fill_summary)
