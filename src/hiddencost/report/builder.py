"""The parts of the page every section uses: :class:`_Builder` (draws figures and saves
tables under the report folder), :class:`SectionSpec` (a section), :class:`TaskFigure` (a figure
drawn once per task), and the formatting of numbers and table cells."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import hiddencost.report.figures as fg
import hiddencost.report.findings as fd
import hiddencost.report.table as tb
from hiddencost.report.common import max_seeds
from hiddencost.report.html import FigureItem, Note, Section

#: A (backbone, dataset) pair.
Task = tuple[str, str]
Draw = Callable[[pd.DataFrame, str], Any]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:60] or "x"


def _fmt(x: Any, digits: int = 1) -> str:
    try:
        f = float(x)
    except (TypeError, ValueError):
        return "" if x is None else str(x)
    return "–" if not math.isfinite(f) else f"{f:.{digits}f}"


def _interval(mean: Any, lo: Any, hi: Any, digits: int = 1) -> str:
    if lo is None or hi is None or not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
        return f"{_fmt(mean, digits)} (no interval)"
    return f"{_fmt(mean, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]"


def _task_title(task: Task) -> str:
    return f"{task[0]} → {task[1]}"


def _of(table: pd.DataFrame, task: Task) -> pd.DataFrame:
    if table.empty:
        return table
    return table[(table["backbone"] == task[0]) & (table["dataset"] == task[1])]


@dataclass(frozen=True)
class TaskFigure:
    """A figure drawn once per task: files ``NN-<slug>-<backbone>-<dataset>.*``, title
    ``<title>: <backbone> → <dataset>``, and a caption template whose ``{seeds}`` is the
    builder's seed phrase (other fields are given where the figure is drawn)."""

    slug: str
    title: str
    caption: str
    draw: Draw


class _Builder:
    """Collects figures and notes into sections while writing files under ``out``; keeps the
    failures (section title, message) for :class:`~hiddencost.report.build.ReportError`.
    ``titles``: every section's title by anchor, for the findings' links to sections."""

    def __init__(self, df: pd.DataFrame, out: Path,
                 fidelity: list[dict[str, Any]] | None = None,
                 titles: dict[str, str] | None = None, thumbnails: bool = True) -> None:
        self.df, self.out = df, out
        self.thumbnails = thumbnails  # read test images for the PIE thumbnails (loads torch)
        self.fidelity = fidelity or []
        self.titles = titles or {}
        self.figdir, self.tabdir = out / "figures", out / "tables"
        self.count = 0
        self.seeds = max_seeds(df)
        self.one_seed = self.seeds < 2
        self.failures: list[tuple[str, str]] = []
        self.findings: list[fd.Finding] = []
        self.methods = tb.method_styles(df)  # how each method is shown (names, markers)

    def label(self, method: str) -> str:
        """How ``method`` is shown (its runs' display name; ``all`` stays "all methods")."""
        return "all methods" if method == "all" else self.methods.get(method, (method, ""))[0]

    def seed_phrase(self) -> str:
        if self.one_seed:
            return "one seed, so no interval is shown"
        return f"means over up to {self.seeds} seeds with shaded 95% t-intervals"

    def fail(self, section: Section, message: str) -> None:
        """Show ``message`` in ``section`` and keep it for the error raised after the page."""
        section.items.append(Note(message, "error"))
        self.failures.append((section.title, message))

    def figure(self, section: Section, name: str, title: str, caption: str,
               table: pd.DataFrame, draw: Draw) -> None:
        """Draw, save and add one figure; a failure is shown in the section and recorded."""
        if table.empty:
            section.items.append(Note(f"{title}: skipped, no input for it."))
            return
        self.count += 1
        fname = f"{self.count:02d}-{_slug(name)}"
        table = table.copy(deep=False)
        table.attrs["methods"] = self.methods
        try:
            fig = draw(table, title)
            saved = fg.save_figure(fig, table, self.figdir, fname)
        except Exception as exc:  # any drawing error: recorded, raised once the page is written
            self.fail(section, f"{title}: could not be drawn ({type(exc).__name__}: {exc}).")
            return
        section.items.append(FigureItem(title, caption, saved.png, saved.svg, saved.csv))

    def task_figure(self, section: Section, spec: TaskFigure, task: Task, table: pd.DataFrame,
                    **fields: Any) -> None:
        """:meth:`figure` of ``spec`` for ``task`` (``table`` is filtered to the task)."""
        self.figure(section, f"{spec.slug}-{task[0]}-{task[1]}",
                    f"{spec.title}: {_task_title(task)}",
                    spec.caption.format(seeds=self.seed_phrase(), **fields), _of(table, task),
                    spec.draw)

    def save_table(self, name: str, table: pd.DataFrame) -> Path | None:
        if table.empty:
            return None
        self.tabdir.mkdir(parents=True, exist_ok=True)
        path = self.tabdir / f"{name}.csv"
        fg.csv_safe(table).to_csv(path, index=False)
        return path

    def save_tables(self, **tables: pd.DataFrame) -> None:
        for name, table in tables.items():
            self.save_table(name, table)


@dataclass(frozen=True)
class SectionSpec:
    """A section of the page: its anchor, title and intro, and the function that fills it
    (``fill(builder, section, tasks)``, adding figures, tables and notes)."""

    anchor: str
    title: str
    intro: str
    fill: Callable[[_Builder, Section, list[Task]], None]
    #: Whether the section is on the page for a run table (None: always); a section for one
    #: kind of run (cross-modal) is left out of studies without it.
    shown: Callable[[pd.DataFrame], bool] | None = None


def _metric_plot(ylabel: str) -> Draw:
    def draw(table: pd.DataFrame, title: str) -> Any:
        return fg.plot_metric_vs_compression(table, title, ylabel)

    return draw


def _wide(t: pd.DataFrame, row: str, label: str) -> pd.DataFrame:
    """``t``'s ``cell`` values as a table: one row per ``row`` value, one column per
    ``column`` value, both in order of appearance; the row column is called ``label``."""
    wide = t.pivot_table(index=row, columns="column", values="cell", aggfunc="first",
                         sort=False)
    wide = wide.reindex(index=list(dict.fromkeys(t[row])),
                        columns=list(dict.fromkeys(t["column"]))).fillna("")
    return wide.reset_index().rename(columns={row: label})


def _budgets(t: pd.DataFrame) -> str:
    """``cifar10: full, dtd: 100``: the budget of each dataset of ``t``."""
    return ", ".join(f"{d}: {shot}" for d, shot in
                     dict.fromkeys(zip(t["dataset"], t["budget"], strict=True)))
