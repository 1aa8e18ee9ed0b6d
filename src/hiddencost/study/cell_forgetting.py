"""Per-run forgetting columns for :func:`~hiddencost.study.results.load_results`: each
compressed run's cell rates (PIEs, the dense seeds' disagreement, lost and gained examples,
:func:`hiddencost.forgetting.forgetting_rates`) from the runs' stored predictions.

A cell is every run that shares the identity but for ``seed`` and ``compression``; its dense
runs are those tagged ``dense`` (or with compression ``none``), and a compressed point is one
compression spec. Every run of a point carries its point's rates (they are over seeds); dense
runs, and runs without predictions or whose cell has no dense predictions, carry None.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from hiddencost.forgetting import forgetting_rates, stack_predictions
from hiddencost.predictions import read_predictions
from hiddencost.study.identity import canonical_json
from hiddencost.study.spec import PlannedRun

#: The columns :func:`forgetting_columns` adds (percentages of the cell's test examples).
FORGETTING_COLUMNS = ("pie_rate", "dense_disagreement", "lost_rate", "gained_rate")


def _is_dense(run: PlannedRun) -> bool:
    family = run.tags.get("family")
    return family == "dense" if family else run.identity["compression"]["method"] == "none"


def forgetting_columns(runs: Iterable[tuple[PlannedRun, Path]]) -> dict[str, dict]:
    """Run key → its :data:`FORGETTING_COLUMNS` (values in %, None where not defined), for the
    done runs given with their folders."""
    cells: dict[str, dict[str, list[tuple[PlannedRun, Path]]]] = defaultdict(
        lambda: defaultdict(list))
    for run, folder in runs:
        identity = dict(run.identity)
        compression = identity.pop("compression")
        identity.pop("seed")
        point = "dense" if _is_dense(run) else canonical_json(compression)
        cells[canonical_json(identity)][point].append((run, folder))
    out: dict[str, dict] = {}
    for points in cells.values():
        dense = stack_predictions([read_predictions(f) for _, f in points.get("dense", [])])
        for point, members in points.items():
            rates = None
            if point != "dense" and dense is not None:
                compressed = stack_predictions([read_predictions(f) for _, f in members])
                if compressed is not None and np.array_equal(compressed[1], dense[1]):
                    rates = forgetting_rates(dense[0], compressed[0], dense[1])
            for run, _ in members:
                out[run.key] = rates or dict.fromkeys(FORGETTING_COLUMNS)
    return out
