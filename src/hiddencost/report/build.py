"""Build the report: run every analysis, draw every figure, write ``index.html``.

Layout of the output folder::

    index.html                 the page (figures embedded; opens from disk)
    figures/NN-<name>.{png,svg,csv}   each figure and the table behind it
    tables/<analysis>.csv      each analysis over all tasks, methods and budgets

A figure whose inputs are absent is replaced by a note saying why. A section whose analysis
fails, or a figure that cannot be drawn, shows its error on the page, and the rest of the report
is still written; :func:`build_report` then raises :class:`ReportError` naming every failed
section, so ``hiddencost report`` exits non-zero instead of passing off a broken page.

The sections are data (:data:`SECTIONS`: anchor, title, intro and the function that fills it),
and so are the figures drawn once per task (:class:`TaskFigure`: file name, title, caption
template and drawing function).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import hiddencost.report.analyses as an
import hiddencost.report.figures as fg
import hiddencost.report.findings as fd
import hiddencost.report.table as tb
from hiddencost.errors import HiddenCostError
from hiddencost.report.html import FigureItem, Note, Section, TableItem, render_page
from hiddencost.report.order import budget_order, compression_order
from hiddencost.report.stats import ALPHA
from hiddencost.report.table import (
    is_store_source,
    iter_tasks,
    load_table,
    missing_results_warning,
)
from hiddencost.study.catalog import load_spec
from hiddencost.study.fidelity import read_fidelity
from hiddencost.study.layout import StudyPaths
from hiddencost.study.spec import StudySpec
from hiddencost.study.store import StoreLocation

#: A (backbone, dataset) pair.
Task = tuple[str, str]
Draw = Callable[[pd.DataFrame, str], Any]


class ReportError(HiddenCostError):
    """Sections of a report failed. The page was written all the same, each failed section
    showing its error; ``index`` is the page and ``failures`` holds (section, message) pairs."""

    def __init__(self, index: Path, failures: list[tuple[str, str]]) -> None:
        self.index = index
        self.failures = list(failures)
        sections = list(dict.fromkeys(title for title, _ in failures))
        super().__init__(
            f"the report was written to {index}, but {len(sections)} of its sections failed "
            f"({'; '.join(sections)}): " + " ".join(msg for _, msg in failures)
            + " Each error is also shown in its section of the page.")


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
    failures (section title, message) for :class:`ReportError`."""

    def __init__(self, df: pd.DataFrame, out: Path,
                 fidelity: list[dict[str, Any]] | None = None) -> None:
        self.df, self.out = df, out
        self.fidelity = fidelity or []
        self.figdir, self.tabdir = out / "figures", out / "tables"
        self.count = 0
        self.seeds = an.max_seeds(df)
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


# --------------------------------------------------------------------------------------------
# the figures drawn per task
# --------------------------------------------------------------------------------------------


def _metric_plot(ylabel: str) -> Draw:
    def draw(table: pd.DataFrame, title: str) -> Any:
        return fg.plot_metric_vs_compression(table, title, ylabel)

    return draw


ACCURACY = TaskFigure(
    "accuracy", "Accuracy vs data budget",
    "Test accuracy (%) against the data budget (examples per class; 'full' = the whole "
    "training split), one panel per transfer method and one line per compression point; "
    "{seeds}.", fg.plot_accuracy_vs_budget)
DELTA = TaskFigure(
    "delta", "Δ accuracy heatmaps",
    "Δ = dense − compressed test accuracy (percentage points), mean over seeds, per "
    "compression level (rows) and data budget (columns), one panel per transfer method; red = "
    "compression costs accuracy, blue = compression helps, on a colour scale centred on 0. "
    "{test}", fg.plot_delta_heatmap)
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
CONFIDENCE = TaskFigure(
    "confidence-correct", "Confidence when correct",
    "Mean softmax probability of the true class over correctly classified test samples "
    "against the compression level, one line per data budget; {seeds}.",
    _metric_plot("true-class confidence (probability)"))
