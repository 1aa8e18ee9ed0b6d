"""``hiddencost report``: a study's results as figures and one HTML page.

Register on the main app with ``app.command("report")(report)``. Heavy imports (pandas,
matplotlib) happen inside the command, so the rest of the CLI starts fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from hiddencost.cli_errors import friendly_errors
from hiddencost.errors import HiddenCostError

console = Console()


@friendly_errors
def report(
    spec: Annotated[Path | None, typer.Argument(
        help="A study YAML file or preset name (its results are read from --results).")] = None,
    out: Annotated[Path, typer.Option(
        help="Folder for index.html, figures/ and tables/.")] = Path("report"),
    db: Annotated[Path | None, typer.Option(
        help="A results store (SQLite file) instead of a study; artifacts are read from "
             "artifacts/ beside it.")] = None,
    results: Annotated[Path | None, typer.Option(
        help="The study's output folder (default: hiddencost-results/<name>).")] = None,
) -> None:
    """Write a study's report: every analysis as PNG + SVG + CSV, and OUT/index.html."""
    if (spec is None) == (db is None):
        raise HiddenCostError("give a study (a YAML file or preset name) or --db "
                              "RESULTS.sqlite, not both and not neither")
    from hiddencost.report import build_report

    if db is not None:
        from hiddencost.report.table import table_from_db
        from hiddencost.study.fidelity import read_fidelity

        index = build_report(table_from_db(db), out, label=f"results store {db}",
                             fidelity=read_fidelity(db.parent))
    else:
        from hiddencost.study.spec import load_spec

        index = build_report(load_spec(str(spec)), out, results=results)
    console.print(f"report: {index}", highlight=False, soft_wrap=True)
