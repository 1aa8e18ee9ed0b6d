"""Measuring a score card: the suite run as a study, then the card computed from its runs.

:func:`make_card` runs the card's study (:meth:`~hiddencost.card.suites.Suite.study_text`;
resumable like any study, on any executor, packed where it packs) and :func:`card_from_table`
computes the card from the study's table: per cell, dense against compressed accuracy and ECE
(means over seeds with 95% t-intervals, Δ with Welch's p), what compression forgets
(:mod:`hiddencost.report.forgetting`: PIE rate, lost / gained, Holm-tested hurt classes), the
worst class's Δ, and per compressed point its upstream fidelity and the hidden-cost index
(:func:`index_of`).
"""

from __future__ import annotations

import importlib.metadata
import math
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console

from hiddencost.card.schema import Card, CellCard, CompressedCard, Fidelity, Interval
from hiddencost.card.suites import Suite, point_entry
from hiddencost.errors import HiddenCostError
from hiddencost.report.common import PERCENT, _dense_pairs
from hiddencost.report.sections.classes import per_class_matrix
from hiddencost.report.sections.forgetting import forgetting_tables
from hiddencost.report.stats import mean_ci, welch_test
from hiddencost.report.table import table_from_spec
from hiddencost.study.driver import run_study
from hiddencost.study.fidelity_file import FidelityEntry, read_fidelity
from hiddencost.study.layout import StudyPaths
from hiddencost.study.spec import StudySpec, parse_spec

CELL = ["backbone", "dataset", "method", "budget", "compression"]


def card_study(suite: Suite, dense: str, points: Sequence[str]) -> StudySpec:
    """The card's study: ``card-<suite>-v<version>-<dense>`` over the dense model and
    ``points`` (compression names, recipe points such as ``magnitude:0.5`` or ``w4``, or
    checkpoint files, see :func:`~hiddencost.card.suites.point_entry`); cards of one
    dense model share it, so their dense runs are run once."""
    if not points:
        raise HiddenCostError("a card needs at least one compressed point (--compressed)")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", dense)
    name = f"card-{suite.suite}-v{suite.version}-{slug}"
    return parse_spec(suite.study_text(name, dense, list(points)), source=f"card of {dense}",
                      default_name=name)


def _number(value: Any) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _interval(values: Sequence[float]) -> Interval:
    ci = mean_ci(values)
    return Interval(mean=_number(ci.mean), lo=_number(ci.lo), hi=_number(ci.hi), n=ci.n)


def _shots(rows: pd.DataFrame) -> float:
    """The examples per class of a budget: N, or for full data the training set per class."""
    shot, n_train = rows["n_shot"].iloc[0], _number(rows["n_train"].iloc[0])
    if shot is not None and not (isinstance(shot, float) and math.isnan(shot)):
        return float(shot)
    classes = len(rows["per_class_accuracy"].iloc[0] or [])
    # unknown sizes: NaN, which index_of leaves out
    return n_train / classes if n_train is not None and classes else math.nan


def index_of(curves: Sequence[Sequence[tuple[float, float]]]) -> float | None:
    """The hidden-cost index of (N, Δ) curves, one per (dataset, method): each curve's mean of
    Δ over log N by the trapezoid rule, ``(1 / (ln N_max − ln N_min)) ∫ Δ d(ln N)`` (its Δ when
    it has one budget), then the mean over the curves. Budgets are log-spaced, so each decade of
    N weighs the same; full data counts at its examples per class."""
    means = []
    for curve in curves:
        points = sorted((math.log(n), d) for n, d in curve
                        if d is not None and math.isfinite(n) and n > 0)
        if not points:
            continue
        if len(points) == 1 or points[-1][0] == points[0][0]:
            means.append(float(np.mean([d for _, d in points])))
            continue
        x, y = zip(*points, strict=True)
        means.append(float(np.trapezoid(y, x) / (x[-1] - x[0])))
    return float(np.mean(means)) if means else None


def _seed_index(cells: list[tuple[tuple, float, pd.DataFrame, pd.DataFrame]],
                metric: str) -> Interval:
    """:func:`index_of` per seed (dense seed s against compressed seed s, the seeds both sides
    of every cell have), as the mean over seeds and its interval (the index is linear in Δ:
    the mean is the index of the seed means)."""
    seeds = sorted(set.intersection(*[set(d["seed"]) & set(g["seed"])
                                      for _, _, d, g in cells])) if cells else []
    values = []
    for seed in seeds:
        curves: dict[tuple, list[tuple[float, float]]] = defaultdict(list)
        for key, shots, d, g in cells:
            delta = (float(d.loc[d["seed"] == seed, metric].iloc[0])
                     - float(g.loc[g["seed"] == seed, metric].iloc[0])) * PERCENT
            curves[(key[1], key[2])].append((shots, delta))
        value = index_of(list(curves.values()))
        if value is not None:
            values.append(value)
    return _interval(values)


def _class_means(rows: pd.DataFrame) -> np.ndarray | None:
    """The per-class accuracy of the runs, mean over seeds; None when a run has none."""
    lists = list(rows["per_class_accuracy"])
    if not lists or any(not isinstance(p, list) or not p for p in lists):
        return None
    with np.errstate(all="ignore"):
        return np.nanmean(per_class_matrix(rows), axis=0)


