"""The ``hiddencost`` command line: a thin layer over the library.

One module per command group, each a typer app mounted here the same way: ``run`` (one
experiment, the quickstart, the registries), ``zoo`` (the zoo, ``compress``, ``fidelity``),
``report``, the ``study`` group and ``card`` (score cards and their leaderboard). Every command
turns :class:`~hiddencost.errors.HiddenCostError` into one line on stderr and exit status 2,
never a traceback (:func:`hiddencost.cli.common.friendly_errors`).
"""

from __future__ import annotations

from hiddencost.cli import card, report, run, study, zoo
from hiddencost.cli.common import command_app

app = command_app(
    "Measure the hidden cost of model compression for visual prompting and linear probing.")
for _group in (run, zoo, report):
    app.add_typer(_group.app)
app.add_typer(study.app, name="study")
app.add_typer(card.app, name="card")