KL = TaskFigure(
    "kl-incorrect", "KL to uniform when wrong",
    "Mean KL(p ‖ uniform) in nats over misclassified test samples against the compression "
    "level (0 = maximally unsure, log K = one-hot), one line per data budget; {seeds}. This "
    "is our convention; the paper's Figures 11 and 13 plot the reverse divergence, shown next.",
    _metric_plot("KL(p ‖ u) (nats)"))
KL_PAPER = TaskFigure(
    "kl-incorrect-paper", "KL to uniform when wrong, the paper's convention",
    "The value the paper's Figures 11 and 13 plot: its code's F.kl_div(log p, u), i.e. "
    "KL(u ‖ p)/K averaged over misclassified test samples (0 = uniform, unbounded as a class's "
    "probability goes to 0), against the compression level, one line per data budget; {seeds}.",
    _metric_plot("KL(u ‖ p) / K (nats)"))
MAPPING = TaskFigure(
    "mapping", "Label mappings",
    "For each target class (rows), the source class it is mapped to by the dense model and "
    "by each compressed model (columns), one table per method at the largest budget and first "
    "seed; colour = closeness to the dense model's source.", fg.plot_label_mapping)
CLASSES = TaskFigure(
    "classes", "Class-wise changes",
    "Δ per-class test accuracy (compressed − dense, percentage points) of the classes with "
    "the largest drops (red, up to 5) and gains (green, up to 5), one row per transfer method "
    "and one column per compressed model, at the largest budget; {mean}{all_budgets}.",
    fg.plot_class_gains_drops)
PROMPT_DISTANCE = TaskFigure(
    "prompt-distance", "Prompt distance to dense",
    "L2 norm of the difference between the dense and the compressed model's prompt "
    "parameters δ (3 × canvas × canvas values, same seed) per epoch, one panel per VP method, "
    "one line per compressed model and data budget; {final}{seeds}.", fg.plot_prompt_distance)
PROMPT_IMAGES = TaskFigure(
    "prompt-images", "Learned prompts",
    "The prompt each model adds to the border of the canvas, sigmoid(δ) as RGB (grey = the "
    "initial value 0.5; the white square is where the image goes; contrast around 0.5 "
    "stretched by the factor in the legend, the same for every panel), at a few epochs, for "
    "the dense model and each family's most compressed model, at the largest budget and first "
    "seed.", fg.plot_prompt_images)
LOSS = TaskFigure(
    "loss", "Training loss",
    "Mean training cross-entropy per epoch for the dense and the compressed models, one "
    "column per transfer method, rows for the smallest and the largest data budget; {seeds}.",
    fg.plot_loss)
