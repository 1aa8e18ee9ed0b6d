"""Figures of the report: one function per figure, each taking the table of its analysis
(:mod:`hiddencost.report.analyses`, filtered to one task) and returning a matplotlib
:class:`~matplotlib.figure.Figure` with a title, labelled axes with units and a legend;
:func:`save_figure` writes it as PNG and SVG with its table as CSV.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot, no global
backend switch): rendering goes through the Agg canvas whatever backend the caller uses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from hiddencost.report.order import budget_order, budget_positions, compression_order
from hiddencost.report.table import level_label, unit_axis_label
from hiddencost.spreadsheet import safe_table

F = TypeVar("F", bound=Callable[..., Any])
FAMILY_MAPS = ("Reds", "Blues", "Greens", "Purples", "Oranges", "YlOrBr", "PuRd", "GnBu")
DPI = 110
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8,
         "xtick.labelsize": 8, "ytick.labelsize": 8, "figure.titlesize": 12,
         "svg.hashsalt": "hiddencost", "svg.fonttype": "none",
         # names come from user files: "$\\frac{1}{0}$" is a class name, not math to typeset
         "text.parse_math": False}


def method_name(method: str, table: pd.DataFrame) -> str:
    """How ``method`` is shown: the display name the runs' records carry (see
    :func:`~hiddencost.report.table.method_styles`, put in ``table.attrs["methods"]`` by the
    report builder), else the name itself."""
    return table.attrs.get("methods", {}).get(method, (method, "o"))[0]


def method_marker(method: str, table: pd.DataFrame) -> str:
    """The marker of ``method``'s points, as :func:`method_name` finds its name."""
    return table.attrs.get("methods", {}).get(method, (method, "o"))[1]


@dataclass(frozen=True)
class SavedFigure:
    """The files of one saved figure."""

    name: str
    png: Path
    svg: Path
    csv: Path


