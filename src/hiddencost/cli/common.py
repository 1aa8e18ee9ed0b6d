"""What every command module shares: the one error convention, the app settings, tables."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from hiddencost.config import Precision
from hiddencost.errors import HiddenCostError

err_console = Console(stderr=True)

# Options several commands share, spelled once.
WeightsOpt = Annotated[str, typer.Option(help="pretrained or random.")]
ScopeOpt = Annotated[str, typer.Option(help="Pruning scope: global or layer.")]
ExcludeFirstConvOpt = Annotated[bool, typer.Option(help="Keep the first conv (stem) dense.")]
ExcludeClassifierOpt = Annotated[bool, typer.Option(help="Keep the classifier dense.")]
DataRootOpt = Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")]
DeviceChoiceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
PrecisionOpt = Annotated[Precision, typer.Option(
    help="Training-step precision: auto (bf16 on a CUDA GPU with native bf16, else fp32), fp32 "
         "or bf16; mapping, test pass and metrics are fp32 always.")]
F = TypeVar("F", bound=Callable[..., Any])


def friendly_errors(fn: F) -> F:
    """Report HiddenCostError as ``error: <message>`` on stderr and exit 2; Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except HiddenCostError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def command_app(help_text: str | None = None) -> typer.Typer:
    """A typer app with the settings every hiddencost command group shares."""
    return typer.Typer(help=help_text, no_args_is_help=True, pretty_exceptions_enable=False,
                       add_completion=False)


def command(app: typer.Typer, name: str | None = None) -> Callable[[F], F]:
    """``@command(app)``: register a function as a command of ``app`` with
    :func:`friendly_errors` around it."""

    def decorate(fn: F) -> F:
        wrapped = friendly_errors(fn)
        app.command(name)(wrapped)
        return wrapped

    return decorate


def output_folder(path: Path | None, option: str = "--out") -> None:
    """Refuse an output folder that is an existing file, before any work is done."""
    if path is not None and path.exists() and not path.is_dir():
        raise HiddenCostError(f"{option} {path} is a file; give a folder (it is created if "
                              "missing)")


def print_rows(console: Console, title: str, columns: tuple[str, ...],
               rows: list[tuple[object, ...]]) -> None:
    """A table of ``rows`` under ``columns`` (cells printed as text)."""
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, no_wrap=i == 0)  # names are copied from here: never cut them
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    console.print(table)
