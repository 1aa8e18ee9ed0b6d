"""``hiddencost card``: a hidden-cost score card, and ``card merge``: a leaderboard of cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

import hiddencost.cli.common as common
from hiddencost.cli.study import (
    DeviceOpt,
    ExecutorOpt,
    PackOpt,
    ProgressOpt,
    StudyPrecisionOpt,
    _environment,
)
from hiddencost.errors import HiddenCostError

app = typer.Typer(help="A hidden-cost score card of a dense model and its compressed points on "
                       "a versioned suite; `card merge` ranks cards.",
                  invoke_without_command=True, no_args_is_help=False,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()


@app.callback()
@common.friendly_errors
def card(
    ctx: typer.Context,
    suite: Annotated[str, typer.Option(
        help="A built-in suite (offline-mini, paper-8) or a suite YAML file.")] = "offline-mini",
    dense: Annotated[str | None, typer.Option(help="The dense model (a registry name).")] = None,
    compressed: Annotated[list[str] | None, typer.Option(
        help="A compressed point (repeatable): a compression name or recipe point, e.g. "
             "magnitude:0.5, w8, w4a4; or your own compressed model: a state-dict file for "
             "the dense model's architecture, FILE or FILE,mask=MASK.")] = None,
    out: Annotated[Path | None, typer.Option(
        help="The card's study folder (default: hiddencost-results/card-<suite>-v<N>-<dense>); "
             "card.json and card.html are written there.")] = None,
    executor: ExecutorOpt = "local", device: DeviceOpt = None,
    precision: StudyPrecisionOpt = None,
    data_root: common.DataRootOpt = None,
    download: Annotated[bool | None, typer.Option(help="Fetch missing datasets.")] = None,
    pack: PackOpt = None, progress: ProgressOpt = True,
) -> None:
    """Run the suite on the dense model and each compressed point (what is not done yet: it
    resumes) and write card.json and card.html."""
    if ctx.invoked_subcommand is not None:
        return
    # lazy: the card runs a study (torch); `hiddencost --help` and the other commands load
    # none of it
    from hiddencost.card import load_suite, make_card, write_card
    from hiddencost.card.render import interval_text  # lazy: as above

    common.output_folder(out)
    if dense is None or not compressed:
        raise HiddenCostError("give --dense MODEL and at least one --compressed POINT")
    chosen = load_suite(suite)
    made, root = make_card(chosen, dense, compressed, out=out, executor=executor,
                           environment=_environment(device, data_root, download, precision),
                           pack=pack, console=console, progress=progress)
    path, page = write_card(made, root)
    for e in made.entries:
        console.print(f"{e.point}: hidden-cost index Δ accuracy {interval_text(e.index)} pp, "
                      f"Δ ECE {interval_text(e.ece_index)} pp", highlight=False)
    console.print(f"card: {path} · {page}", highlight=False, soft_wrap=True)


@common.command(app, "merge")
def merge(
    cards: Annotated[list[Path], typer.Argument(help="card.json files of one suite version.")],
    out: Annotated[Path, typer.Option(help="Folder for leaderboard.csv and .html.")] = Path(
        "leaderboard"),
) -> None:
    """Rank the compressed points of several cards (one suite and version) in one table."""
    from hiddencost.card import read_card, write_leaderboard  # lazy: as in `card`

    common.output_folder(out)
    read = [read_card(path) for path in cards]
    csv, page = write_leaderboard(read, out)
    console.print(f"leaderboard: {csv} · {page}", highlight=False, soft_wrap=True)