def csv_safe(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` without columns holding arrays, lists or dicts (they do not fit in a CSV), its
    text cells never read as formulas by a spreadsheet (:func:`hiddencost.spreadsheet.safe_table`
    ; class names come from user files)."""
    keep = [c for c in table.columns
            if not any(isinstance(v, np.ndarray | list | dict) for v in table[c])]
    return safe_table(table[keep])


def save_figure(fig: Figure, table: pd.DataFrame, folder: str | Path, name: str
                ) -> SavedFigure:
    """Write ``folder/name.png`` (110 dpi), ``.svg`` (text kept as text) and ``.csv``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(STYLE):
        # lay out once (constrained layout), then freeze: each save is then a single draw
        fig.draw_without_rendering()
        fig.set_layout_engine("none")
        fig.savefig(folder / f"{name}.png", dpi=DPI, facecolor="white",
                    metadata={"Software": None})
        fig.savefig(folder / f"{name}.svg", facecolor="white", metadata={"Date": None})
    csv_safe(table).to_csv(folder / f"{name}.csv", index=False)
    return SavedFigure(name, folder / f"{name}.png", folder / f"{name}.svg",
                       folder / f"{name}.csv")


def styled(fn: F) -> F:
    """Run a figure function under the report's rcParams (fonts are fixed when artists are
    created, so the whole function runs inside the context, not just the save)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with matplotlib.rc_context(STYLE):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _grid(fig: Figure, nrows: int, ncols: int, **kw: Any) -> np.ndarray:
    return np.atleast_2d(fig.subplots(nrows, ncols, squeeze=False, **kw))


def compression_colors(table: pd.DataFrame) -> dict[str, Any]:
    """A colour per compression point: dense black; each family its own sequential map, darker
    for more compressed levels."""
    order = compression_order(table)
    fams: dict[str, list[str]] = {}
    for comp in order:
        fam = table.loc[table["compression"] == comp, "family"].iloc[0]
        fams.setdefault(fam, []).append(comp)
    colors: dict[str, Any] = {}
    i = 0
    for fam, comps in fams.items():
        if fam == "dense":
            for c in comps:
                colors[c] = "#111111"
            continue
        cmap = colormaps[FAMILY_MAPS[i % len(FAMILY_MAPS)]]
        i += 1
        for j, c in enumerate(comps):
            colors[c] = cmap(0.4 + 0.55 * j / (len(comps) - 1) if len(comps) > 1 else 0.75)
    return colors


def _names(table: pd.DataFrame) -> dict[str, str]:
    return dict(zip(table["compression"], table["compression_name"], strict=True))


def _band(ax: Any, x: Sequence[float], t: pd.DataFrame, color: Any) -> None:
    lo, hi = t["lo"].to_numpy(float), t["hi"].to_numpy(float)
    if np.isfinite(lo).any():
        ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)


def _legend(fig: Figure, handles: list, title: str | None = None, ncol: int | None = None
            ) -> None:
    if handles:
        fig.legend(handles=handles, loc="outside lower center", title=title,
                   ncol=ncol or min(len(handles), 5), frameon=False)


def _wrap(n: int, max_cols: int = 4) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def _hide_unused(axes: np.ndarray, n: int) -> None:
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)


def _method_panels(table: pd.DataFrame, row_height: float, extra_height: float
                   ) -> tuple[Figure, np.ndarray, list[str]]:
    """A figure with one panel per method of ``table`` (up to 4 per row, shared y; unused
    panels hidden): (figure, axes, methods)."""
    methods = list(dict.fromkeys(table["method"]))
    nrows, ncols = _wrap(len(methods))
    fig = _figure(3.6 * ncols + 0.4, row_height * nrows + extra_height)
    axes = _grid(fig, nrows, ncols, sharey=True)
    _hide_unused(axes, len(methods))
    return fig, axes, methods


# --------------------------------------------------------------------------------------------
# 1
# --------------------------------------------------------------------------------------------


@styled
def plot_accuracy_vs_budget(table: pd.DataFrame, title: str) -> Figure:
    """Panels per method; x = data budget (examples per class, categorical), y = test accuracy
    (%); one line per compression point, shaded 95% interval over seeds."""
    fig, axes, methods = _method_panels(table, 2.9, 0.9)
    colors, names = compression_colors(table), _names(table)
    order, pos = budget_positions(table)
    for ax, method in zip(axes.flat, methods, strict=False):
        t = table[table["method"] == method]
        for comp, g in t.groupby("compression", sort=False):
            g = g.sort_values("budget_rank")
            x = [pos[b] for b in g["budget"]]
            ax.plot(x, g["mean"], marker="o", ms=3.5, color=colors[comp], label=names[comp],
                    lw=1.6 if comp != "dense" else 2.0)
            _band(ax, x, g, colors[comp])
        ax.set_title(method_name(method, table))
        ax.set_xticks(range(len(order)), order)
        ax.set_xlabel("data budget (examples per class)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[c], marker="o", label=names[c]) for c in colors]
    _legend(fig, handles, "compression")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# 2
# --------------------------------------------------------------------------------------------


@styled
def plot_delta_heatmap(table: pd.DataFrame, title: str, alpha: float = 0.05) -> Figure:
    """Panels per method; rows = compression point, columns = budget; cell colour and label =
    Δ accuracy (dense − compressed, pp) on a diverging map centred on 0; cells whose Δ is not
    significant (Welch p ≥ alpha) are hatched and labelled "n.s."."""
    methods = list(dict.fromkeys(table["method"]))
    nrows, ncols = _wrap(len(methods), 2)
    comps, budgets = compression_order(table), budget_order(table)
    fig = _figure(max(4.2, 0.9 * len(budgets) + 2.2) * ncols + 0.8,
                  (0.55 * len(comps) + 1.4) * nrows + 1.0)
    axes = _grid(fig, nrows, ncols)
    vmax = float(np.nanmax(np.abs(table["delta"].to_numpy(float)))) if len(table) else 1.0
    vmax = vmax if np.isfinite(vmax) and vmax > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-vmax, vmax=vmax)
    cmap = colormaps["RdBu_r"]
    image = None
    states: set[bool | None] = set()
    for ax, method in zip(axes.flat, methods, strict=False):
        image = _heatmap_panel(ax, table[table["method"] == method], comps, budgets,
                               _names(table), norm, cmap, states)
        ax.set_title(method_name(method, table))
    _hide_unused(axes, len(methods))
    if image is not None:
        cb = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
        cb.set_label("Δ accuracy, dense − compressed (pp)")
    _legend(fig, _heatmap_handles(table, alpha, states, cmap), ncol=2)
    fig.suptitle(title)
    return fig


def _heatmap_panel(ax: Any, t: pd.DataFrame, comps: list[str], budgets: list[str],
                   names: dict[str, str], norm: Any, cmap: Any, states: set[bool | None]
                   ) -> Any:
    """One method's Δ grid: the image, a label per cell (``n.s.`` and a hatch where not
    significant); adds each cell's :func:`significance` to ``states``; returns the image."""
    grid = np.full((len(comps), len(budgets)), np.nan)
    for r in t.itertuples(index=False):
        grid[comps.index(r.compression), budgets.index(r.budget)] = r.delta
    image = ax.imshow(grid, cmap=cmap, norm=norm, aspect="auto")
    for r in t.itertuples(index=False):
        i, j = comps.index(r.compression), budgets.index(r.budget)
        rgba = cmap(norm(r.delta)) if np.isfinite(r.delta) else (1, 1, 1, 1)
        dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.5
        state = significance(r.significant)
        states.add(state)
        if state is False:
            ax.add_patch(_hatch(j, i))
        ax.text(j, i, f"{r.delta:+.1f}" + ("\nn.s." if state is False else ""), ha="center",
                va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(budgets)), budgets)
    ax.set_yticks(range(len(comps)), [names.get(c, c) for c in comps])
    ax.set_xlabel("data budget (examples per class)")
    ax.set_ylabel("compression")
    return image


def _heatmap_handles(table: pd.DataFrame, alpha: float, states: set[bool | None], cmap: Any
                     ) -> list[Patch]:
    """The heat map's legend: the hatch (when any cell was tested), the unmarked untested
    cells (when any), and the two colours."""
    handles = []
    if any(significance(v) is not None for v in table["significant"]):
        handles.append(Patch(facecolor="white", edgecolor="0.3", hatch="///",
                             label=f"not significant (Welch t-test, p ≥ {alpha:g})"
                             + ("" if False in states else ": none here")))
    if None in states:
        handles.append(Patch(facecolor="white", edgecolor="0.3",
                             label="no test, unmarked (fewer than 2 seeds)"))
    handles.append(Patch(facecolor=cmap(0.85), label="compressed worse (Δ > 0)"))
    handles.append(Patch(facecolor=cmap(0.15), label="compressed better (Δ < 0)"))
    return handles


def significance(value: Any) -> bool | None:
    """A table's ``significant`` cell as True / False / None (untested: None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def _hatch(x: float, y: float) -> Any:
    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, hatch="///", edgecolor="0.35",
                     linewidth=0)


# --------------------------------------------------------------------------------------------
# 3, 4: a metric against the compression level
# --------------------------------------------------------------------------------------------


def _families(table: pd.DataFrame) -> list[str]:
    return [f for f in dict.fromkeys(table["family"]) if f != "dense"]


@styled
def plot_metric_vs_compression(table: pd.DataFrame, title: str, ylabel: str) -> Figure:
    """Rows = methods, columns = compression families; x = the family's levels with dense
    first (categorical, from least to most compressed), y = the metric; one line per budget
    (darker = more data), shaded 95% interval over seeds."""
    methods = list(dict.fromkeys(table["method"]))
    fams = _families(table) or ["dense"]
    order = compression_order(table)
    budgets, _ = budget_positions(table)
    cmap = colormaps["viridis"]
    bcolor = {b: cmap(0.85 * (1 - i / max(1, len(budgets) - 1))) if len(budgets) > 1
              else cmap(0.3) for i, b in enumerate(budgets)}
    fig = _figure(3.3 * len(fams) + 0.6, 2.4 * len(methods) + 1.0)
    axes = _grid(fig, len(methods), len(fams), sharey="row")
    for r, method in enumerate(methods):
        for c, fam in enumerate(fams):
            ax = axes[r, c]
            t = table[(table["method"] == method)
                      & ((table["family"] == fam) | (table["family"] == "dense"))]
            comps = [x for x in order if x in set(t["compression"])]
            pos = {x: i for i, x in enumerate(comps)}
            for b in budgets:
                g = t[t["budget"] == b]
                if g.empty:
                    continue
                g = g.assign(_x=[pos[x] for x in g["compression"]]).sort_values("_x")
                ax.plot(g["_x"], g["mean"], marker="o", ms=3.5, color=bcolor[b])
                _band(ax, g["_x"].to_numpy(float), g, bcolor[b])
            labels, unit = _level_ticks(t, comps)
            ax.set_xticks(range(len(comps)), labels)
            ax.set_xlabel(unit_axis_label(unit) if fam != "dense" else "compression")
            ax.set_title(f"{method_name(method, table)} · {fam}")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(ylabel)
    handles = [Line2D([], [], color=bcolor[b], marker="o",
                      label=f"{b} per class" if b != "full" else "full data") for b in budgets]
    _legend(fig, handles, "data budget")
    fig.suptitle(title)
    return fig


def _level_ticks(t: pd.DataFrame, comps: list[str]) -> tuple[list[str], str | None]:
    """Tick labels of a family's levels (``dense``, ``90%``, ``4-bit``, or the label when the
    level is unknown) and the family's unit (None when only dense is shown)."""
    labels, unit = [], None
    for x in comps:
        row = t[t["compression"] == x].iloc[0]
        if row["family"] == "dense":
            labels.append("dense")
            continue
        unit = row["unit"]
        labels.append(level_label(row["level"], row["unit"]).replace(" sparse", "")
                      if row["level"] is not None else x)
    return labels, unit


@styled
def plot_reliability(table: pd.DataFrame, title: str) -> Figure:
    """Columns = methods; top: per-bin accuracy against mean confidence for dense and the most
    compressed models (diagonal = perfect calibration); bottom: samples per bin."""
    methods = list(dict.fromkeys(table["method"]))
    colors, names = compression_colors(table), _names(table)
    fig = _figure(3.3 * len(methods) + 0.4, 5.2)
    axes = _grid(fig, 2, len(methods), gridspec_kw={"height_ratios": [3, 1.3]})
    for c, method in enumerate(methods):
        top, bottom = axes[0, c], axes[1, c]
        t = table[table["method"] == method]
        comps = list(dict.fromkeys(t["compression"]))
        width = 1.0 / 15 / max(1, len(comps))
        top.plot([0, 1], [0, 1], ls="--", color="0.5", lw=1)
        for i, comp in enumerate(comps):
            g = t[t["compression"] == comp].sort_values("bin")
            ok = g["count"] > 0
            top.plot(g.loc[ok, "confidence"], g.loc[ok, "accuracy"], marker="o",
                     ms=3.5, color=colors[comp])
            centers = (g["bin_lo"] + g["bin_hi"]) / 2
            bottom.bar(centers - 0.5 / 15 + width * (i + 0.5), g["count"], width=width,
                       color=colors[comp])
        budget = t["budget"].iloc[0]
        top.set_title(f"{method_name(method, table)} · budget {budget}")
        top.set_xlim(0, 1)
        top.set_ylim(0, 1.02)
        top.set_xlabel("mean confidence in bin (probability)")
        top.set_ylabel("accuracy in bin (fraction correct)")
        top.grid(alpha=0.3)
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("confidence bin (probability)")
        bottom.set_ylabel("test samples")
    handles = [Line2D([], [], color=colors[c], marker="o", label=names[c]) for c in colors
               if c in set(table["compression"])]
    handles.append(Line2D([], [], color="0.5", ls="--", label="perfect calibration"))
    _legend(fig, handles, "model")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# 5
# --------------------------------------------------------------------------------------------

CLOSENESS_COLORS = {
    "same class": "#ffffff", "same group": "#d9f0d3", "same kind": "#fff2b2",
    "unrelated": "#f8c9c4", "not judged": "#e6e6e6",
}


def closeness_color(text: str) -> str:
    for prefix, color in CLOSENESS_COLORS.items():
        if text.startswith(prefix):
            return color
    return "#ffffff"


@styled
def plot_label_mapping(table: pd.DataFrame, title: str) -> Figure:
    """One table per method: rows = target classes, columns = dense and each compressed model,
    cells = the ImageNet source class each maps the target to, coloured by how close it is to
    the dense model's source (same class, same group, same kind, unrelated)."""
    methods = list(dict.fromkeys(table["method"]))
    nrows_total = sum(table[table["method"] == m]["target"].nunique() + 2 for m in methods)
    ncomp = table["compression"].nunique()
    fig = _figure(1.9 * (ncomp + 1) + 0.5, 0.24 * nrows_total + 0.35 * len(methods) + 0.9)
    axes = _grid(fig, len(methods), 1,
                 gridspec_kw={"height_ratios": [table[table["method"] == m]["target"].nunique()
                                                + 1 for m in methods]})
    names = _names(table)
    for ax, method in zip(axes[:, 0], methods, strict=True):
        t = table[table["method"] == method]
        comps = list(dict.fromkeys(t["compression"]))
        targets = list(dict.fromkeys(t["target"]))
        cells, colors = [], []
        for tg in targets:
            g = t[t["target"] == tg]
            row = [str(g["target_name"].iloc[0])]
            crow = ["#f0f0f0"]
            for comp in comps:
                m = g[g["compression"] == comp]
                if m.empty:
                    row.append("")
                    crow.append("#ffffff")
                else:
                    row.append(_short(str(m["source_name"].iloc[0])))
                    crow.append(closeness_color(str(m["closeness"].iloc[0])))
            cells.append(row)
            colors.append(crow)
        ax.axis("off")
        tab = ax.table(cellText=cells, cellColours=colors,
                       colLabels=["target", *[names.get(c, c) for c in comps]],
                       bbox=(0.0, 0.0, 1.0, 1.0), cellLoc="center")
        tab.auto_set_font_size(False)
        tab.set_fontsize(7.5)
        seed, budget = t["seed"].iloc[0], t["budget"].iloc[0]
        ax.set_title(f"{method_name(method, table)} · budget {budget} · seed {seed}", loc="left")
    handles = [Patch(facecolor=c, edgecolor="0.5", label=k) for k, c in CLOSENESS_COLORS.items()]
    _legend(fig, handles, "source class vs the dense model's (ImageNet-1k groups)", ncol=5)
    fig.suptitle(title)
    return fig


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------------------------
# 6
# --------------------------------------------------------------------------------------------


@styled
def plot_class_gains_drops(table: pd.DataFrame, title: str) -> Figure:
    """Rows = methods, columns = compressed points; horizontal bars = Δ per-class accuracy
    (compressed − dense, pp) of the classes with the largest drops (red) and gains (green)."""
    methods = list(dict.fromkeys(table["method"]))
    comps = compression_order(table)
    names = _names(table)
    per_panel = max(1, int(table.groupby(["method", "compression"]).size().max()))
    fig = _figure(3.2 * len(comps) + 0.8, (0.22 * per_panel + 0.9) * len(methods) + 0.9)
    axes = _grid(fig, len(methods), len(comps), sharex=True)
    lim = float(np.nanmax(np.abs(table["delta"].to_numpy(float)))) if len(table) else 1.0
    lim = lim * 1.1 if np.isfinite(lim) and lim > 0 else 1.0
    for r, method in enumerate(methods):
        for c, comp in enumerate(comps):
            ax = axes[r, c]
            t = table[(table["method"] == method) & (table["compression"] == comp)]
            t = t.sort_values("delta")
            y = np.arange(len(t))
            ax.barh(y, t["delta"], color=["#c0392b" if d < 0 else "#27ae60" for d in t["delta"]])
            ax.set_yticks(y, [_short(str(n), 18) for n in t["target_name"]])
            ax.axvline(0, color="0.3", lw=0.8)
            ax.invert_yaxis()  # the largest drop on top
            ax.set_xlim(-lim, lim)
            ax.set_title(f"{method_name(method, table)} · {names.get(comp, comp)}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
            if r == len(methods) - 1:
                ax.set_xlabel("Δ class accuracy, compressed − dense (pp)")
            if c == 0:
                ax.set_ylabel("target class")
            if t.empty:
                ax.text(0.5, 0.5, "no change", transform=ax.transAxes, ha="center")
    handles = [Patch(facecolor="#c0392b", label="drop (compressed worse)"),
               Patch(facecolor="#27ae60", label="gain (compressed better)")]
    _legend(fig, handles)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# 7
# --------------------------------------------------------------------------------------------


@styled
def plot_prompt_distance(table: pd.DataFrame, title: str) -> Figure:
    """Panels per method; x = epoch, y = ‖δ_dense − δ_compressed‖₂; one line per compressed
    point and budget (line style), shaded 95% interval over seeds."""
    fig, axes, methods = _method_panels(table, 2.8, 1.0)
    colors, names = compression_colors(table), _names(table)
    budgets, _ = budget_positions(table)
    styles = ["-", "--", ":", "-."]
    bstyle = {b: styles[i % len(styles)] for i, b in enumerate(reversed(budgets))}
    for ax, method in zip(axes.flat, methods, strict=False):
        t = table[table["method"] == method]
        for (comp, b), g in t.groupby(["compression", "budget"], sort=False):
            g = g.sort_values("epoch")
            ax.plot(g["epoch"], g["mean"], ls=bstyle[b], marker="o" if len(g) < 3 else None,
                    ms=4, color=colors[comp])
            _band(ax, g["epoch"].to_numpy(float), g, colors[comp])
        ax.set_title(method_name(method, table))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("L2 distance to dense prompt (δ units)")
        ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[c], label=names[c]) for c in colors]
    handles += [Line2D([], [], color="0.3", ls=bstyle[b],
                       label=f"budget {b}") for b in budgets]
    _legend(fig, handles, "compression · data budget")
    fig.suptitle(title)
    return fig


@styled
def plot_prompt_images(table: pd.DataFrame, title: str) -> Figure:
    """Rows = models (dense, most compressed), columns = method × epoch: the prompt
    sigmoid(δ) each model adds to the border of the canvas (the white square is the image)."""
    comps = compression_order(table)
    methods = list(dict.fromkeys(table["method"]))
    epochs = sorted(set(table["epoch"]))
    cols = [(m, e) for m in methods for e in epochs
            if not table[(table["method"] == m) & (table["epoch"] == e)].empty]
    names = _names(table)
    gain = prompt_contrast(list(table["image"]))
    fig = _figure(1.45 * len(cols) + 1.3, 1.55 * len(comps) + 1.1)
    axes = _grid(fig, len(comps), len(cols))
    for r, comp in enumerate(comps):
        for c, (method, e) in enumerate(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            g = table[(table["method"] == method) & (table["compression"] == comp)
                      & (table["epoch"] == e)]
            if g.empty:
                ax.set_visible(False)
                continue
            img = g["image"].iloc[0]
            ax.imshow(np.clip(0.5 + (img - 0.5) * gain, 0.0, 1.0), interpolation="nearest")
            if r == len(comps) - 1:
                ax.set_xlabel(f"{img.shape[1]}×{img.shape[0]} px", fontsize=7)
            if r == 0:
                ax.set_title(f"{method_name(method, table)}\nepoch {e}", fontsize=8)
            if c == 0:
                ax.set_ylabel(names.get(comp, comp), fontsize=8)
    handles = [Patch(facecolor="white", edgecolor="0.4", label="image area (not prompted)"),
               Patch(facecolor="0.5", label="sigmoid(δ) = 0.5: the initial prompt")]
    if gain > 1.0:
        handles.append(Patch(facecolor="none", edgecolor="none",
                             label=f"contrast ×{gain:.3g} around 0.5 (same for every panel)"))
    _legend(fig, handles)
    fig.suptitle(title)
    return fig


def prompt_contrast(images: Sequence[np.ndarray], target: float = 0.45) -> float:
    """The gain g ≥ 1 that stretches the largest deviation |v − 0.5| of the prompt pixels
    (not the white image area) in ``images`` to ``target``; shown as 0.5 + (v − 0.5)·g.
    Prompts trained for few epochs barely leave 0.5 grey and are invisible without it."""
    dev = 0.0
    for img in images:
        border = img[~np.all(img >= 1.0, axis=-1)]
        if border.size:
            dev = max(dev, float(np.abs(border - 0.5).max()))
    return max(1.0, target / dev) if dev > 0 else 1.0


@styled
def plot_loss(table: pd.DataFrame, title: str) -> Figure:
    """Rows = budgets (the smallest and the largest), columns = methods; x = epoch, y = mean
    training loss (cross-entropy, nats); one line per compression point, shaded 95% interval."""
    methods = list(dict.fromkeys(table["method"]))
    budgets, _ = budget_positions(table)
    shown = budgets if len(budgets) <= 2 else [budgets[0], budgets[-1]]
    fig = _figure(3.2 * len(methods) + 0.4, 2.6 * len(shown) + 1.0)
    axes = _grid(fig, len(shown), len(methods), sharey="row")
    colors, names = compression_colors(table), _names(table)
    for r, b in enumerate(shown):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            t = table[(table["method"] == method) & (table["budget"] == b)]
            for comp, g in t.groupby("compression", sort=False):
                g = g.sort_values("epoch")
                ax.plot(g["epoch"], g["mean"], color=colors[comp], lw=1.5)
                _band(ax, g["epoch"].to_numpy(float), g, colors[comp])
            ax.set_title(f"{method_name(method, table)} · budget {b}")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if c == 0:
                ax.set_ylabel("training loss (cross-entropy, nats)")
            ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=colors[c], label=names[c]) for c in colors]
    _legend(fig, handles, "compression")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# 8
# --------------------------------------------------------------------------------------------


@styled
def plot_summary(table: pd.DataFrame, title: str) -> Figure:
    """Two panels: mean accuracy drop (dense − compressed, pp) and mean ECE change
    (compressed − dense, pp) per compressed point, one bar per method, 95% interval over
    (dataset, budget) cells as whiskers. When the intervals are far wider than the bars (few
    cells), the axis fits the bars and a cut whisker ends in an arrowhead at the edge."""
    comps = list(dict.fromkeys(table["compression"]))
    methods = list(dict.fromkeys(table["method"]))
    names = _names(table)
    cmap = colormaps["tab10"]
    mcolor = {m: ("0.25" if m == "all" else cmap(i % 10)) for i, m in enumerate(methods)}
    fig = _figure(10, 0.5 * len(comps) * max(1, len(methods)) * 0.45 + 2.4)
    axes = _grid(fig, 1, 2, sharey=True)
    h = 0.8 / max(1, len(methods))
    clipped = False
    for ax, (col, label) in zip(axes[0], (
            ("acc_drop", "mean accuracy drop, dense − compressed (pp)"),
            ("ece_change", "mean ECE change, compressed − dense (pp)")), strict=True):
        xmin, xmax = _summary_limits(table[f"{col}_mean"], table[f"{col}_lo"],
                                     table[f"{col}_hi"])
        for i, m in enumerate(methods):
            t = table[table["method"] == m].set_index("compression").reindex(comps)
            y = np.arange(len(comps)) + (i - (len(methods) - 1) / 2) * h
            ax.barh(y, t[f"{col}_mean"].to_numpy(float), height=h * 0.9, color=mcolor[m])
            clipped |= _whiskers(ax, y, t[f"{col}_lo"].to_numpy(float),
                                 t[f"{col}_hi"].to_numpy(float), xmin, xmax)
        ax.set_xlim(xmin, xmax)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_yticks(range(len(comps)), [names.get(c, c) for c in comps])
        ax.set_xlabel(label)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].invert_yaxis()  # shared y: once; first compression and method on top
    axes[0, 0].set_ylabel("compression")
    handles = [Patch(facecolor=mcolor[m],
                     label=method_name(m, table) if m != "all" else "all methods")
               for m in methods]
    handles.append(Line2D([], [], color="black", lw=0.8, marker="|",
                          label="95% interval over cells"))
    if clipped:
        handles.append(Line2D([], [], color="black", lw=0.8, marker=">", ms=4,
                              label="interval cut at the axis (full in the table)"))
    _legend(fig, handles, "transfer method", ncol=4)
    fig.suptitle(title)
    return fig


def _whiskers(ax: Any, y: np.ndarray, lo: np.ndarray, hi: np.ndarray, xmin: float,
              xmax: float) -> bool:
    """Interval whiskers at heights ``y``, cut to [xmin, xmax] with an arrowhead where cut;
    returns whether any was cut."""
    clipped = False
    for yy, low, high in zip(y, lo, hi, strict=True):
        if not (np.isfinite(low) and np.isfinite(high)):
            continue
        a, b = max(low, xmin), min(high, xmax)
        ax.plot([a, b], [yy, yy], color="black", lw=0.8)
        for x, cut, marker in ((a, low < xmin, "<"), (b, high > xmax, ">")):
            clipped |= cut
            ax.plot([x], [yy], color="black", ms=4 if cut else 5, marker=marker if cut else "|")
    return clipped


def _summary_limits(mean: pd.Series, lo: pd.Series, hi: pd.Series) -> tuple[float, float]:
    """x-limits: the bars and the intervals, unless the intervals span more than 3× the bars
    (few cells give huge t-intervals that would flatten every bar); then the bars only."""
    m = mean.to_numpy(float)
    b = np.concatenate([lo.to_numpy(float), hi.to_numpy(float)])
    m, b = m[np.isfinite(m)], b[np.isfinite(b)]
    left, right = (min(0.0, m.min()), max(0.0, m.max())) if m.size else (0.0, 1.0)
    span = right - left or 1.0
    if b.size and b.max() - b.min() <= 3 * span:
        left, right = min(left, b.min()), max(right, b.max())
        span = right - left or 1.0
    return left - 0.08 * span, right + 0.08 * span



# --------------------------------------------------------------------------------------------
# 9
# --------------------------------------------------------------------------------------------

@styled
def plot_fidelity_vs_cost(table: pd.DataFrame, title: str) -> Figure:
    """Two panels sharing y = the mean accuracy drop over budgets (dense − compressed, pp):
    x = top-1 agreement with the dense backbone (%), and x = mean KL(p_dense || p_compressed)
    (nats, log scale). One point per compressed point (colour) and transfer method (marker)."""
    colors, names = compression_colors(table), _names(table)
    methods = list(dict.fromkeys(table["method"]))
    fig = _figure(9.0, 4.0)
    axes = _grid(fig, 1, 2, sharey=True)
    kl = table["mean_kl"].to_numpy(float)
    log_kl = bool(np.isfinite(kl).any() and np.nanmin(kl) > 0
                  and np.nanmax(kl) / np.nanmin(kl) > 20)
    for ax, col, label in ((axes[0, 0], "top1_agreement", "top-1 agreement with dense (%)"),
                           (axes[0, 1], "mean_kl", "mean KL(dense ‖ compressed) (nats)")):
        for r in table.itertuples(index=False):
            ax.scatter(getattr(r, col), r.acc_drop_mean, color=colors[r.compression],
                       marker=method_marker(r.method, table), s=36, edgecolor="black",
                       linewidth=0.4, zorder=3)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0, 0].set_xlim(-3, 103)
    if log_kl:
        axes[0, 1].set_xscale("log")
    axes[0, 0].set_ylabel("mean accuracy drop, dense − compressed (pp)")
    handles = [Line2D([], [], ls="", marker="o", color=colors[c], markeredgecolor="black",
                      label=names[c]) for c in dict.fromkeys(table["compression"])]
    handles += [Line2D([], [], ls="", marker=method_marker(m, table), color="0.6",
                       markeredgecolor="black", label=method_name(m, table)) for m in methods]
    _legend(fig, handles, "compression (colour) · transfer method (marker)", ncol=5)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------
# What compression forgets
# --------------------------------------------------------------------------------------------


@styled
def plot_forgetting(table: pd.DataFrame, title: str) -> Figure:
    """Columns = methods; top row: PIE rate (%) against the data budget, one line per
    compressed point, the dense seeds' own disagreement dashed grey (the baseline); bottom row:
    lost examples (%, right under dense, wrong under compressed)."""
    methods = list(dict.fromkeys(table["method"]))
    fig = _figure(3.4 * len(methods) + 0.6, 5.6)
    axes = _grid(fig, 2, len(methods), sharex=True, sharey="row")
    colors, names = compression_colors(table), _names(table)
    order, pos = budget_positions(table)
    for c, method in enumerate(methods):
        t = table[table["method"] == method]
        base = t.drop_duplicates("budget").sort_values("budget_rank")
        axes[0, c].plot([pos[b] for b in base["budget"]], base["dense_disagreement"], ls="--",
                        color="0.45", lw=1.4)
        for comp, g in t.groupby("compression", sort=False):
            g = g.sort_values("budget_rank")
            x = [pos[b] for b in g["budget"]]
            for r, column in enumerate(("pie_rate", "lost_rate")):
                axes[r, c].plot(x, g[column], marker="o", ms=3.5, color=colors[comp])
        axes[0, c].set_title(method_name(method, table))
        axes[1, c].set_xticks(range(len(order)), order)
        axes[1, c].set_xlabel("data budget (examples per class)")
        for ax in axes[:, c]:
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("PIEs (% of test examples)")
    axes[1, 0].set_ylabel("lost examples (%)")
    handles = [Line2D([], [], color=colors[c], marker="o", label=names[c]) for c in colors]
    handles.append(Line2D([], [], color="0.45", ls="--", label="dense seeds disagree"))
    _legend(fig, handles, "compression")
    fig.suptitle(title)
    return fig


@styled
def plot_pie_thumbnails(table: pd.DataFrame, title: str) -> Figure:
    """Rows = method · compressed point, columns = its top PIEs (``rank``): each test image
    with its true label and the modal predictions under dense and compressed."""
    rows = list(dict.fromkeys(zip(table["method"], table["compression"], strict=True)))
    k = int(table["rank"].max()) + 1
    names = _names(table)
    fig = _figure(1.25 * k + 1.0, 1.6 * len(rows) + 0.6)
    axes = _grid(fig, len(rows), k)
    for r, (method, comp) in enumerate(rows):
        t = table[(table["method"] == method) & (table["compression"] == comp)]
        for rank in range(k):
            ax = axes[r, rank]
            ax.set_xticks([])
            ax.set_yticks([])
            hit = t[t["rank"] == rank]
            if hit.empty:
                ax.set_visible(rank != 0)
                continue
            row = hit.iloc[0]
            ax.imshow(row["image"], interpolation="nearest")
            lost = row["dense_label"] == row["label"]
            ax.set_title(f"true {_short(row['label_name'], 12)}\n"
                         f"dense {_short(row['dense_name'], 12)}\n"
                         f"compr. {_short(row['compressed_name'], 12)}", fontsize=6.5,
                         color="#c0392b" if lost else "0.2")
            if rank == 0:
                ax.set_ylabel(f"{method_name(method, table)}\n{names.get(comp, comp)}",
                              fontsize=8)
    handles = [Patch(facecolor="none", edgecolor="#c0392b",
                     label="lost: dense right, compressed wrong (red title)")]
    _legend(fig, handles)
    fig.suptitle(title)
    return fig
