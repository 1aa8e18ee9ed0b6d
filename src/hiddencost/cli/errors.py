"""The CLI's one error convention, shared by every command module."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from hiddencost.errors import HiddenCostError

err_console = Console(stderr=True)
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