FIDELITY = TaskFigure(
    "fidelity", "Upstream fidelity vs transfer cost",
    "x: top-1 agreement with the dense backbone (left) and mean KL(p_dense ‖ p_compressed) in "
    "nats (right), on the first {images} test images of {dataset} at the backbone's input "
    "size; y: the mean accuracy drop (dense − compressed, pp) over the data budgets, one point "
    "per compression (colour) and transfer method (marker). {correlation}",
    fg.plot_fidelity_vs_cost)


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def _fill_budget(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.accuracy_vs_budget(b.df)
    b.save_table("accuracy_vs_budget", t)
    for task in tasks:
        b.task_figure(s, ACCURACY, task, t)


def _delta_test_text(one_seed: bool) -> str:
    if one_seed:
        return ("With one seed per cell no test is possible (Welch's t-test needs at least 2 "
                "seeds on each side), so no cell is marked.")
    return (f"Cells hatched and marked 'n.s.' are not significant: a two-sided Welch t-test of "
            f"dense vs compressed accuracy across seeds gives p ≥ {ALPHA:g} (no correction for "
            f"the many cells tested); cells with fewer than 2 seeds on a side are not tested or "
            f"marked.")


def _fill_delta(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.delta_heatmap(b.df)
    b.save_table("delta_accuracy", t)
    if t.empty:
        s.items.append(Note("Δ heatmaps: skipped, the study needs dense and compressed runs of "
                            "the same backbone, dataset, method and budget."))
        return
    for task in tasks:
        b.task_figure(s, DELTA, task, t, test=_delta_test_text(b.one_seed))


def _fill_calibration(b: _Builder, s: Section, tasks: list[Task]) -> None:
    ece, rel = an.ece_vs_compression(b.df), an.reliability_table(b.df)
    b.save_tables(ece_vs_compression=ece, reliability=rel)
    for task in tasks:
        b.task_figure(s, ECE, task, ece)
        b.task_figure(s, RELIABILITY, task, rel)


def _fill_confidence(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.confidence_vs_compression(b.df)
    b.save_table("confidence_vs_compression", t)
    correct = t[t["metric"] == "mean_confidence_correct"]
    wrong = t[t["metric"] == "kl_to_uniform_incorrect"]
    wrong_paper = t[t["metric"] == "paper_kl_uniform_incorrect"]
    for task in tasks:
        b.task_figure(s, CONFIDENCE, task, correct)
        b.task_figure(s, KL, task, wrong)
        b.task_figure(s, KL_PAPER, task, wrong_paper)


_CLOSE_CLASS = {"same class": "same", "same group": "group", "same kind": "kind",
                "unrelated": "unrelated", "not judged": "unjudged"}


def _mapping_cell(m: pd.DataFrame) -> tuple[str, str]:
    """(text, CSS class) of one model's mapping of one target; empty when it has none."""
    if m.empty:
        return "", ""
    r = m.iloc[0]
    text = f"{r['source_name']} (#{r['source']})"
    if not r["same_as_dense"]:
        text += f" — {r['closeness']}"
    cls = next((v for k, v in _CLOSE_CLASS.items() if str(r["closeness"]).startswith(k)), "")
    return text, cls


def _mapping_html(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mapping table of one method (rows = targets, columns = models) and its cells'
    CSS classes (closeness colours)."""
    comps = list(dict.fromkeys(t["compression"]))
    names = dict(zip(t["compression"], t["compression_name"], strict=True))
    rows, classes = [], []
    for _target, g in t.groupby("target", sort=False):
        row = {"target class": g["target_name"].iloc[0]}
        cls = {"target class": ""}
        for comp in comps:
            row[names[comp]], cls[names[comp]] = _mapping_cell(g[g["compression"] == comp])
        rows.append(row)
        classes.append(cls)
    return pd.DataFrame(rows), pd.DataFrame(classes)


def _mapping_tables(b: _Builder, s: Section, task: Task, tt: pd.DataFrame) -> None:
    """One HTML table per method of ``task`` with how many targets each model remapped."""
    for method, g in tt.groupby("method", sort=False):
        changed = []
        for _comp, gc in g[~g["family"].eq("dense")].groupby("compression", sort=False):
            n = int((~gc["same_as_dense"]).sum())
            changed.append(f"{gc['compression_name'].iloc[0]}: {n}/{len(gc)} remapped")
        table, classes = _mapping_html(g)
        csv = b.save_table(f"label_mapping-{_slug(task[0])}-{_slug(task[1])}-{method}", g)
        s.items.append(TableItem(
            f"{b.label(method)} on {task[1]} (budget {g['budget'].iloc[0]}, seed "
            f"{g['seed'].iloc[0]})",
            "Target class → source class (ImageNet index) per model; where a compressed model "
            "differs from dense, the closeness of the two sources. "
            + ("; ".join(changed) + "." if changed else ""),
            table, csv, classes))


def _fill_mapping(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.label_mapping_table(b.df)
    b.save_table("label_mapping", t)
    if t.empty:
        s.items.append(Note("Label mappings: skipped, no dense and compressed runs with a "
                            "one-to-one label mapping (RLM, FLM or ILM) at a common budget and "
                            "seed."))
        return
    for task in tasks:
        b.task_figure(s, MAPPING, task, t)
        _mapping_tables(b, s, task, _of(t, task))


def _largest_budget_rows(t: pd.DataFrame) -> pd.DataFrame:
    return t if t.empty else t[t["budget"] == t.loc[t["budget_rank"].idxmax(), "budget"]]


def _fill_classes(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.class_gains_drops(b.df)
    path = b.save_table("class_gains_drops", t)
    if t.empty:
        s.items.append(Note("Class-wise changes: skipped, no dense and compressed runs with "
                            "per-class accuracy in a common cell (or no class changed)."))
        return
    for task in tasks:
        b.task_figure(s, CLASSES, task, _largest_budget_rows(_of(t, task)),
                      mean="one seed" if b.one_seed else "means over seeds",
                      all_budgets=f"; all budgets in {path.name}" if path else "")


def _prompt_notes(b: _Builder, s: Section, dist: pd.DataFrame) -> None:
    vp = b.df[b.df["learns_prompt"]] if not b.df.empty else b.df
    if not vp.empty and vp["prompt_history"].isna().all():
        s.items.append(Note(
            "No run kept its per-epoch prompts (set save_prompt_history: true in the study's "
            "params): prompt distances and images use the final prompts only.", "info"))
    if dist.empty:
        s.items.append(Note("Prompt distances: skipped, no pair of dense and compressed VP runs "
                            "with saved prompts (weights.safetensors) for the same cell and "
                            "seed."))


def _fill_prompts(b: _Builder, s: Section, tasks: list[Task]) -> None:
    dist, snaps = an.prompt_distance(b.df), an.prompt_snapshots(b.df)
    loss = an.loss_trajectories(b.df)
    b.save_tables(prompt_distance=dist, prompt_snapshots=snaps, loss_trajectories=loss)
    _prompt_notes(b, s, dist)
    for task in tasks:
        if not dist.empty:
            d = _of(dist, task)
            final = not d.empty and (d["source"] == "final").all()
            b.task_figure(s, PROMPT_DISTANCE, task, d,
                          final="final epoch only (no prompt history); " if final else "")
        if not snaps.empty:
            b.task_figure(s, PROMPT_IMAGES, task, snaps)
        b.task_figure(s, LOSS, task, loss)


def _fidelity_skipped(b: _Builder) -> Note:
    if not b.fidelity:
        return Note("Fidelity: not recorded for this study. `hiddencost study run` measures it "
                    "after the runs (fidelity.json in the study's folder; --no-fidelity turns "
                    "it off).")
    return Note("Fidelity: none of the recorded entries matches a compressed point of the "
                "table.")


def _correlation_text(b: _Builder, rho: pd.DataFrame) -> str:
    """The caption's sentence on Spearman's ρ per method (defined ones only)."""
    corr = "; ".join(f"{b.label(x.method)} {_fmt(x.rho_agreement, 2)} / "
                     f"{_fmt(x.rho_kl, 2)}" for x in rho.itertuples(index=False)
                     if x.rho_agreement == x.rho_agreement or x.rho_kl == x.rho_kl)
    if not corr:
        return "No rank correlation: it needs 3 compressed points with different fidelity."
    return (f"Spearman ρ of the drop with agreement / with KL per method (– = undefined, "
            f"agreement constant): {corr}.")


def _fidelity_item(b: _Builder, task: Task, fid: pd.DataFrame, cost: pd.DataFrame
                   ) -> TableItem:
    """The table of ``task``'s fidelity with each method's mean accuracy drop beside it."""
    ft = _of(fid, task)
    shown = pd.DataFrame({
        "compression": ft["compression_name"],
        "images": [_fmt(x, 0) for x in ft["n_images"]],
        "top-1 agreement (%)": [_fmt(x) for x in ft["top1_agreement"]],
        "top-5 agreement (%)": [_fmt(x) for x in ft["top5_agreement"]],
        "mean KL (nats)": [_fmt(x, 3) for x in ft["mean_kl"]],
    })
    for method, g in cost.groupby("method", sort=False):
        drop = dict(zip(g["compression"], g["acc_drop_mean"], strict=True))
        shown[f"{b.label(method)} drop (pp)"] = [_fmt(drop.get(c)) for c in ft["compression"]]
    return TableItem(f"Fidelity and mean accuracy drop: {_task_title(task)}",
                     "Drop = dense − compressed accuracy, mean over data budgets of the seed "
                     "means; – where not measured.", shown, b.tabdir / "fidelity.csv")


def _fill_fidelity(b: _Builder, s: Section, tasks: list[Task]) -> None:
    fid = an.fidelity_table(b.df, b.fidelity)
    b.save_table("fidelity", fid)
    if fid.empty:
        s.items.append(_fidelity_skipped(b))
        return
    for r in fid[fid["error"].notna()].itertuples(index=False):
        s.items.append(Note(f"Fidelity of {r.compression_name} on {r.dataset} was not "
                            f"measured: {r.error}"))
    cost = an.fidelity_vs_cost(b.df, b.fidelity)
    rho = an.fidelity_rank_correlation(cost)
    b.save_tables(fidelity_vs_cost=cost, fidelity_rank_correlation=rho)
    images = "/".join(str(n) for n in sorted({int(n) for n in fid["n_images"] if n == n})) or "?"
    for task in tasks:
        t = _of(cost, task)
        b.task_figure(s, FIDELITY, task, t, images=images, dataset=task[1],
                      correlation=_correlation_text(b, _of(rho, task)))
        s.items.append(_fidelity_item(b, task, fid, t))


def _summary_shown(b: _Builder, t: pd.DataFrame) -> pd.DataFrame:
    """The summary table as shown on the page (formatted, intervals in brackets)."""
    return pd.DataFrame({
        "method": [b.label(m) for m in t["method"]],
        "compression": t["compression_name"],
        "cells": t["n_cells"],
        "datasets": t["n_datasets"],
        "budgets": t["n_budgets"],
        "dense accuracy (%)": [_fmt(x) for x in t["dense_accuracy_mean"]],
        "accuracy drop (pp) [95% CI]": [_interval(m, lo, hi) for m, lo, hi in zip(
            t["acc_drop_mean"], t["acc_drop_lo"], t["acc_drop_hi"], strict=True)],
        "ECE change (pp) [95% CI]": [_interval(m, lo, hi) for m, lo, hi in zip(
            t["ece_change_mean"], t["ece_change_lo"], t["ece_change_hi"], strict=True)],
    })


def _fill_summary(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.summary_table(b.df)
    path = b.save_table("summary", t)
    if t.empty:
        s.items.append(Note("Summary: skipped, no dense and compressed runs to compare."))
        return
    b.figure(s, "summary", "Mean cost of compression",
             "Mean accuracy drop (dense − compressed, left) and ECE change (compressed − dense, "
             "right), in percentage points, over all (dataset, budget) cells, one bar per "
             "transfer method; error bars are 95% t-intervals over those cells (they describe "
             "the spread across datasets and budgets, not seed noise; none with one cell; cut "
             "at the axis when far wider than the bars, the table has them in full).",
             t, fg.plot_summary)
    s.items.append(TableItem("Mean accuracy drop and ECE change per compression",
                             "Each (dataset, budget) cell contributes the difference of its "
                             "seed means; intervals are 95% t-intervals over cells.",
                             _summary_shown(b, t), path))


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


def _fill_crossmodal(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = an.crossmodal_table(b.df)
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
    t = an.clip_table(b.df)
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


_VERDICT_CLASS = {"supported": "supported", "contradicted": "contradicted", "mixed": "mixed",
                  "not testable": "untestable"}


def finding_lines(found: list[fd.Finding]) -> list[str]:
    """The findings as plain text, one line per claim."""
    return [f"{f.number}. {f.verdict}: {f.claim}. {f.statistic}." for f in found]


def findings_text(lines: list[str]) -> str:
    """The block ``hiddencost report`` and the quickstart print: a heading and the lines."""
    return "\n".join(["findings (the paper's claims on this study):", *(f"  {x}" for x in lines)])


def _fill_findings(b: _Builder, s: Section, tasks: list[Task]) -> None:
    found = fd.findings(b.df)
    b.findings = found
    path = b.save_table("findings", fd.findings_table(found))
    for f in found:
        b.save_table(f"findings_{f.number}", f.cells)
    titles = {spec.anchor: spec.title for spec in SECTIONS}
    shown = pd.DataFrame({
        "claim": [f"{f.number}. {f.claim}" for f in found],
        "verdict": [f.verdict for f in found],
        "statistic": [f.statistic for f in found],
        "figures": [", ".join(titles[a] for a in f.sections) for f in found]})
    links = pd.DataFrame({"claim": None, "verdict": None, "statistic": None,
                          "figures": [[(titles[a], f"#{a}") for a in f.sections]
                                      for f in found]})
    classes = pd.DataFrame({"claim": "", "verdict": [_VERDICT_CLASS[f.verdict] for f in found],
                            "statistic": "", "figures": ""})
    s.items.append(TableItem(
        "Does this study support the paper's claims?",
        "Cell tests: Welch's t-test across seeds per cell (the Δ heatmaps' test), Holm-adjusted "
        "over the cells of each claim, α = 0.05, beside a two-sided sign test over the cells; "
        "the budget trend: Spearman's ρ pooled over cells. A directional claim is supported "
        "when no cell is significant against it and a cell, or the sign test, is significant "
        "its way; a claim of no harm when no cell is significantly worse and the sign test "
        "does not say worse (absence of evidence, not proof of absence). Cells need two or "
        "more seeds on each side to be tested; a claim with no tested cell is not testable "
        "(its statistic is descriptive). Each claim's cells, with their p and Holm-adjusted p, "
        "are in tables/findings_<number>.csv.",
        shown, path, cell_classes=classes, cell_links=links))


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


SECTIONS: tuple[SectionSpec, ...] = (
    SectionSpec("findings", "Findings: the paper's claims, tested on this study",
                "For each claim of the paper and its supplement, whether this study's runs "
                "support it, with the statistic behind the verdict and the sections whose "
                "figures show it.", _fill_findings),
    SectionSpec("accuracy", "Accuracy vs data budget",
                "Test accuracy against the number of training examples per class, for every "
                "transfer method and compression point.", _fill_budget),
    SectionSpec("delta", "Δ heatmaps: dense − compressed accuracy",
                "The cost of compression per cell of compression level × data budget, with a "
                "significance test across seeds that the paper did not have.", _fill_delta),
    SectionSpec("calibration", "Calibration",
                "Expected calibration error (top-label, 15 equal-width bins, softmax over the "
                "mapped logits) against the compression level, and reliability diagrams of the "
                "dense and the most compressed models.", _fill_calibration),
    SectionSpec("confidence", "Confidence analyses",
                "How sure the models are when right and when wrong (the paper's Figures "
                "10–13).", _fill_confidence),
    SectionSpec("mapping", "Label-mapping inspection",
                "Which source (ImageNet) class each target class is mapped to by the dense and "
                "by the compressed models (RLM/FLM/ILM; LP and FM-VP learn no one-to-one "
                "mapping). Closeness of a compressed model's source to the dense model's is "
                "judged from ImageNet-1k's class order, which groups classes by WordNet "
                "(dogs 151–268, cats 281–293, artifacts 398–923, …): same class, same group "
                "(e.g. two dog breeds), same kind (e.g. two animals), or unrelated. The groups "
                "are coarse: all 526 man-made objects form one 'artifact' group, so two "
                "artifacts count as the same group however different they are.", _fill_mapping),
    SectionSpec("classes", "Class-wise gains and drops",
                "The five target classes where each compressed model loses most, and the five "
                "where it gains most, against the dense model (per-class test accuracy, mean "
                "over seeds), at the largest data budget; every budget is in the CSV table.",
                _fill_classes),
    SectionSpec("prompts", "Prompt evolution",
                "How far each compressed model's learned prompt drifts from the dense model's "
                "during training, what the prompts look like, and the training-loss "
                "trajectories.", _fill_prompts),
    SectionSpec("fidelity", "Upstream fidelity vs transfer cost",
                "How closely each compressed backbone follows its dense original before any "
                "transfer (no labels needed: top-1 agreement and KL between their ImageNet "
                "predictions on the dataset's test images), set against what the compression "
                "costs after transfer.", _fill_fidelity),
    SectionSpec("crossmodal", "Cross-modal reprogramming (the paper's Tables 3–4)",
                "Frozen ImageNet models, dense and compressed, reprogrammed to classify text "
                "and DNA (Neekhara et al.'s cross-modal reprogramming): one row per task, one "
                "column per backbone and compression point, as the paper's Tables 3 and 4.",
                _fill_crossmodal, shown=lambda df: not an.sequence_runs(df).empty),
    SectionSpec("clip", "CLIP under structured compression (the paper's Table 2)",
                "Visual prompting of CLIP (frame prompt, text-template classes) on the dense "
                "and the compressed image + text towers: one row per dataset and method, one "
                "column per compression point, as the paper's Table 2.",
                _fill_clip, shown=lambda df: not an.clip_runs(df).empty),
    SectionSpec("summary", "Summary table",
                "Like the paper's Table 1: per compressed model and transfer method, the mean "
                "accuracy drop and ECE change against dense over every dataset and budget.",
                _fill_summary),
)


def _build_section(b: _Builder, spec: SectionSpec, tasks: list[Task]) -> Section:
    """One section; if its analysis fails, the section shows the error (after whatever it had
    added) and the failure is recorded."""
    s = Section(spec.anchor, spec.title, spec.intro)
    try:
        spec.fill(b, s, tasks)
    except Exception as exc:  # any analysis error: recorded, raised once the page is written
        b.fail(s, f"{spec.title}: could not be computed ({type(exc).__name__}: {exc}).")
    return s


def _page_notes(df: pd.DataFrame, b: _Builder) -> list[Note]:
    """Notes at the top of the page: no runs, one seed, no dense runs, varying settings."""
    notes: list[Note] = []
    if df.empty:
        notes.append(Note("The study has no finished runs yet: every section is empty."))
    elif b.one_seed:
        notes.append(Note(
            "This study has one seed per cell: no intervals are shown and no significance test "
            "is possible. Run more seeds (e.g. seed: [0, 1, 2]) to get both.", "info"))
    if not df.empty and not df["is_dense"].any():
        notes.append(Note("No dense runs: every comparison against dense is skipped."))
    missing = missing_results_warning(df)
    if missing:
        notes.append(Note(missing[0].upper() + missing[1:] + "."))
    varying = df.attrs.get("varying_settings") or []
    if varying:
        notes.append(Note("Runs differ in " + ", ".join(varying) + ": the backbone names "
                          "carry these settings so that only like runs are compared.", "info"))
    return notes


def build_sections(df: pd.DataFrame, out: Path, fidelity: list[dict[str, Any]] | None = None
                   ) -> tuple[list[Section], list[Note], _Builder]:
    """Every section of the report (files written under ``out``), page-level notes, and the
    builder (whose ``failures`` lists the failed sections, if any). ``fidelity``: the study's
    fidelity entries (:func:`hiddencost.study.fidelity.read_fidelity`)."""
    b = _Builder(df, out, fidelity)
    tasks = list(iter_tasks(df)) if not df.empty else []
    sections = [_build_section(b, spec, tasks) for spec in SECTIONS
                if spec.shown is None or spec.shown(df)]
    notes = _page_notes(df, b)
    if b.failures:
        failed = ", ".join(dict.fromkeys(title for title, _ in b.failures))
        notes.insert(0, Note(f"Some of this report failed: {failed}. Each failed section shows "
                             "its error below; the rest is complete.", "error"))
    return sections, notes, b


def _meta(df: pd.DataFrame, source: str) -> list[tuple[str, str]]:
    if df.empty:
        return [("source", source), ("runs", "0 done")]
    names = dict(zip(df["compression"], df["compression_name"], strict=True))
    return [
        ("source", source),
        ("runs", f"{len(df)} done"),
        ("backbones", ", ".join(dict.fromkeys(df["backbone"]))),
        ("datasets", ", ".join(dict.fromkeys(df["dataset"]))),
        ("methods", ", ".join(label for label, _ in tb.method_styles(df).values())),
        ("compression", ", ".join(names[c] for c in compression_order(df))),
        ("data budgets", ", ".join(budget_order(df)) + " (examples per class)"),
        ("seeds", ", ".join(str(s) for s in sorted(set(df["seed"])))),
        ("generated", time.strftime("%Y-%m-%d %H:%M")),
    ]


def _clear_previous(out: Path) -> None:
    """Remove the files an earlier report wrote into ``out`` (and only those)."""
    for pattern, folder in (("[0-9][0-9]-*.png", "figures"), ("[0-9][0-9]-*.svg", "figures"),
                            ("[0-9][0-9]-*.csv", "figures"), ("*.csv", "tables")):
        for f in (out / folder).glob(pattern):
            f.unlink(missing_ok=True)


def results_root(source: Any, results: str | Path | None = None,
                 store: str | Path | None = None) -> Path | None:
    """The output folder of a report source (where ``fidelity.json`` lives): the study's
    folder for a spec, YAML file or preset, the store's folder for a SQLite file, else None."""
    if isinstance(source, StudySpec):
        return StudyPaths.resolve(source, results, store).root
    if not isinstance(source, str | Path):
        return None
    text = str(source)
    if is_store_source(text):
        path = StoreLocation.parse(text).path
        return None if path is None else path.parent
    return StudyPaths.resolve(load_spec(text), results, store).root


def _parsed(source: Any) -> Any:
    """``source`` with a study file or preset name parsed (once, for the table and fidelity)."""
    if isinstance(source, str | Path) and not is_store_source(str(source)):
        return load_spec(str(source))
    return source


def _page_title(loaded: Any, df: pd.DataFrame, title: str | None) -> tuple[str, str | None]:
    """(page title, study name or None)."""
    name = loaded.name if isinstance(loaded, StudySpec) else (
        str(df["study"].dropna().iloc[0]) if not df.empty and df["study"].notna().any()
        else None)
    return title or f"hiddencost report{': ' + name if name else ''}", name


def build_report(source: Any, out: str | Path, *, results: str | Path | None = None,
                 store: str | Path | None = None, title: str | None = None,
                 embed: bool = True, label: str | None = None,
                 fidelity: list[dict[str, Any]] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 on_findings: Callable[[list[str]], None] | None = None) -> Path:
    """Write the report of ``source`` into ``out`` and return the path of ``index.html``.

    ``source`` is a study spec (with its results folder ``results``, default
    ``hiddencost-results/<name>``, and optional ``store``), a study YAML file or preset name,
    a results store file (``.sqlite``), a list of result records, or a table from
    :func:`hiddencost.report.table.load_table`. ``title`` and ``label`` (the source line of the
    page's header) default to the study's name and the source; ``embed=False`` references the
    PNG files instead of embedding them. ``fidelity`` (entries of
    :mod:`hiddencost.study.fidelity`) defaults to the ``fidelity.json`` of the source's folder
    (:func:`results_root`), if there is one. ``on_warning`` receives each page-level warning
    (e.g. done runs whose ``result.json`` is gone) as one line; ``on_findings`` the findings
    as plain-text lines (:func:`finding_lines`).

    Raises :class:`ReportError` after writing the page when a section failed.
    """
    loaded = _parsed(source)
    df = load_table(loaded, results=results, store=store)
    missing = missing_results_warning(df)
    if missing and on_warning is not None:
        on_warning(missing)
    if fidelity is None:
        root = results_root(loaded, results, store)
        fidelity = read_fidelity(root) if root is not None else []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    sections, notes, builder = build_sections(df, out, fidelity)
    page_title, name = _page_title(loaded, df, title)
    label = label or (str(source) if isinstance(source, str | Path) else (
        f"study {name}" if name else f"{len(df)} result records"))
    index = out / "index.html"
    index.write_text(render_page(page_title, _meta(df, label), notes, sections, out,
                                 embed=embed), encoding="utf-8")
    if on_findings is not None and builder.findings:
        on_findings(finding_lines(builder.findings))
    if builder.failures:
        raise ReportError(index, builder.failures)
    return index
