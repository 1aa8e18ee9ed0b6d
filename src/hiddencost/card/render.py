"""A card as a page (``card.html``), and cards merged into a leaderboard (CSV and HTML).

Plain HTML tables (every text escaped: model names and points come from the user), one
self-contained file each.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hiddencost.card.schema import Card, Interval
from hiddencost.errors import HiddenCostError
from hiddencost.spreadsheet import safe_table

STYLE = ("body{font-family:sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:right}"
         "th:first-child,td:first-child{text-align:left}caption{text-align:left;margin:.5em 0}")


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def interval_text(i: Interval) -> str:
    """``-1.2 [-3.0, 0.6]`` (the mean alone without an interval)."""
    if i.mean is None:
        return "–"
    if i.lo is None or i.hi is None:
        return _fmt(i.mean)
    return f"{_fmt(i.mean)} [{_fmt(i.lo)}, {_fmt(i.hi)}]"


def _table(frame: pd.DataFrame, caption: str) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return (f"<table><caption>{html.escape(caption)}</caption><tr>{head}</tr>{body}"
            "</table>")


def _page(title: str, parts: Sequence[str]) -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + "".join(parts) + "</body></html>\n")


def card_html(card: Card) -> str:
    """The card as one page: per compressed point its summary and its cells."""
    parts = [f"<p>Suite <b>{html.escape(card.suite)}</b> v{card.suite_version}: "
             f"{html.escape(card.suite_description)}. Dense model "
             f"<b>{html.escape(card.dense)}</b>. Accuracy and ECE in %, Δ = dense − "
             "compressed in points (positive: compression costs), means over seeds with 95% "
             "t-intervals, p from Welch's test across seeds. The index is Δ averaged over "
             "budgets on a log-N axis, then over datasets and methods.</p>"]
    for e in card.entries:
        fidelity = "; ".join(f"{f.dataset}: top-1 agreement {f.top1_agreement:.1f}%, "
                             f"KL {f.mean_kl:.3f}" for f in e.fidelity) or "not measured"
        parts.append(
            f"<h2>{html.escape(e.point)} ({html.escape(e.label)})</h2><p>Index Δ accuracy "
            f"{interval_text(e.index)} pp; Δ ECE {interval_text(e.ece_index)} pp. Parameters "
            f"{_fmt(e.parameters)}, nonzero prunable weights {_fmt(e.nonzero_weights)} of "
            f"{_fmt(e.prunable_weights)}, sparsity {_fmt(e.sparsity, 3)}, bits "
            f"{_fmt(e.weight_bits)}/{_fmt(e.activation_bits)}. Upstream fidelity: "
            f"{html.escape(fidelity)}.</p>")
        cells = pd.DataFrame([{
            "dataset": c.dataset, "method": c.method, "budget": c.budget,
            "dense acc": interval_text(c.dense_accuracy),
            "compressed acc": interval_text(c.compressed_accuracy),
            "Δ acc": _fmt(c.delta_accuracy), "p": _fmt(c.p_accuracy, 3),
            "Δ ECE": _fmt(c.delta_ece), "PIE %": _fmt(c.pie_rate),
            "dense seeds disagree %": _fmt(c.dense_disagreement), "lost %": _fmt(c.lost_rate),
            "hurt classes": _fmt(c.hurt_classes), "worst class Δ": _fmt(c.worst_class_delta),
        } for c in e.cells])
        parts.append(_table(cells, "Per cell"))
    return _page(f"Hidden-cost card: {card.dense}", parts)


def write_card(card: Card, folder: str | Path) -> tuple[Path, Path]:
    """``folder/card.json`` and ``folder/card.html``."""
    folder = Path(folder)
    path = card.write(folder / "card.json")
    page = folder / "card.html"
    page.write_text(card_html(card))
    return path, page


def leaderboard(cards: Sequence[Card]) -> pd.DataFrame:
    """One row per compressed point of ``cards``, ranked by the index (smallest cost first);
    cards of different suites or suite versions are a one-line error."""
    if not cards:
        raise HiddenCostError("give at least one card to merge")
    suites = {(c.suite, c.suite_version) for c in cards}
    if len(suites) > 1:
        listed = ", ".join(f"{s} v{v}" for s, v in sorted(suites))
        raise HiddenCostError(f"cards of different suites cannot be ranked together: {listed}")
    rows = []
    for card in cards:
        for e in card.entries:
            rates = [c.pie_rate for c in e.cells if c.pie_rate is not None]
            hurt = [c.hurt_classes for c in e.cells if c.hurt_classes is not None]
            rows.append({
                "dense": card.dense, "compressed": e.point, "label": e.label,
                "parameters": e.parameters, "nonzero_weights": e.nonzero_weights,
                "sparsity": e.sparsity,
                "weight_bits": e.weight_bits, "activation_bits": e.activation_bits,
                "index": e.index.mean, "index_lo": e.index.lo, "index_hi": e.index.hi,
                "ece_index": e.ece_index.mean,
                "mean_pie_rate": sum(rates) / len(rates) if rates else None,
                "hurt_classes": sum(hurt) if hurt else None,
                "suite": f"{card.suite} v{card.suite_version}"})
    table = pd.DataFrame(rows)
    order = table["index"].fillna(float("inf")).argsort(kind="stable")
    return table.iloc[order].reset_index(drop=True)


def write_leaderboard(cards: Sequence[Card], folder: str | Path) -> tuple[Path, Path]:
    """``folder/leaderboard.csv`` and ``folder/leaderboard.html``."""
    table = leaderboard(cards)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / "leaderboard.csv"
    safe_table(table).to_csv(csv, index=False)  # names from user files never run as formulas
    shown = table.assign(index=[interval_text(Interval(mean=m, lo=lo, hi=hi)) for m, lo, hi in
                                zip(table["index"], table["index_lo"], table["index_hi"],
                                    strict=True)]).drop(columns=["index_lo", "index_hi"])
    shown = shown.map(lambda v: _fmt(v, 2) if isinstance(v, float) else _fmt(v))
    page = folder / "leaderboard.html"
    page.write_text(_page(f"Hidden-cost leaderboard: {table['suite'].iloc[0]}", [
        _table(shown, "Ranked by the index (Δ accuracy, pp, averaged over budgets on a log-N "
                      "axis; smaller is a smaller hidden cost)")]))
    return csv, page
