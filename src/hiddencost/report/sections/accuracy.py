"""The accuracy section: test accuracy against the data budget, per task, transfer method
and compression point."""

from __future__ import annotations

import pandas as pd

import hiddencost.report.figures as fg
from hiddencost.report.builder import SectionSpec, Task, TaskFigure, _Builder
from hiddencost.report.common import COMPRESSION_META, PERCENT, TASK, _empty, _sort, _summarize
from hiddencost.report.html import Section


def accuracy_vs_budget(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per task × method × compression × budget: mean test accuracy (%) over seeds with its 95%
    t-interval (``lo``, ``hi``; NaN with one seed)."""
    cols = [*TASK, "method", "compression", "budget", *COMPRESSION_META, "budget_rank",
            "n_seeds", "mean", "lo", "hi", "sd"]
    sub = df[df[metric].notna()] if not df.empty else df
    if sub.empty:
        return _empty(cols)
    out = _summarize(sub, [*TASK, "method", "compression", "budget"], metric, PERCENT)
    return _sort(out[cols], df)


ACCURACY = TaskFigure(
    "accuracy", "Accuracy vs data budget",
    "Test accuracy (%) against the data budget (examples per class; 'full' = the whole "
    "training split), one panel per transfer method and one line per compression point; "
    "{seeds}.", fg.plot_accuracy_vs_budget)


def _fill_budget(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = accuracy_vs_budget(b.df)
    b.save_table("accuracy_vs_budget", t)
    for task in tasks:
        b.task_figure(s, ACCURACY, task, t)


SECTION = SectionSpec(
    "accuracy", "Accuracy vs data budget",
    "Test accuracy against the number of training examples per class, for every "
    "transfer method and compression point.", _fill_budget)