def _cell_card(key: tuple, d: pd.DataFrame, g: pd.DataFrame,
               forgetting: dict[tuple, dict[str, Any]]) -> CellCard:
    accuracy = welch_test(list(d["accuracy"] * PERCENT), list(g["accuracy"] * PERCENT))
    ece = welch_test(list(d["ece"] * PERCENT), list(g["ece"] * PERCENT))
    classes_d, classes_g = _class_means(d), _class_means(g)
    worst = (float(np.nanmax(classes_d - classes_g)) * PERCENT
             if classes_d is not None and classes_g is not None
             and classes_d.shape == classes_g.shape else None)
    f = forgetting.get(key, {})
    hurt = f.get("hurt_classes")
    return CellCard(
        dataset=key[1], method=key[2], budget=str(key[3]),
        dense_accuracy=_interval(list(d["accuracy"] * PERCENT)),
        compressed_accuracy=_interval(list(g["accuracy"] * PERCENT)),
        delta_accuracy=_number(accuracy.diff), p_accuracy=_number(accuracy.p),
        dense_ece=_interval(list(d["ece"] * PERCENT)),
        compressed_ece=_interval(list(g["ece"] * PERCENT)),
        delta_ece=_number(ece.diff), p_ece=_number(ece.p),
        pie_rate=_number(f.get("pie_rate")),
        dense_disagreement=_number(f.get("dense_disagreement")),
        lost_rate=_number(f.get("lost_rate")),
        gained_rate=_number(f.get("gained_rate")),
        hurt_classes=None if hurt is None else int(hurt), worst_class_delta=_number(worst))


def _scalar(rows: pd.DataFrame, column: str) -> Any:
    values = [v for v in rows[column] if v is not None and not (isinstance(v, float)
                                                               and math.isnan(v))]
    return values[0] if values else None


def _integer(rows: pd.DataFrame, column: str) -> int | None:
    value = _scalar(rows, column) if column in rows else None
    return None if value is None else int(value)


def card_from_table(df: pd.DataFrame, suite: Suite, dense: str, points: Sequence[str],
                    study: str, fidelity: Sequence[FidelityEntry] = ()) -> Card:
    """The card of the runs in ``df`` (a study table, :mod:`hiddencost.report.table`): see the
    module docstring. A point without runs is a one-line error."""
    forgetting = {tuple(r[c] for c in CELL): r
                  for r in forgetting_tables(df)[0].to_dict("records")}
    by_point: dict[str, list[tuple[tuple, float, pd.DataFrame, pd.DataFrame]]] = \
        defaultdict(list)
    for key, d, g in _dense_pairs(df):
        by_point[key[4]].append((key, _shots(g), d, g))
    entries = []
    for point in points:
        label = point_entry(point)[1]
        cells = by_point.get(label)
        if not cells:
            raise HiddenCostError(f"no finished dense and {label} runs in a common cell: the "
                                  "card's study has not run (see `hiddencost study status`)")
        rows = df[df["compression"] == label]
        cards = [_cell_card(key, d, g, forgetting) for key, _, d, g in cells]
        entries.append(CompressedCard(
            point=point, label=label, family=str(rows["family"].iloc[0]),
            parameters=_integer(rows, "parameters"),
            prunable_weights=_integer(rows, "prunable_weights"),
            nonzero_weights=_integer(rows, "nonzero_weights"),
            sparsity=_number(_scalar(rows, "sparsity")),
            weight_bits=_integer(rows, "weight_bits"),
            activation_bits=_integer(rows, "activation_bits"),
            fidelity=[Fidelity(dataset=e.dataset,
                               top1_agreement=PERCENT * e.metrics.top1_agreement,
                               mean_kl=e.metrics.mean_kl)
                      for e in fidelity if e.metrics is not None
                      and e.tags.get("compression") == label],
            cells=cards, index=_seed_index(cells, "accuracy"),
            ece_index=_seed_index(cells, "ece")))
    dense_rows = df[df["is_dense"]]
    return Card(suite=suite.suite, suite_version=suite.version,
                suite_description=suite.description, dense=dense,
                dense_parameters=_integer(dense_rows, "parameters") if len(dense_rows) else None,
                entries=entries, study=study,
                hiddencost_version=importlib.metadata.version("hiddencost"),
                created_at=time.time())


def make_card(suite: Suite, dense: str, points: Sequence[str], *,
              out: str | Path | None = None, executor: str = "local",
              executor_options: dict[str, Any] | None = None,
              environment: dict[str, Any] | None = None, pack: int | None = None,
              console: Console | None = None, progress: bool = True) -> tuple[Card, Path]:
    """Run the card's study (what is not done yet) and compute its card; returns the card and
    the study's output folder."""
    spec = card_study(suite, dense, points)
    root = StudyPaths.resolve(spec, out, None).root
    run_study(spec, out=root, executor=executor, executor_options=executor_options,
              environment=environment, pack=pack, console=console, progress=progress)
    df = table_from_spec(spec, root)
    return card_from_table(df, suite, dense, points, spec.name, read_fidelity(root)), root
