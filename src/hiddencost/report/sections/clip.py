"""The CLIP section (the paper's Table 2): visual prompting of dense and compressed CLIP
models; on the page only for a study with CLIP runs."""

from __future__ import annotations

from typing import Any

import pandas as pd

from hiddencost.report.builder import SectionSpec, Task, _budgets, _Builder, _fmt, _interval, _wide
from hiddencost.report.common import COMPRESSION_META, _empty, _largest_budget_accuracy, _sort
from hiddencost.report.html import Section, TableItem
from hiddencost.report.stats import ALPHA


def clip_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of CLIP backbones (the open_clip family)."""
    if df.empty:
        return df
    return df[df["network_family"] == "open_clip"]


def clip_table(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The paper's Table 2: per dataset × CLIP backbone × method × compression point, at the
    dataset's largest budget, test accuracy (%) over seeds (``mean``, 95% t-interval ``lo`` /
    ``hi``), the backbone's parameters (millions, as its weight source measured them) and, for
    a compressed point, Δ = dense − compressed (pp) with its two-sided Welch test."""
    cols = ["dataset", "backbone", "method", "budget", "compression", *COMPRESSION_META,
            "parameters_m", "n_seeds", "mean", "lo", "hi", "delta", "p", "significant"]
    runs = clip_runs(df)
    if runs.empty:
        return _empty(cols)
    top, acc = _largest_budget_accuracy(runs, alpha)
    params = top.groupby("compression", sort=False)["parameters"].first()
    acc["parameters_m"] = [None if _missing_number(params.get(c)) else params.get(c) / 1e6
                           for c in acc["compression"]]
    return _sort(acc[cols], df)


def _missing_number(v: Any) -> bool:
    return v is None or v != v


def _clip_column(name: str, params: Any) -> str:
    return name if params is None or params != params else f"{name} ({params:.1f}M)"


def clip_shown(t: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2 layout: one row per dataset · method, one column per compression
    point with its parameters; cells ``mean [lo, hi]`` (95% CI over seeds) and, for a
    compressed point, the drop Δ = dense − compressed in pp (▼ / ▲ when significant)."""
    t = t.assign(column=[_clip_column(n, p) for n, p in zip(
                     t["compression_name"], t["parameters_m"], strict=True)],
                 row=[f"{d} · {m}" for d, m in zip(t["dataset"], t["method"], strict=True)],
                 cell=[_interval(m, lo, hi) + _clip_drop(d, sig) for m, lo, hi, d, sig in zip(
                     t["mean"], t["lo"], t["hi"], t["delta"], t["significant"], strict=True)])
    return _wide(t, "row", "dataset · method")


def _clip_drop(delta: Any, significant: Any) -> str:
    if delta is None or delta != delta:
        return ""
    mark = (" ▼" if delta > 0 else " ▲") if significant is True else ""
    return f" (Δ {_fmt(delta)}{mark})"


def _fill_clip(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = clip_table(b.df)
    path = b.save_table("clip", t)
    budgets = _budgets(t)
    s.items.append(TableItem(
        "Test accuracy (%) of CLIP visual prompting",
        f"Mean and 95% t-interval over seeds at each dataset's largest budget ({budgets}); "
        f"Δ = dense − compressed in pp, ▼ / ▲ when significantly below / above the dense "
        f"model (two-sided Welch t-test across seeds, p < {ALPHA:g}, no correction). "
        f"Parameters: the inference model's (both towers), as loaded; UPop's own count, which "
        f"the paper's Table 2 quotes, adds the momentum copies.",
        clip_shown(t), path))


SECTION = SectionSpec(
    "clip", "CLIP under structured compression (the paper's Table 2)",
    "Visual prompting of CLIP (frame prompt, text-template classes) on the dense "
    "and the compressed image + text towers: one row per dataset and method, one "
    "column per compression point, as the paper's Table 2.",
    _fill_clip, shown=lambda df: not clip_runs(df).empty)
