"""The calibration section: ECE against the compression level, and reliability diagrams of
the dense and the most compressed models."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

import hiddencost.report.figures as fg
from hiddencost.report.builder import (
    SectionSpec,
    Task,
    TaskFigure,
    _Builder,
    _fmt,
    _metric_plot,
    _wide,
)
from hiddencost.report.common import (
    COMPRESSION_META,
    PERCENT,
    TASK,
    _dense_and_most_compressed,
    _dense_pairs,
    _empty,
    _meta,
    _sort,
    largest_budget,
    metric_vs_compression,
)
from hiddencost.report.html import Section, TableItem


def ece_vs_compression(df: pd.DataFrame) -> pd.DataFrame:
    """ECE (%, 15 bins, top-label) against the compression level: :func:`metric_vs_compression`
    of ``ece`` × 100."""
    return metric_vs_compression(df, "ece", PERCENT)


def _pooled_bins(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reliability bins of ``runs`` (seeds of one point) pooled, weighted by the counts
    (see :func:`reliability_table`); empty without runs."""
    if not runs:
        return []
    edges = runs[0]["edges"]
    out = []
    for i in range(len(runs[0]["counts"])):
        cnt = sum(int(r["counts"][i]) for r in runs)
        acc = sum(int(r["counts"][i]) * (r["accuracy"][i] or 0.0) for r in runs)
        conf = sum(int(r["counts"][i]) * (r["confidence"][i] or 0.0) for r in runs)
        out.append({"bin": i, "bin_lo": edges[i], "bin_hi": edges[i + 1], "count": cnt,
                    "accuracy": acc / cnt if cnt else math.nan,
                    "confidence": conf / cnt if cnt else math.nan, "n_seeds": len(runs)})
    return out


def reliability_table(df: pd.DataFrame, budget: str | None = None) -> pd.DataFrame:
    """Reliability-diagram data of the dense model and of each family's most compressed point,
    per task × method at ``budget`` (default: the largest budget with reliability data).

    Seeds are pooled: per bin b, ``count_b = Σ_s n_{s,b}``, ``acc_b = Σ_s n_{s,b} acc_{s,b} /
    count_b`` and likewise the mean confidence (NaN for an empty bin).
    """
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "bin", "bin_lo",
            "bin_hi", "count", "accuracy", "confidence", "n_seeds"]
    if df.empty:
        return _empty(cols)
    sub = df[[isinstance(r, dict) and bool(r.get("counts")) for r in df["reliability"]]]
    rows = []
    meta = _meta(df)
    for k, g in sub.groupby([*TASK, "method"], sort=False):
        b = budget or largest_budget(g)
        g = g[g["budget"] == b]
        if not g["is_dense"].any():
            continue
        cell = {**dict(zip([*TASK, "method"], k, strict=True)), "budget": b}
        for comp in _dense_and_most_compressed(g):
            runs = list(g.loc[g["compression"] == comp, "reliability"])
            rows += [{**cell, "compression": comp, **meta[comp], **row}
                     for row in _pooled_bins(runs)]
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df, ["bin"])


ECE = TaskFigure(
    "ece", "ECE vs compression",
    "ECE (%) against the compression level, dense first, one row per transfer method and one "
    "column per compression family, one line per data budget; {seeds}.",
    _metric_plot("ECE (%)"))
RELIABILITY = TaskFigure(
    "reliability", "Reliability diagrams",
    "Per confidence bin, the fraction of correct predictions against the mean confidence "
    "(top) and the number of test samples (bottom), for the dense model and the most "
    "compressed model of each family, at the largest data budget, seeds pooled; points below "
    "the diagonal are over-confident.", fg.plot_reliability)


def recalibrated_ece(df: pd.DataFrame) -> pd.DataFrame:
    """Per compressed cell whose runs held out a validation split: the ECE (%) of the dense and
    compressed runs before and after temperature scaling (means over seeds), and Δ = compressed
    − dense of each: a calibration cost that survives scaling is more than a temperature."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "n_dense",
            "n_compressed", "dense_ece", "compressed_ece", "delta_ece", "dense_ts_ece",
            "compressed_ts_ece", "delta_ts_ece"]
    if df.empty or "ts_ece" not in df:
        return _empty(cols)
    sub = df[df["ts_ece"].notna()]
    meta, rows = _meta(df), []
    for key, d, g in _dense_pairs(sub):
        means = {f"{side}_{m}": PERCENT * float(rows_[m].mean())
                 for side, rows_ in (("dense", d), ("compressed", g))
                 for m in ("ece", "ts_ece")}
        rows.append({**dict(zip([*TASK, "method", "budget", "compression"], key, strict=True)),
                     **meta[key[4]], "n_dense": len(d), "n_compressed": len(g), **means,
                     "delta_ece": means["compressed_ece"] - means["dense_ece"],
                     "delta_ts_ece": means["compressed_ts_ece"] - means["dense_ts_ece"]})
    return _sort(pd.DataFrame(rows)[cols], df) if rows else _empty(cols)


def _fill_calibration(b: _Builder, s: Section, tasks: list[Task]) -> None:
    ece, rel = ece_vs_compression(b.df), reliability_table(b.df)
    b.save_tables(ece_vs_compression=ece, reliability=rel)
    for task in tasks:
        b.task_figure(s, ECE, task, ece)
        b.task_figure(s, RELIABILITY, task, rel)
    scaled = recalibrated_ece(b.df)
    if scaled.empty:
        return  # no run held out a validation split (the paper's protocol)
    path = b.save_table("ece_after_temperature_scaling", scaled)
    shown = scaled.assign(
        task=[f"{r.backbone} → {r.dataset} · {r.method} · {r.budget}"
              for r in scaled.itertuples()],
        column=scaled["compression_name"],
        cell=[f"{_fmt(a)} → {_fmt(t)}" for a, t in zip(scaled["delta_ece"],
                                                        scaled["delta_ts_ece"], strict=True)])
    s.items.append(TableItem(
        "ΔECE before → after temperature scaling",
        "Compressed − dense ECE (percentage points, means over seeds) before and after "
        "temperature scaling fitted on a validation split held out of the training pool "
        "(validation_fraction; the test split is never used). A gap that stays after scaling "
        "is a calibration cost no single temperature removes.",
        _wide(shown, "task", "task · method · budget"), path))


SECTION = SectionSpec(
    "calibration", "Calibration",
    "Expected calibration error (top-label, 15 equal-width bins, softmax over the "
    "mapped logits) against the compression level, and reliability diagrams of the "
    "dense and the most compressed models.", _fill_calibration)
