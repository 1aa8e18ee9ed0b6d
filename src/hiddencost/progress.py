"""Rich progress bars for long work: epochs of one run, runs of a study."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(console: Console) -> Progress:
    """A progress display with count, elapsed time and ETA."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )


@contextlib.contextmanager
def epoch_progress(console: Console, epochs: int) -> Iterator[Callable[[Any], None]]:
    """Yield an ``on_epoch`` callback that advances an epoch bar and shows the last loss."""
    with make_progress(console) as progress:
        task = progress.add_task("epochs", total=epochs, status="")

        def on_epoch(record: Any) -> None:  # an EpochRecord
            progress.update(task, advance=1,
                            status=f"loss {record.loss:.3f} acc {record.train_accuracy:.3f}")

        yield on_epoch
