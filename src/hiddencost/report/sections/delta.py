"""The Δ heatmaps section: dense − compressed accuracy per compression level × data budget,
with Welch's test across seeds (its analysis, :func:`~hiddencost.report.common.delta_heatmap`,
is shared with other sections)."""

from __future__ import annotations

import hiddencost.report.figures as fg
from hiddencost.report.builder import SectionSpec, Task, TaskFigure, _Builder
from hiddencost.report.common import delta_heatmap
from hiddencost.report.html import Note, Section
from hiddencost.report.stats import ALPHA

DELTA = TaskFigure(
    "delta", "Δ accuracy heatmaps",
    "Δ = dense − compressed test accuracy (percentage points), mean over seeds, per "
    "compression level (rows) and data budget (columns), one panel per transfer method; red = "
    "compression costs accuracy, blue = compression helps, on a colour scale centred on 0. "
    "{test}", fg.plot_delta_heatmap)


def _delta_test_text(one_seed: bool) -> str:
    if one_seed:
        return ("With one seed per cell no test is possible (Welch's t-test needs at least 2 "
                "seeds on each side), so no cell is marked.")
    return (f"Cells hatched and marked 'n.s.' are not significant: a two-sided Welch t-test of "
            f"dense vs compressed accuracy across seeds gives p ≥ {ALPHA:g} (no correction for "
            f"the many cells tested); cells with fewer than 2 seeds on a side are not tested or "
            f"marked.")


def _fill_delta(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = delta_heatmap(b.df)
    b.save_table("delta_accuracy", t)
    if t.empty:
        s.items.append(Note("Δ heatmaps: skipped, the study needs dense and compressed runs of "
                            "the same backbone, dataset, method and budget."))
        return
    for task in tasks:
        b.task_figure(s, DELTA, task, t, test=_delta_test_text(b.one_seed))


SECTION = SectionSpec(
    "delta", "Δ heatmaps: dense − compressed accuracy",
    "The cost of compression per cell of compression level × data budget, with a "
    "significance test across seeds that the paper did not have.", _fill_delta)
