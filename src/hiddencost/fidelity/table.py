"""One table format for fidelity results, printed by ``hiddencost fidelity`` and
``hiddencost study fidelity`` alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from hiddencost.fidelity.metric import KL_DIRECTION, FidelityMetrics

__all__ = ["FidelityRow", "fidelity_table", "print_fidelity_table"]


@dataclass(frozen=True)
class FidelityRow:
    """One line of a fidelity table: what was compared (``label``), on which ``images``, and
    its metrics, or the ``error`` that kept it from being measured; ``sparsity`` when the
    compression measured one."""

    label: str
    images: str
    metrics: FidelityMetrics | None = None
    error: str | None = None
    sparsity: float | None = None


def _cells(row: FidelityRow, sparsity: bool) -> list[str]:
    m = row.metrics
    values = [m.top1_agreement, m.top5_agreement, m.mean_kl, m.max_kl] if m else [None] * 4
    cells = [row.label, f"{row.images} ({m.n_images})" if m else row.images,
             *(f"{v:.4f}" if v is not None else "-" for v in values)]
    if sparsity:
        cells.append(f"{row.sparsity:.4f}" if row.sparsity is not None else "-")
    return cells


def fidelity_table(rows: Sequence[FidelityRow], title: str = "fidelity") -> Table:
    """A rich table of ``rows``: label, images (count), top-1 / top-5 agreement, mean and max
    ``KL(p_dense || p_compressed)`` in nats, and a sparsity column when a row has one. Rows
    that were not measured show ``-`` (:func:`print_fidelity_table` prints their errors)."""
    sparsity = any(r.sparsity is not None for r in rows)
    table = Table(title=f"{title} ({KL_DIRECTION}, nats)")
    table.add_column("compression", no_wrap=True)
    table.add_column("images (n)", no_wrap=True)
    for col in ("agree@1", "agree@5", "KL", "max KL", *(["sparsity"] if sparsity else [])):
        table.add_column(col, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*_cells(row, sparsity))
    return table


def print_fidelity_table(console: Console, rows: Sequence[FidelityRow],
                         title: str = "fidelity") -> None:
    """Print :func:`fidelity_table` of ``rows`` on ``console``, then one line per row that
    was not measured, with its error (errors are too long for a table cell)."""
    console.print(fidelity_table(rows, title))
    for row in rows:
        if row.error is not None:
            console.print(f"[yellow]not measured[/] {row.label} on {row.images}: {row.error}",
                          highlight=False, soft_wrap=True)
