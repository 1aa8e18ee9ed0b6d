"""The cross-modal section (the paper's Tables 3–4): text and DNA tasks reprogrammed on dense
and compressed ImageNet models; on the page only for a study with such runs."""

from __future__ import annotations

from typing import Any

import pandas as pd

from hiddencost.report.builder import SectionSpec, Task, _budgets, _Builder, _fmt, _wide
from hiddencost.report.common import COMPRESSION_META, _empty, _largest_budget_accuracy, _sort
from hiddencost.report.html import Section, TableItem
from hiddencost.report.stats import ALPHA


def sequence_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of methods that read sequence tasks (cross-modal reprogramming, ``xmr``)."""
    if df.empty:
        return df
    return df[df["modality"] == "sequence"]


def crossmodal_table(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The paper's Tables 3–4: per sequence task (``dataset``) × backbone × compression point,
    at the task's largest budget, the test accuracy (%) over seeds: ``mean`` and the sample
    standard deviation ``sd`` (the paper's "mean ± std"; NaN with one seed), with, for a
    compressed point, Δ = dense − compressed (pp) of the same backbone and its two-sided Welch
    test (``p``, ``significant`` at ``alpha``: None when untested)."""
    cols = ["dataset", "backbone", "method", "budget", "compression", *COMPRESSION_META,
            "n_seeds", "mean", "sd", "delta", "p", "significant"]
    seq = sequence_runs(df)
    if seq.empty:
        return _empty(cols)
    return _sort(_largest_budget_accuracy(seq, alpha)[1][cols], df)


def _crossmodal_cell(mean: float, sd: float, significant: Any, delta: float) -> str:
    """``91.0 ± 1.2``, with ▼ / ▲ when significantly below / above the dense model."""
    text = _fmt(mean) if sd != sd else f"{_fmt(mean)} ± {_fmt(sd)}"
    if significant is True:
        text += " ▼" if delta > 0 else " ▲"
    return text


def crossmodal_shown(t: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 3 layout: one row per task, one column per backbone · compression
    point (in the table's order), cells from :func:`_crossmodal_cell`."""
    t = t.assign(column=[f"{b} · {c}" for b, c in zip(t["backbone"], t["compression_name"],
                                                       strict=True)],
                 cell=[_crossmodal_cell(m, sd, sig, d) for m, sd, sig, d in zip(
                     t["mean"], t["sd"], t["significant"], t["delta"], strict=True)])
    return _wide(t, "dataset", "task")


def _fill_crossmodal(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = crossmodal_table(b.df)
    path = b.save_table("crossmodal", t)
    budgets = _budgets(t)
    s.items.append(TableItem(
        "Test accuracy (%) of cross-modal reprogramming",
        f"Mean ± sample standard deviation over seeds, at each task's largest budget "
        f"({budgets}); ▼ / ▲: significantly below / above the dense model of the same "
        f"backbone (two-sided Welch t-test across seeds, p < {ALPHA:g}, no correction); no "
        f"mark when not significant or untested (fewer than 2 seeds on a side). The accuracy "
        f"and calibration of these runs are also in the figures above.",
        crossmodal_shown(t), path))


SECTION = SectionSpec(
    "crossmodal", "Cross-modal reprogramming (the paper's Tables 3–4)",
    "Frozen ImageNet models, dense and compressed, reprogrammed to classify text "
    "and DNA (Neekhara et al.'s cross-modal reprogramming): one row per task, one "
    "column per backbone and compression point, as the paper's Tables 3 and 4.",
    _fill_crossmodal, shown=lambda df: not sequence_runs(df).empty)
