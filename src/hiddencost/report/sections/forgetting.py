"""The forgetting section: which test examples and classes pay for compression after transfer
(:mod:`hiddencost.report.forgetting`: PIEs, churn, Holm-tested classes), from the runs' stored
predictions (``predictions.safetensors``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import hiddencost.report.figures as fg
from hiddencost.errors import HiddenCostError
from hiddencost.forgetting import (
    forgetting_rates,
    modal_labels,
    pies,
    stack_predictions,
    top_pies,
)
from hiddencost.predictions import read_predictions
from hiddencost.report.builder import (
    SectionSpec,
    Task,
    TaskFigure,
    _budgets,
    _Builder,
    _fmt,
    _of,
    _wide,
)
from hiddencost.report.common import (
    COMPRESSION_META,
    PERCENT,
    TASK,
    _dense_pairs,
    _empty,
    _meta,
    _sort,
    most_compressed,
)
from hiddencost.report.forgetting import class_tests
from hiddencost.report.html import Note, Section, TableItem
from hiddencost.report.sections.classes import per_class_matrix
from hiddencost.report.stats import ALPHA
from hiddencost.report.table import class_names
from hiddencost.report.test_images import test_images

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


Stack = tuple[np.ndarray, np.ndarray]


def _paired_predictions(df: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame, pd.DataFrame,
                                                            Stack, Stack]]:
    """Each compressed cell of ``df`` with its dense cell (:func:`_dense_pairs`), both with
    stored predictions of the same test examples: ``(key, dense rows, compressed rows, (dense
    (S, N) predictions, labels), (compressed predictions, labels))``."""
    stacks: dict[tuple, Stack | None] = {}  # a dense cell pairs with many compressed cells
    for key, dense, compressed in _dense_pairs(df):
        if key[:4] not in stacks:
            stacks[key[:4]] = _stack(dense)
        d, c = stacks[key[:4]], _stack(compressed)
        if d is not None and c is not None and np.array_equal(d[1], c[1]):
            yield key, dense, compressed, d, c


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
    rows, class_rows = [], []
    for key, dense, compressed, (dp, labels), (cp, _) in _paired_predictions(df):
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


#: PIE thumbnails per compressed point (the top PIEs of :func:`~hiddencost.forgetting.top_pies`).
THUMBNAILS = 6
PIE_COLUMNS = [*CELL, *COMPRESSION_META, "rank", "position", "label", "label_name",
               "dense_label", "dense_name", "compressed_label", "compressed_name"]


def pie_examples(df: pd.DataFrame, k: int = THUMBNAILS) -> pd.DataFrame:
    """The top ``k`` PIEs (:func:`~hiddencost.forgetting.top_pies`) of each method's most
    compressed point per family, at each task's largest budget: their test-split ``position``,
    true label and modal predictions under dense and compressed (with class names)."""
    if df.empty or "predictions" not in df:
        return _empty(PIE_COLUMNS)
    top = df[df["budget_rank"] == df.groupby(TASK)["budget_rank"].transform("max")]
    shown = {k: set(most_compressed(g)) for k, g in top.groupby([*TASK, "method"], sort=False)}
    meta, rows = _meta(df), []
    for key, dense, _, (dp, labels), (cp, _) in _paired_predictions(top):
        if key[4] not in shown[key[:3]]:
            continue
        stored = read_predictions(Path(dense["predictions"].iloc[0]).parent)
        names = class_names(df, key[1])
        modal_d, modal_c = modal_labels(dp), modal_labels(cp)
        for rank, i in enumerate(top_pies(dp, cp, labels, k)):
            rows.append({**dict(zip(CELL, key, strict=True)), **meta[key[4]], "rank": rank,
                         "position": int(stored.indices[i]),  # type: ignore[union-attr]
                         **{f"{side}label": int(v[i]) for side, v in
                            (("", labels), ("dense_", modal_d), ("compressed_", modal_c))},
                         **{f"{side}name": names.get(int(v[i]), f"class {v[i]}") for side, v in
                            (("label_", labels), ("dense_", modal_d),
                             ("compressed_", modal_c))}})
    return _sort(pd.DataFrame(rows)[PIE_COLUMNS], df, ["rank"]) if rows else _empty(PIE_COLUMNS)


def with_images(pies_table: pd.DataFrame, df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """``pies_table`` with each example's test ``image`` (read through the dataset registry:
    :mod:`hiddencost.report.test_images`), and one line per dataset that could not be read."""
    if pies_table.empty:
        return pies_table, []
    where = df.drop_duplicates("dataset").set_index("dataset")
    images: dict[Any, np.ndarray] = {}
    problems = []
    for dataset, g in pies_table.groupby("dataset", sort=False):
        source = where.loc[dataset]
        try:
            images.update(zip(g.index, test_images(
                dataset, source["data_root"], int(source["settings"].get("split_seed") or 0),
                g["position"].to_numpy(), g["label"].to_numpy()), strict=True))
        except HiddenCostError as exc:
            problems.append(f"{dataset}: {exc}")
    kept = pies_table[pies_table.index.isin(list(images))]
    return kept.assign(image=[images[i] for i in kept.index]), problems


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
    for task in tasks:
        b.task_figure(s, FORGETTING, task, cells)
    examples = pie_examples(b.df[b.df["modality"] == "image"])
    b.save_table("forgetting_pies", examples)
    if not b.thumbnails:
        return
    shown, problems = with_images(examples, b.df)
    for problem in problems:
        s.items.append(Note(f"PIE thumbnails skipped for {problem} (the PIEs are listed in "
                            "forgetting_pies.csv)."))
    for task in tasks:
        if not _of(shown, task).empty:  # a task whose images could not be read has its note
            b.task_figure(s, THUMBS, task, shown)


FORGETTING = TaskFigure(
    "forgetting", "PIEs and lost examples",
    "Per transfer method, against the data budget: the share of test examples whose modal "
    "prediction over seeds differs between the dense and each compressed model (PIEs, top; "
    "dashed: the share on which the dense seeds disagree among themselves, the baseline) and "
    "the share the dense runs get right and the compressed ones wrong (bottom).",
    fg.plot_forgetting)
THUMBS = TaskFigure(
    "pies", "The top PIEs",
    f"Up to {THUMBNAILS} PIEs of each method's most compressed model per family at the "
    "largest budget, lost examples first (right under dense, wrong under compressed; red "
    "titles), then those both sides predict most firmly over seeds: the test image, its true "
    "label and the modal predictions of the dense and the compressed runs.",
    fg.plot_pie_thumbnails)

SECTION = SectionSpec(
    "forgetting", "What compression forgets",
    "Hooker et al.'s question asked after transfer: which test examples the compressed "
    "model's transfer gets otherwise than the dense model's (PIEs), which it loses, and "
    "which classes pay, tested across seeds.",
    _fill_forgetting)
