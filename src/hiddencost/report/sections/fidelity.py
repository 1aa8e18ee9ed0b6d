"""The fidelity section: how closely each compressed backbone follows its dense original
before transfer (:mod:`hiddencost.study.fidelity`), set against what compression costs after
transfer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

import hiddencost.report.figures as fg
from hiddencost.report.builder import (
    SectionSpec,
    Task,
    TaskFigure,
    _Builder,
    _fmt,
    _of,
    _task_title,
)
from hiddencost.report.common import (
    COMPRESSION_META,
    PERCENT,
    TASK,
    _empty,
    _meta,
    _sort,
    delta_heatmap,
)
from hiddencost.report.html import Note, Section, TableItem

FIDELITY_METRICS: tuple[str, ...] = ("n_images", "top1_agreement", "top5_agreement", "mean_kl")


def fidelity_table(df: pd.DataFrame, entries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The study's fidelity entries (:mod:`hiddencost.study.fidelity`) matched to the table's
    compressed points: one row per task × compression, with ``top1_agreement`` and
    ``top5_agreement`` in percent, ``mean_kl`` in nats and ``error`` (None when measured).
    Entries are matched on (model, dataset, compression label); unmatched ones are dropped."""
    cols = [*TASK, "compression", *COMPRESSION_META, "model", *FIDELITY_METRICS, "error"]
    if df.empty or not entries:
        return _empty(cols)
    by_key = {(e.get("model"), e.get("dataset"), e.get("compression")): e for e in entries}
    meta = _meta(df)
    rows = []
    points = df[~df["is_dense"]].drop_duplicates([*TASK, "model", "compression"])
    for r in points.itertuples(index=False):
        e = by_key.get((r.model, r.dataset, r.compression))
        if e is None:
            continue
        measured = e.get("error") is None
        row = {"backbone": r.backbone, "dataset": r.dataset, "compression": r.compression,
               **meta[r.compression], "model": r.model, "error": e.get("error")}
        for k in FIDELITY_METRICS:
            v = e.get(k) if measured else None
            row[k] = math.nan if v is None else float(v) * (PERCENT if "agreement" in k else 1)
        rows.append(row)
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df)


