"""Fault injection for study drivers, through :func:`hiddencost.study.driver.run_study`'s
``on_event`` hook: a driver that SIGKILLs itself at a chosen step, and a driver process body
for ``multiprocessing`` (a forkserver child finds this module on the parent's ``sys.path``)."""

from __future__ import annotations

import os
import signal

from rich.console import Console

from hiddencost.study.catalog import load_spec
from hiddencost.study.driver import run_study


class KillAt:
    """An ``on_event`` callback that SIGKILLs this process the N-th time the driver reaches a
    step: ``KillAt("claimed:2")`` dies at the second claim (steps: inserted, claimed, executed,
    recorded; ``"inserted"`` alone means the first time)."""

    def __init__(self, point: str) -> None:
        step, _, count = point.partition(":")
        self.step, self.remaining = step, int(count or 1)

    def __call__(self, step: str, key: str | None) -> None:
        if step == self.step:
            self.remaining -= 1
            if self.remaining <= 0:
                os.kill(os.getpid(), signal.SIGKILL)


def drive(spec_file: str, out: str, env: dict[str, str], kill_at: str | None = None) -> None:
    """A driver process: run the study to the end, or until ``kill_at`` (see :class:`KillAt`)
    or the test kills it."""
    os.environ.update(env)
    run_study(load_spec(spec_file), out=out, console=Console(quiet=True), progress=False,
              on_event=KillAt(kill_at) if kill_at else None)
