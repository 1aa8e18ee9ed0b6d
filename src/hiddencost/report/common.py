"""What the analyses of several report sections share, from the tidy run table of
:mod:`hiddencost.report.table`: sorting, means over seeds, the dense reference of a compressed
cell, the Δ test of :func:`delta_heatmap` and a metric against the compression level.

Conventions shared by every analysis (here and in :mod:`hiddencost.report.sections`):

- A *task* is a (``backbone``, ``dataset``) pair; a *cell* is a task × ``method`` × ``budget``
  (× compression). Replicates are seeds: every mean is over the seeds of a cell, with a 95%
  Student-t interval (:func:`hiddencost.report.stats.mean_ci`; NaN bounds with one seed).
- Accuracy and ECE are in percent, differences of them in percentage points (pp); confidence
  is a probability; KL divergence is in nats.
- Δ (delta) is **dense − compressed** for accuracy (positive = compression costs accuracy) and
  **compressed − dense** for ECE (positive = compression worsens calibration).
- The dense reference of a compressed run is the dense run of the same backbone, dataset,
  method, budget and seed (same few-shot subset).
- An analysis with no usable input returns an empty DataFrame; the report turns that into a
  note, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from hiddencost.report.order import budget_order, compression_order
from hiddencost.report.stats import ALPHA, mean_ci, welch_test

TASK: list[str] = ["backbone", "dataset"]
#: Per-compression descriptors carried along by every analysis.
COMPRESSION_META: list[str] = ["family", "compression_name", "level", "unit", "severity"]
PERCENT = 100.0


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))


def _meta(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    out = {}
    for row in df.drop_duplicates("compression").itertuples(index=False):
        out[row.compression] = {k: getattr(row, k) for k in COMPRESSION_META}
    return out


def _sort(out: pd.DataFrame, df: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Sort an analysis table: tasks and methods in order of appearance, compressions in
    :func:`compression_order`, budgets by shots, then ``extra`` columns."""
    if out.empty:
        return out.reset_index(drop=True)
    orders: dict[str, list] = {
        "backbone": list(dict.fromkeys(df["backbone"])),
        "dataset": list(dict.fromkeys(df["dataset"])),
        "method": list(dict.fromkeys(df["method"])),
        "compression": compression_order(df),
        "budget": budget_order(df),
    }
    keys = [c for c in ("backbone", "dataset", "method", "compression", "budget")
            if c in out.columns]
    tmp = out.copy()
    sort_cols = []
    for c in keys:
        rank = {v: i for i, v in enumerate(orders[c])}
        tmp[f"_{c}"] = [rank.get(v, len(rank)) for v in tmp[c]]
        sort_cols.append(f"_{c}")
    sort_cols += [c for c in extra if c in tmp.columns]
    tmp = tmp.sort_values(sort_cols, kind="stable")
    return tmp.drop(columns=[c for c in tmp.columns if c.startswith("_")]).reset_index(drop=True)


def _summarize(df: pd.DataFrame, keys: list[str], value: str, scale: float = 1.0
               ) -> pd.DataFrame:
    """Mean and 95% t-interval of ``value × scale`` over the rows (seeds) of each group."""
    rows = []
    meta = _meta(df)
    for k, g in df.groupby(keys, sort=False, dropna=False):
        vals = [v * scale for v in g[value] if v is not None and v == v]
        ci = mean_ci(vals)
        row = dict(zip(keys, k if isinstance(k, tuple) else (k,), strict=True))
        if "compression" in row:
            row.update(meta[row["compression"]])
        if "budget" in row:
            row["budget_rank"] = float(g["budget_rank"].iloc[0])
        row.update(n_seeds=ci.n, mean=ci.mean, lo=ci.lo, hi=ci.hi, sd=ci.sd)
        rows.append(row)
    return pd.DataFrame(rows)


def _dense_pairs(sub: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame, pd.DataFrame]]:
    """Each compressed cell (task, method, budget, compression) of ``sub`` with its dense
    cell (the same task, method and budget): ``(key, dense rows, compressed rows)``; cells
    without a dense counterpart are skipped."""
    cell = [*TASK, "method", "budget"]
    dense = {k: g for k, g in sub[sub["is_dense"]].groupby(cell, sort=False)}
    for k, g in sub[~sub["is_dense"]].groupby([*cell, "compression"], sort=False):
        d = dense.get(k[:4])
        if d is not None:
            yield k, d, g


def largest_budget(df: pd.DataFrame) -> str | None:
    """The budget with the most shots (``full`` when present)."""
    if df.empty:
        return None
    return str(df.loc[df["budget_rank"].idxmax(), "budget"])


