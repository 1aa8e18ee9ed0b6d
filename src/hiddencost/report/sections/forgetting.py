"""The forgetting section: which test examples and classes pay for compression after transfer
(:mod:`hiddencost.report.forgetting`: PIEs, churn, Holm-tested classes), from the runs' stored
predictions (``predictions.safetensors``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hiddencost.forgetting import forgetting_rates, modal_labels, pies, stack_predictions
from hiddencost.predictions import read_predictions
from hiddencost.report.builder import SectionSpec, Task, _budgets, _Builder, _fmt, _wide
from hiddencost.report.common import (
    COMPRESSION_META,
    PERCENT,
    TASK,
    _dense_pairs,
    _empty,
    _meta,
    _sort,
)
from hiddencost.report.forgetting import class_tests
from hiddencost.report.html import Note, Section, TableItem
from hiddencost.report.sections.classes import per_class_matrix
from hiddencost.report.stats import ALPHA
from hiddencost.report.table import class_names

CELL = [*TASK, "method", "budget", "compression"]
COLUMNS = [*CELL, *COMPRESSION_META, "budget_rank", "n_dense", "n_compressed", "n_examples",
           "pie_rate", "dense_disagreement", "pie_dense_accuracy", "pie_compressed_accuracy",
           "rest_accuracy", "lost_rate", "gained_rate", "hurt_classes", "worst_class",
           "worst_class_name"]
CLASS_COLUMNS = [*CELL, *COMPRESSION_META, "budget_rank", "target", "target_name",
                 "dense_normalised_recall", "compressed_normalised_recall", "p", "p_holm",
                 "hurt"]


def _stack(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray] | None:
    """:func:`~hiddencost.forgetting.stack_predictions` of the runs of ``rows``."""
    return stack_predictions([read_predictions(Path(p).parent) if isinstance(p, str) else None
                              for p in rows["predictions"]])


def _recalls(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(S, K) per-class recall and (S,) accuracy of the runs."""
    return per_class_matrix(rows), rows["accuracy"].to_numpy(dtype=float)


def forgetting_tables(df: pd.DataFrame, alpha: float = ALPHA) -> tuple[pd.DataFrame,
                                                                       pd.DataFrame]:
    """Per compressed cell (task, method, budget, compression) with dense runs of the same
    cell, all with stored predictions: the PIE rate (%) and the accuracy (%) of the dense and
    compressed modal predictions on the PIEs and of both on the rest (they agree there), the
    lost / gained rates (%), and the count of hurt classes with the worst (smallest adjusted
    p); and the per-class tests of every such cell (see :mod:`hiddencost.report.forgetting`)."""
    if df.empty or "predictions" not in df:
        return _empty(COLUMNS), _empty(CLASS_COLUMNS)
    meta = _meta(df)
    names: dict[str, dict[int, str]] = {}
    stacks: dict[tuple, tuple[np.ndarray, np.ndarray] | None] = {}  # dense cells pair many times
    rows, class_rows = [], []
    for key, dense, compressed in _dense_pairs(df):
        if key[:4] not in stacks:
            stacks[key[:4]] = _stack(dense)
        d, c = stacks[key[:4]], _stack(compressed)
        if d is None or c is None or not np.array_equal(d[1], c[1]):
            continue
        (dp, labels), (cp, _) = d, c
        mask = pies(dp, cp)
        right_d, right_c = modal_labels(dp) == labels, modal_labels(cp) == labels
        tests = class_tests(*_recalls(dense), *_recalls(compressed), alpha)
        hurt = [t for t in tests if t.hurt]
        worst = min(hurt, key=lambda t: (t.p_holm, t.cls)) if hurt else None
        names.setdefault(key[1], class_names(df, key[1]))
        cell: dict[str, Any] = {**dict(zip(CELL, key, strict=True)), **meta[key[4]],
                                "budget_rank": float(compressed["budget_rank"].iloc[0])}
        rows.append({**cell, "n_dense": len(dp), "n_compressed": len(cp),
                     "n_examples": len(labels), **forgetting_rates(dp, cp, labels),
                     "pie_dense_accuracy": _rate(right_d[mask]),
                     "pie_compressed_accuracy": _rate(right_c[mask]),
                     "rest_accuracy": _rate(right_d[~mask]), "hurt_classes": len(hurt),
                     "worst_class": None if worst is None else worst.cls,
                     "worst_class_name": None if worst is None else
                     names[key[1]].get(worst.cls, f"class {worst.cls}")})
        class_rows += [{**cell, "target": t.cls,
                        "target_name": names[key[1]].get(t.cls, f"class {t.cls}"),
                        "dense_normalised_recall": t.dense,
                        "compressed_normalised_recall": t.compressed, "p": t.p,
                        "p_holm": t.p_holm, "hurt": t.hurt} for t in tests]
    if not rows:
        return _empty(COLUMNS), _empty(CLASS_COLUMNS)
    return (_sort(pd.DataFrame(rows)[COLUMNS], df),
            _sort(pd.DataFrame(class_rows)[CLASS_COLUMNS], df, ["target"]))