def fidelity_vs_cost(df: pd.DataFrame, entries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per task × method × measured compressed point: its upstream fidelity
    (:func:`fidelity_table`) beside its transfer cost, the mean accuracy drop
    ``acc_drop_mean`` = mean over budgets of (dense − compressed seed means, pp, as in
    :func:`delta_heatmap`), over ``n_budgets`` budgets."""
    cols = [*TASK, "method", "compression", *COMPRESSION_META, *FIDELITY_METRICS,
            "acc_drop_mean", "n_budgets"]
    fid = fidelity_table(df, entries)
    if fid.empty:
        return _empty(cols)
    fid = fid[fid["error"].isna()]
    acc = delta_heatmap(df, "accuracy")
    if fid.empty or acc.empty:
        return _empty(cols)
    cost = (acc.groupby([*TASK, "method", "compression"], sort=False)
            .agg(acc_drop_mean=("delta", "mean"), n_budgets=("budget", "nunique"))
            .reset_index())
    out = cost.merge(fid.drop(columns=["model", "error"]), on=[*TASK, "compression"],
                     how="inner")
    if out.empty:
        return _empty(cols)
    return _sort(out[cols], df)


def fidelity_rank_correlation(table: pd.DataFrame) -> pd.DataFrame:
    """Per task × method of a :func:`fidelity_vs_cost` table: Spearman's ρ between the
    accuracy drop and top-1 agreement (``rho_agreement``, negative = less faithful
    compressions cost more) and mean KL (``rho_kl``, positive = the same), over the
    ``n_points`` compressed points; NaN with fewer than 3 points or a constant column."""
    cols = [*TASK, "method", "n_points", "rho_agreement", "rho_kl"]
    if table.empty:
        return _empty(cols)
    rows = []
    for k, g in table.groupby([*TASK, "method"], sort=False):
        row = dict(zip([*TASK, "method"], k, strict=True), n_points=len(g))
        for name, col in (("rho_agreement", "top1_agreement"), ("rho_kl", "mean_kl")):
            x, y = g[col].to_numpy(float), g["acc_drop_mean"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
                row[name] = math.nan
            else:
                row[name] = float(spearmanr(x[ok], y[ok]).statistic)
        rows.append(row)
    return pd.DataFrame(rows)[cols]


FIDELITY = TaskFigure(
    "fidelity", "Upstream fidelity vs transfer cost",
    "x: top-1 agreement with the dense backbone (left) and mean KL(p_dense ‖ p_compressed) in "
    "nats (right), on the first {images} test images of {dataset} at the backbone's input "
    "size; y: the mean accuracy drop (dense − compressed, pp) over the data budgets, one point "
    "per compression (colour) and transfer method (marker). {correlation}",
    fg.plot_fidelity_vs_cost)


def _fidelity_skipped(b: _Builder) -> Note:
    if not b.fidelity:
        return Note("Fidelity: not recorded for this study. `hiddencost study run` measures it "
                    "after the runs (fidelity.json in the study's folder; --no-fidelity turns "
                    "it off).")
    return Note("Fidelity: none of the recorded entries matches a compressed point of the "
                "table.")


def _correlation_text(b: _Builder, rho: pd.DataFrame) -> str:
    """The caption's sentence on Spearman's ρ per method (defined ones only)."""
    corr = "; ".join(f"{b.label(x.method)} {_fmt(x.rho_agreement, 2)} / "
                     f"{_fmt(x.rho_kl, 2)}" for x in rho.itertuples(index=False)
                     if x.rho_agreement == x.rho_agreement or x.rho_kl == x.rho_kl)
    if not corr:
        return "No rank correlation: it needs 3 compressed points with different fidelity."
    return (f"Spearman ρ of the drop with agreement / with KL per method (– = undefined, "
            f"agreement constant): {corr}.")


def _fidelity_item(b: _Builder, task: Task, fid: pd.DataFrame, cost: pd.DataFrame
                   ) -> TableItem:
    """The table of ``task``'s fidelity with each method's mean accuracy drop beside it."""
    ft = _of(fid, task)
    shown = pd.DataFrame({
        "compression": ft["compression_name"],
        "images": [_fmt(x, 0) for x in ft["n_images"]],
        "top-1 agreement (%)": [_fmt(x) for x in ft["top1_agreement"]],
        "top-5 agreement (%)": [_fmt(x) for x in ft["top5_agreement"]],
        "mean KL (nats)": [_fmt(x, 3) for x in ft["mean_kl"]],
    })
    for method, g in cost.groupby("method", sort=False):
        drop = dict(zip(g["compression"], g["acc_drop_mean"], strict=True))
        shown[f"{b.label(method)} drop (pp)"] = [_fmt(drop.get(c)) for c in ft["compression"]]
    return TableItem(f"Fidelity and mean accuracy drop: {_task_title(task)}",
                     "Drop = dense − compressed accuracy, mean over data budgets of the seed "
                     "means; – where not measured.", shown, b.tabdir / "fidelity.csv")


def _fill_fidelity(b: _Builder, s: Section, tasks: list[Task]) -> None:
    fid = fidelity_table(b.df, b.fidelity)
    b.save_table("fidelity", fid)
    if fid.empty:
        s.items.append(_fidelity_skipped(b))
        return
    for r in fid[fid["error"].notna()].itertuples(index=False):
        s.items.append(Note(f"Fidelity of {r.compression_name} on {r.dataset} was not "
                            f"measured: {r.error}"))
    cost = fidelity_vs_cost(b.df, b.fidelity)
    rho = fidelity_rank_correlation(cost)
    b.save_tables(fidelity_vs_cost=cost, fidelity_rank_correlation=rho)
    images = "/".join(str(n) for n in sorted({int(n) for n in fid["n_images"] if n == n})) or "?"
    for task in tasks:
        t = _of(cost, task)
        b.task_figure(s, FIDELITY, task, t, images=images, dataset=task[1],
                      correlation=_correlation_text(b, _of(rho, task)))
        s.items.append(_fidelity_item(b, task, fid, t))


SECTION = SectionSpec(
    "fidelity", "Upstream fidelity vs transfer cost",
    "How closely each compressed backbone follows its dense original before any "
    "transfer (no labels needed: top-1 agreement and KL between their ImageNet "
    "predictions on the dataset's test images), set against what the compression "
    "costs after transfer.", _fill_fidelity)