def most_compressed(df: pd.DataFrame) -> list[str]:
    """Per family, the most compressed point present in ``df`` (highest severity; the last one
    in order when severity is unknown)."""
    order = compression_order(df)
    out: dict[str, str] = {}
    for comp in order:
        fam = df.loc[df["compression"] == comp, "family"].iloc[0]
        if fam != "dense":
            out[fam] = comp  # order is ascending severity within a family
    return list(out.values())


def _dense_and_most_compressed(g: pd.DataFrame) -> list[str]:
    """The dense point of ``g`` (it must have one) and each family's most compressed point."""
    return [g.loc[g["is_dense"], "compression"].iloc[0], *most_compressed(g)]


def max_seeds(df: pd.DataFrame) -> int:
    """The largest number of seeds of any cell × compression (1 → no intervals possible)."""
    if df.empty:
        return 0
    return int(df.groupby([*TASK, "method", "budget", "compression"], sort=False)["seed"]
               .nunique().max())


def delta_heatmap(df: pd.DataFrame, metric: str = "accuracy", alpha: float = ALPHA,
                  dense_minus_compressed: bool = True) -> pd.DataFrame:
    """Per task × method × compressed point × budget: Δ = mean(dense) − mean(compressed) of
    ``metric`` in pp over seeds (or compressed − dense with ``dense_minus_compressed=False``),
    with Welch's two-sided t-test of equal means (:func:`~hiddencost.report.stats.welch_test`)
    and the Welch 95% interval of Δ.

    ``significant`` is True / False at level ``alpha`` (no multiple-comparison correction), and
    None when untested (``reason``: fewer than 2 seeds on a side, or zero variance). Cells
    without a dense counterpart are absent.
    """
    cols = [*TASK, "method", "compression", "budget", *COMPRESSION_META, "budget_rank",
            "dense_mean", "compressed_mean", "delta", "delta_lo", "delta_hi", "n_dense",
            "n_compressed", "t", "df", "p", "tested", "significant", "reason"]
    if df.empty:
        return _empty(cols)
    sub = df[df[metric].notna()]
    meta = _meta(df)
    rows = []
    for k, d, g in _dense_pairs(sub):
        dv = [v * PERCENT for v in d[metric]]
        cv = [v * PERCENT for v in g[metric]]
        w = welch_test(dv, cv) if dense_minus_compressed else welch_test(cv, dv)
        lo, hi = w.diff_ci()
        rows.append({
            **dict(zip([*TASK, "method", "budget", "compression"], k, strict=True)),
            **meta[k[4]], "budget_rank": float(g["budget_rank"].iloc[0]),
            "dense_mean": float(np.mean(dv)), "compressed_mean": float(np.mean(cv)),
            "delta": w.diff, "delta_lo": lo, "delta_hi": hi, "n_dense": w.n_a if
            dense_minus_compressed else w.n_b, "n_compressed": w.n_b if dense_minus_compressed
            else w.n_a, "t": w.t, "df": w.df, "p": w.p, "tested": w.tested,
            "significant": w.significant(alpha), "reason": w.reason,
        })
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df)


def metric_vs_compression(df: pd.DataFrame, metric: str, scale: float = 1.0) -> pd.DataFrame:
    """Per task × method × budget × compression point (dense included): mean of
    ``metric × scale`` over seeds with its 95% t-interval."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "budget_rank",
            "metric", "n_seeds", "mean", "lo", "hi", "sd"]
    sub = df[df[metric].notna()] if not df.empty and metric in df else df.iloc[0:0]
    if sub.empty:
        return _empty(cols)
    out = _summarize(sub, [*TASK, "method", "budget", "compression"], metric, scale)
    out["metric"] = metric
    return _sort(out[cols], df)


def _largest_budget_accuracy(runs: pd.DataFrame, alpha: float
                             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``runs`` at each dataset's largest budget, and their accuracy (%) per task ×
    method × budget × compression point over seeds with, for a compressed point, Δ = dense −
    compressed and its Welch test (``delta``, ``p``, ``significant``: None when untested)."""
    top = runs[runs["budget_rank"] == runs.groupby("dataset")["budget_rank"].transform("max")]
    keys = [*TASK, "method", "budget", "compression"]
    acc = _summarize(top, keys, "accuracy", PERCENT)
    test = delta_heatmap(top, "accuracy", alpha)
    if not test.empty:
        acc = acc.merge(test[[*keys, "delta", "p", "significant"]], on=keys, how="left")
    else:
        acc = acc.assign(delta=math.nan, p=math.nan, significant=None)
    acc["significant"] = [None if v is None or v != v else bool(v) for v in acc["significant"]]
    return top, acc