def _rate(hits: np.ndarray) -> float:
    """The percentage of True in ``hits`` (NaN when empty)."""
    return PERCENT * float(hits.mean()) if hits.size else float("nan")


def _largest_budget(t: pd.DataFrame) -> pd.DataFrame:
    """The rows of each task's largest budget."""
    return t[t["budget_rank"] == t.groupby(TASK)["budget_rank"].transform("max")]


def forgetting_shown(t: pd.DataFrame) -> pd.DataFrame:
    """One row per task · method, one column per compression point, at the largest budget:
    ``PIE % (dense seeds disagree %) · lost % · hurt classes``."""
    top = _largest_budget(t)
    top = top.assign(
        task=[f"{b} → {d} · {m}" for b, d, m in
              zip(top["backbone"], top["dataset"], top["method"], strict=True)],
        column=top["compression_name"],
        cell=[f"{_fmt(p)} ({_fmt(b)}) · {_fmt(lo)} · {h}" for p, b, lo, h in
              zip(top["pie_rate"], top["dense_disagreement"], top["lost_rate"],
                  top["hurt_classes"], strict=True)])
    return _wide(top, "task", "task · method")


def _fill_forgetting(b: _Builder, s: Section, tasks: list[Task]) -> None:
    cells, classes = forgetting_tables(b.df)
    path = b.save_table("forgetting", cells)
    b.save_table("forgetting_classes", classes)
    if cells.empty:
        s.items.append(Note("What compression forgets: skipped, no dense and compressed runs "
                            "of a common cell with stored predictions (predictions.safetensors: "
                            "runs of hiddencost since December 2026)."))
        return
    caption = (
        f"Per cell at its largest budget ({_budgets(_largest_budget(cells))}): the share of "
        "test examples whose modal prediction over seeds differs between the dense and the "
        "compressed runs (PIEs, %; the smallest label on ties) and, in brackets, the share on "
        "which the dense seeds disagree among themselves (the baseline to read it against: "
        "seeds alone move many predictions at small budgets), the share the dense runs get "
        "right and the compressed ones wrong (lost, %; gained examples are in the CSV), and "
        "the number of classes whose recall, normalised by the run's accuracy, is "
        f"significantly lower (Welch across seeds, Holm over the classes, p < {ALPHA:g}). "
        "Every budget, the accuracy on PIEs and on the rest, and each class's test are in "
        f"{path.name} and forgetting_classes.csv.")
    s.items.append(TableItem("PIEs, lost examples and hurt classes", caption,
                             forgetting_shown(cells), path))

SECTION = SectionSpec(
    "forgetting", "What compression forgets",
    "Hooker et al.'s question asked after transfer: which test examples the compressed "
    "model's transfer gets otherwise than the dense model's (PIEs), which it loses, and "
    "which classes pay, tested across seeds.",
    _fill_forgetting)
