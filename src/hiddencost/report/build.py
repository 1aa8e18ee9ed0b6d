"""Build the report: run every analysis, draw every figure, write ``index.html``.

Layout of the output folder::

    index.html                 the page (figures embedded; opens from disk)
    figures/NN-<name>.{png,svg,csv}   each figure and the table behind it
    tables/<analysis>.csv      each analysis over all tasks, methods and budgets

A figure whose inputs are absent is replaced by a note saying why; an unexpected error while
drawing one figure becomes a note too (with the error), so one odd run cannot stop the report.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from hiddencost.report import analyses as an
from hiddencost.report import figures as fg
from hiddencost.report.html import FigureItem, Note, Section, TableItem, render_page
from hiddencost.report.stats import ALPHA
from hiddencost.report.table import iter_tasks, load_table


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


class _Builder:
    """Collects figures and notes into sections while writing files under ``out``."""

    def __init__(self, df: pd.DataFrame, out: Path,
                 fidelity: list[dict[str, Any]] | None = None) -> None:
        self.df, self.out = df, out
        self.fidelity = fidelity or []
        self.figdir, self.tabdir = out / "figures", out / "tables"
        self.count = 0
        self.seeds = an.max_seeds(df)
        self.one_seed = self.seeds < 2
        self.errors: list[str] = []

    def seed_phrase(self) -> str:
        if self.one_seed:
            return "one seed, so no interval is shown"
        return f"means over up to {self.seeds} seeds with shaded 95% t-intervals"

    def figure(self, section: Section, name: str, title: str, caption: str,
               table: pd.DataFrame, draw: Callable[[pd.DataFrame, str], Any]) -> None:
        """Draw, save and add one figure; a failure becomes a note on the page."""
        if table.empty:
            section.items.append(Note(f"{title}: skipped, no input for it."))
            return
        self.count += 1
        fname = f"{self.count:02d}-{_slug(name)}"
        try:
            fig = draw(table, title)
            saved = fg.save_figure(fig, table, self.figdir, fname)
        except Exception as exc:  # one bad figure must not stop the report
            msg = f"{title}: could not be drawn ({type(exc).__name__}: {exc})."
            self.errors.append(msg)
            section.items.append(Note(msg))
            return
        section.items.append(FigureItem(title, caption, saved.png, saved.svg, saved.csv))

    def save_table(self, name: str, table: pd.DataFrame) -> Path | None:
        if table.empty:
            return None
        self.tabdir.mkdir(parents=True, exist_ok=True)
        path = self.tabdir / f"{name}.csv"
        fg.csv_safe(table).to_csv(path, index=False)
        return path


def _task_title(task: tuple[str, str]) -> str:
    return f"{task[0]} → {task[1]}"


def _of(table: pd.DataFrame, task: tuple[str, str]) -> pd.DataFrame:
    if table.empty:
        return table
    return table[(table["backbone"] == task[0]) & (table["dataset"] == task[1])]


def _section_budget(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("accuracy", "Accuracy vs data budget",
                "Test accuracy against the number of training examples per class, for every "
                "transfer method and compression point.")
    t = an.accuracy_vs_budget(b.df)
    b.save_table("accuracy_vs_budget", t)
    for task in tasks:
        b.figure(s, f"accuracy-{task[0]}-{task[1]}", f"Accuracy vs data budget: "
                 f"{_task_title(task)}",
                 f"Test accuracy (%) against the data budget (examples per class; 'full' = the "
                 f"whole training split), one panel per transfer method and one line per "
                 f"compression point; {b.seed_phrase()}.", _of(t, task),
                 fg.plot_accuracy_vs_budget)
    return s


def _section_delta(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("delta", "Δ heatmaps: dense − compressed accuracy",
                "The cost of compression per cell of compression level × data budget, with a "
                "significance test across seeds that the paper did not have.")
    t = an.delta_heatmap(b.df)
    b.save_table("delta_accuracy", t)
    if t.empty:
        s.items.append(Note("Δ heatmaps: skipped, the study needs dense and compressed runs of "
                            "the same backbone, dataset, method and budget."))
        return s
    if b.one_seed:
        test = ("With one seed per cell no test is possible (Welch's t-test needs at least 2 "
                "seeds on each side), so no cell is marked.")
    else:
        test = (f"Cells hatched and marked 'n.s.' are not significant: a two-sided Welch "
                f"t-test of dense vs compressed accuracy across seeds gives p ≥ {ALPHA:g} (no "
                f"correction for the many cells tested); cells with fewer than 2 seeds on a "
                f"side are not tested or marked.")
    for task in tasks:
        b.figure(s, f"delta-{task[0]}-{task[1]}", f"Δ accuracy heatmaps: {_task_title(task)}",
                 "Δ = dense − compressed test accuracy (percentage points), mean over seeds, "
                 "per compression level (rows) and data budget (columns), one panel per "
                 "transfer method; red = compression costs accuracy, blue = compression helps, "
                 f"on a colour scale centred on 0. {test}", _of(t, task), fg.plot_delta_heatmap)
    return s


def _section_calibration(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("calibration", "Calibration",
                "Expected calibration error (top-label, 15 equal-width bins, softmax over the "
                "mapped logits) against the compression level, and reliability diagrams of the "
                "dense and the most compressed models.")
    ece = an.ece_vs_compression(b.df)
    rel = an.reliability_table(b.df)
    b.save_table("ece_vs_compression", ece)
    b.save_table("reliability", rel)
    for task in tasks:
        b.figure(s, f"ece-{task[0]}-{task[1]}", f"ECE vs compression: {_task_title(task)}",
                 "ECE (%) against the compression level, dense first, one row per transfer "
                 "method and one column per compression family, one line per data budget; "
                 f"{b.seed_phrase()}.", _of(ece, task),
                 lambda t, title: fg.plot_metric_vs_compression(t, title, "ECE (%)"))
        b.figure(s, f"reliability-{task[0]}-{task[1]}",
                 f"Reliability diagrams: {_task_title(task)}",
                 "Per confidence bin, the fraction of correct predictions against the mean "
                 "confidence (top) and the number of test samples (bottom), for the dense model "
                 "and the most compressed model of each family, at the largest data budget, "
                 "seeds pooled; points below the diagonal are over-confident.",
                 _of(rel, task), fg.plot_reliability)
    return s


def _section_confidence(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("confidence", "Confidence analyses",
                "How sure the models are when right and when wrong (the paper's Figures "
                "10–13).")
    t = an.confidence_vs_compression(b.df)
    b.save_table("confidence_vs_compression", t)
    for task in tasks:
        tt = _of(t, task)
        b.figure(s, f"confidence-correct-{task[0]}-{task[1]}",
                 f"Confidence when correct: {_task_title(task)}",
                 "Mean softmax probability of the true class over correctly classified test "
                 "samples against the compression level, one line per data budget; "
                 f"{b.seed_phrase()}.",
                 tt[tt["metric"] == "mean_confidence_correct"] if not tt.empty else tt,
                 lambda x, title: fg.plot_metric_vs_compression(
                     x, title, "true-class confidence (probability)"))
        b.figure(s, f"kl-incorrect-{task[0]}-{task[1]}",
                 f"KL to uniform when wrong: {_task_title(task)}",
                 "Mean KL(p ‖ uniform) in nats over misclassified test samples against the "
                 "compression level (0 = maximally unsure, log K = one-hot), one line per data "
                 f"budget; {b.seed_phrase()}.",
                 tt[tt["metric"] == "kl_to_uniform_incorrect"] if not tt.empty else tt,
                 lambda x, title: fg.plot_metric_vs_compression(x, title, "KL(p ‖ u) (nats)"))
    return s


_CLOSE_CLASS = {"same class": "same", "same group": "group", "same kind": "kind",
                "unrelated": "unrelated", "not judged": "unjudged"}


def _mapping_html(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    comps = list(dict.fromkeys(t["compression"]))
    names = dict(zip(t["compression"], t["compression_name"], strict=True))
    rows, classes = [], []
    for _target, g in t.groupby("target", sort=False):
        row = {"target class": g["target_name"].iloc[0]}
        cls = {"target class": ""}
        for comp in comps:
            m = g[g["compression"] == comp]
            col = names[comp]
            if m.empty:
                row[col], cls[col] = "", ""
                continue
            r = m.iloc[0]
            text = f"{r['source_name']} (#{r['source']})"
            if not r["same_as_dense"]:
                text += f" — {r['closeness']}"
            row[col] = text
            cls[col] = next((v for k, v in _CLOSE_CLASS.items()
                             if str(r["closeness"]).startswith(k)), "")
        rows.append(row)
        classes.append(cls)
    return pd.DataFrame(rows), pd.DataFrame(classes)


def _section_mapping(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("mapping", "Label-mapping inspection",
                "Which source (ImageNet) class each target class is mapped to by the dense and "
                "by the compressed models (RLM/FLM/ILM; LP and FM-VP learn no one-to-one "
                "mapping). Closeness of a compressed model's source to the dense model's is "
                "judged from ImageNet-1k's class order, which groups classes by WordNet "
                "(dogs 151–268, cats 281–293, artifacts 398–923, …): same class, same group "
                "(e.g. two dog breeds), same kind (e.g. two animals), or unrelated. The groups "
                "are coarse: all 526 man-made objects form one 'artifact' group, so two "
                "artifacts count as the same group however different they are.")
    t = an.label_mapping_table(b.df)
    b.save_table("label_mapping", t)
    if t.empty:
        s.items.append(Note("Label mappings: skipped, no dense and compressed runs with a "
                            "one-to-one label mapping (RLM, FLM or ILM) at a common budget and "
                            "seed."))
        return s
    for task in tasks:
        tt = _of(t, task)
        b.figure(s, f"mapping-{task[0]}-{task[1]}", f"Label mappings: {_task_title(task)}",
                 "For each target class (rows), the source class it is mapped to by the dense "
                 "model and by each compressed model (columns), one table per method at the "
                 "largest budget and first seed; colour = closeness to the dense model's "
                 "source.", tt, fg.plot_label_mapping)
        for method, g in tt.groupby("method", sort=False):
            changed = []
            for _comp, gc in g[~g["family"].eq("dense")].groupby("compression", sort=False):
                n = int((~gc["same_as_dense"]).sum())
                changed.append(f"{gc['compression_name'].iloc[0]}: {n}/{len(gc)} remapped")
            table, classes = _mapping_html(g)
            csv = b.save_table(f"label_mapping-{_slug(task[0])}-{_slug(task[1])}-{method}", g)
            s.items.append(TableItem(
                f"{fg.method_name(method)} on {task[1]} (budget {g['budget'].iloc[0]}, seed "
                f"{g['seed'].iloc[0]})",
                "Target class → source class (ImageNet index) per model; where a compressed "
                "model differs from dense, the closeness of the two sources. "
                + ("; ".join(changed) + "." if changed else ""),
                table, csv, classes))
    return s


def _section_classes(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("classes", "Class-wise gains and drops",
                "The five target classes where each compressed model loses most, and the five "
                "where it gains most, against the dense model (per-class test accuracy, mean "
                "over seeds), at the largest data budget; every budget is in the CSV table.")
    t = an.class_gains_drops(b.df)
    path = b.save_table("class_gains_drops", t)
    if t.empty:
        s.items.append(Note("Class-wise changes: skipped, no dense and compressed runs with "
                            "per-class accuracy in a common cell (or no class changed)."))
        return s
    for task in tasks:
        tt = _of(t, task)
        if not tt.empty:
            tt = tt[tt["budget"] == tt.loc[tt["budget_rank"].idxmax(), "budget"]]
        b.figure(s, f"classes-{task[0]}-{task[1]}", f"Class-wise changes: {_task_title(task)}",
                 "Δ per-class test accuracy (compressed − dense, percentage points) of the "
                 "classes with the largest drops (red, up to 5) and gains (green, up to 5), one "
                 "row per transfer method and one column per compressed model, at the largest "
                 f"budget; {'one seed' if b.one_seed else 'means over seeds'}"
                 + (f"; all budgets in {path.name}" if path else "") + ".",
                 tt, fg.plot_class_gains_drops)
    return s


def _section_prompts(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("prompts", "Prompt evolution",
                "How far each compressed model's learned prompt drifts from the dense model's "
                "during training, what the prompts look like, and the training-loss "
                "trajectories.")
    dist = an.prompt_distance(b.df)
    snaps = an.prompt_snapshots(b.df)
    loss = an.loss_trajectories(b.df)
    b.save_table("prompt_distance", dist)
    b.save_table("prompt_snapshots", snaps)
    b.save_table("loss_trajectories", loss)
    vp = b.df[b.df["method"] != "lp"] if not b.df.empty else b.df
    if not vp.empty and vp["prompt_history"].isna().all():
        s.items.append(Note(
            "No run kept its per-epoch prompts (set save_prompt_history: true in the study's "
            "params): prompt distances and images use the final prompts only.", "info"))
    if dist.empty:
        s.items.append(Note("Prompt distances: skipped, no pair of dense and compressed VP runs "
                            "with saved prompts (weights.safetensors) for the same cell and "
                            "seed."))
    for task in tasks:
        if not dist.empty:
            d = _of(dist, task)
            final = not d.empty and (d["source"] == "final").all()
            b.figure(s, f"prompt-distance-{task[0]}-{task[1]}",
                     f"Prompt distance to dense: {_task_title(task)}",
                     "L2 norm of the difference between the dense and the compressed model's "
                     "prompt parameters δ (3 × canvas × canvas values, same seed) per epoch, "
                     "one panel per VP method, one line per compressed model and data budget; "
                     + ("final epoch only (no prompt history); " if final else "")
                     + f"{b.seed_phrase()}.", d, fg.plot_prompt_distance)
        if not snaps.empty:
            b.figure(s, f"prompt-images-{task[0]}-{task[1]}",
                     f"Learned prompts: {_task_title(task)}",
                     "The prompt each model adds to the border of the canvas, sigmoid(δ) as RGB "
                     "(grey = the initial value 0.5; the white square is where the image goes; "
                     "contrast around 0.5 stretched by the factor in the legend, the same for "
                     "every panel), at a few epochs, for the dense model and each family's most "
                     "compressed model, at the largest budget and first seed.", _of(snaps, task),
                     fg.plot_prompt_images)
        b.figure(s, f"loss-{task[0]}-{task[1]}", f"Training loss: {_task_title(task)}",
                 "Mean training cross-entropy per epoch for the dense and the compressed "
                 "models, one column per transfer method, rows for the smallest and the largest "
                 f"data budget; {b.seed_phrase()}.", _of(loss, task), fg.plot_loss)
    return s


def _section_fidelity(b: _Builder, tasks: list[tuple[str, str]]) -> Section:
    s = Section("fidelity", "Upstream fidelity vs transfer cost",
                "How closely each compressed backbone follows its dense original before any "
                "transfer (no labels needed: top-1 agreement and KL between their ImageNet "
                "predictions on the dataset's test images), set against what the compression "
                "costs after transfer.")
    fid = an.fidelity_table(b.df, b.fidelity)
    b.save_table("fidelity", fid)
    if fid.empty:
        s.items.append(Note(
            "Fidelity: not recorded for this study. `hiddencost study run` measures it after "
            "the runs (fidelity.json in the study's folder; --no-fidelity turns it off)."
            if not b.fidelity else
            "Fidelity: none of the recorded entries matches a compressed point of the table."))
        return s
    failed = fid[fid["error"].notna()]
    for r in failed.itertuples(index=False):
        s.items.append(Note(f"Fidelity of {r.compression_name} on {r.dataset} was not "
                            f"measured: {r.error}"))
    cost = an.fidelity_vs_cost(b.df, b.fidelity)
    rho = an.fidelity_rank_correlation(cost)
    b.save_table("fidelity_vs_cost", cost)
    b.save_table("fidelity_rank_correlation", rho)
    n_images = sorted({int(n) for n in fid["n_images"] if n == n})
    images = "/".join(str(n) for n in n_images) or "?"
    for task in tasks:
        t, r = _of(cost, task), _of(rho, task)
        corr = "; ".join(f"{fg.method_name(x.method)} {_fmt(x.rho_agreement, 2)} / "
                         f"{_fmt(x.rho_kl, 2)}" for x in r.itertuples(index=False)
                         if x.rho_agreement == x.rho_agreement or x.rho_kl == x.rho_kl)
        b.figure(s, f"fidelity-{task[0]}-{task[1]}",
                 f"Upstream fidelity vs transfer cost: {_task_title(task)}",
                 f"x: top-1 agreement with the dense backbone (left) and mean KL(p_dense ‖ "
                 f"p_compressed) in nats (right), on the first {images} test images of "
                 f"{task[1]} at the backbone's input size; y: the mean accuracy drop (dense − "
                 "compressed, pp) over the data budgets, one point per compression (colour) "
                 "and transfer method (marker). "
                 + (f"Spearman ρ of the drop with agreement / with KL per method (– = "
                    f"undefined, agreement constant): {corr}." if corr else
                    "No rank correlation: it needs 3 compressed points with different "
                    "fidelity."), t,
                 fg.plot_fidelity_vs_cost)
        ft = _of(fid, task)
        shown = pd.DataFrame({
            "compression": ft["compression_name"],
            "images": [_fmt(x, 0) for x in ft["n_images"]],
            "top-1 agreement (%)": [_fmt(x) for x in ft["top1_agreement"]],
            "top-5 agreement (%)": [_fmt(x) for x in ft["top5_agreement"]],
            "mean KL (nats)": [_fmt(x, 3) for x in ft["mean_kl"]],
        })
        for method in dict.fromkeys(t["method"]) if not t.empty else ():
            drop = dict(zip(t.loc[t["method"] == method, "compression"],
                            t.loc[t["method"] == method, "acc_drop_mean"], strict=True))
            shown[f"{fg.method_name(method)} drop (pp)"] = [_fmt(drop.get(c))
                                                            for c in ft["compression"]]
        s.items.append(TableItem(f"Fidelity and mean accuracy drop: {_task_title(task)}",
                                 "Drop = dense − compressed accuracy, mean over data budgets "
                                 "of the seed means; – where not measured.", shown,
                                 b.tabdir / "fidelity.csv"))
    return s


def _section_summary(b: _Builder) -> Section:
    s = Section("summary", "Summary table",
                "Like the paper's Table 1: per compressed model and transfer method, the mean "
                "accuracy drop and ECE change against dense over every dataset and budget.")
    t = an.summary_table(b.df)
    path = b.save_table("summary", t)
    if t.empty:
        s.items.append(Note("Summary: skipped, no dense and compressed runs to compare."))
        return s
    b.figure(s, "summary", "Mean cost of compression",
             "Mean accuracy drop (dense − compressed, left) and ECE change (compressed − dense, "
             "right), in percentage points, over all (dataset, budget) cells, one bar per "
             "transfer method; error bars are 95% t-intervals over those cells (they describe "
             "the spread across datasets and budgets, not seed noise; none with one cell; cut "
             "at the axis when far wider than the bars, the table has them in full).",
             t, fg.plot_summary)
    shown = pd.DataFrame({
        "method": [fg.method_name(m) if m != "all" else "all methods" for m in t["method"]],
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
    s.items.append(TableItem("Mean accuracy drop and ECE change per compression",
                             "Each (dataset, budget) cell contributes the difference of its "
                             "seed means; intervals are 95% t-intervals over cells.", shown, path))
    return s


def build_sections(df: pd.DataFrame, out: Path, fidelity: list[dict[str, Any]] | None = None
                   ) -> tuple[list[Section], list[Note], _Builder]:
    """Every section of the report (files written under ``out``), page-level notes, and the
    builder (which holds drawing errors, if any). ``fidelity``: the study's fidelity entries
    (:func:`hiddencost.study.fidelity.read_fidelity`)."""
    b = _Builder(df, out, fidelity)
    tasks = list(iter_tasks(df)) if not df.empty else []
    notes: list[Note] = []
    if df.empty:
        notes.append(Note("The study has no finished runs yet: every section is empty."))
    elif b.one_seed:
        notes.append(Note(
            "This study has one seed per cell: no intervals are shown and no significance test "
            "is possible. Run more seeds (e.g. seed: [0, 1, 2]) to get both.", "info"))
    if not df.empty and not df["is_dense"].any():
        notes.append(Note("No dense runs: every comparison against dense is skipped."))
    varying = df.attrs.get("varying_settings") or []
    if varying:
        notes.append(Note("Runs differ in " + ", ".join(varying) + ": the backbone names "
                          "carry these settings so that only like runs are compared.", "info"))
    sections = []
    for make, title in ((_section_budget, "Accuracy vs data budget"),
                        (_section_delta, "Δ heatmaps"), (_section_calibration, "Calibration"),
                        (_section_confidence, "Confidence analyses"),
                        (_section_mapping, "Label-mapping inspection"),
                        (_section_classes, "Class-wise gains and drops"),
                        (_section_prompts, "Prompt evolution"),
                        (_section_fidelity, "Upstream fidelity")):
        sections.append(_guarded(b, title, lambda m=make: m(b, tasks)))
    sections.append(_guarded(b, "Summary table", lambda: _section_summary(b)))
    return sections, notes, b


def _guarded(b: _Builder, title: str, make: Callable[[], Section]) -> Section:
    """Build one section; an unexpected error becomes a note on the page (and is kept in
    ``b.errors``) instead of stopping the report."""
    try:
        return make()
    except Exception as exc:  # a report over arbitrary data must not crash on one analysis
        msg = f"{title}: could not be computed ({type(exc).__name__}: {exc})."
        b.errors.append(msg)
        return Section(_slug(title), title, "", [Note(msg)])


def _meta(df: pd.DataFrame, source: str) -> list[tuple[str, str]]:
    from hiddencost.report.analyses import budget_order, compression_order

    if df.empty:
        return [("source", source), ("runs", "0 done")]
    names = dict(zip(df["compression"], df["compression_name"], strict=True))
    return [
        ("source", source),
        ("runs", f"{len(df)} done"),
        ("backbones", ", ".join(dict.fromkeys(df["backbone"]))),
        ("datasets", ", ".join(dict.fromkeys(df["dataset"]))),
        ("methods", ", ".join(fg.method_name(m) for m in dict.fromkeys(df["method"]))),
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
    from hiddencost.report.table import is_store_source, store_file
    from hiddencost.study.driver import StudyPaths
    from hiddencost.study.spec import StudySpec, load_spec

    if isinstance(source, StudySpec):
        return StudyPaths.resolve(source, results, store).root
    if not isinstance(source, str | Path):
        return None
    text = str(source)
    if is_store_source(text):
        return store_file(text).parent
    return StudyPaths.resolve(load_spec(text), results, store).root


def build_report(source: Any, out: str | Path, *, results: str | Path | None = None,
                 store: str | Path | None = None, title: str | None = None,
                 embed: bool = True, label: str | None = None,
                 fidelity: list[dict[str, Any]] | None = None) -> Path:
    """Write the report of ``source`` into ``out`` and return the path of ``index.html``.

    ``source`` is a study spec (with its results folder ``results``, default
    ``hiddencost-results/<name>``, and optional ``store``), a study YAML file or preset name,
    a results store file (``.sqlite``), a list of result records, or a table from
    :func:`hiddencost.report.table.load_table`. ``title`` and ``label`` (the source line of the
    page's header) default to the study's name and the source; ``embed=False`` references the
    PNG files instead of embedding them. ``fidelity`` (entries of
    :mod:`hiddencost.study.fidelity`) defaults to the ``fidelity.json`` of the source's folder
    (:func:`results_root`), if there is one.
    """
    from hiddencost.report.table import is_store_source
    from hiddencost.study.fidelity import read_fidelity
    from hiddencost.study.spec import StudySpec, load_spec

    # a study file or preset is parsed (and its grid expanded) once, for the table and fidelity
    loaded = load_spec(str(source)) if isinstance(source, str | Path) and not is_store_source(
        str(source)) else source
    df = load_table(loaded, results=results, store=store)
    if fidelity is None:
        root = results_root(loaded, results, store)
        fidelity = read_fidelity(root) if root is not None else []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    sections, notes, builder = build_sections(df, out, fidelity)
    name = source.name if isinstance(source, StudySpec) else (
        str(df["study"].dropna().iloc[0]) if not df.empty and df["study"].notna().any()
        else None)
    page_title = title or f"hiddencost report{': ' + name if name else ''}"
    label = label or (str(source) if isinstance(source, str | Path) else (
        f"study {name}" if name else f"{len(df)} result records"))
    page = render_page(page_title, _meta(df, label), notes, sections, out, embed=embed)
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    return index
