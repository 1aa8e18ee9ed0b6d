"""``hiddencost report``: a study's results as figures and one HTML page.

A report with failed sections is still written, and the command then exits 2 naming them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

import hiddencost.cli.common as common
from hiddencost.errors import HiddenCostError
from hiddencost.report import build_report, findings_text
from hiddencost.report.publish import check_target

app = common.command_app()
console = Console()


@common.command(app)
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
    thumbnails: Annotated[bool, typer.Option(
        help="Show the top PIEs' test images (reads the datasets, which loads torch).")] = True,
) -> None:
    """Write a study's report: every analysis as PNG + SVG + CSV, and OUT/index.html."""
    check_target(out)

    def warn(message: str) -> None:
        console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    def show(lines: list[str]) -> None:
        console.print(findings_text(lines), highlight=False, soft_wrap=True)

    if (spec is None) == (db is None):
        raise HiddenCostError("give a study (a YAML file or preset name) or --db "
                              "RESULTS.sqlite, not both and not neither")
    if db is not None:
        if not db.is_file():
            raise HiddenCostError(f"results store {db} does not exist")
        # a store's fidelity.json and artifacts/ are read from its folder
        index = build_report(db, out, label=f"results store {db}", on_warning=warn,
                             on_findings=show, thumbnails=thumbnails)
    else:
        index = build_report(str(spec), out, results=results, on_warning=warn, on_findings=show,
                             thumbnails=thumbnails)
    console.print(f"report: {index}", highlight=False, soft_wrap=True)
