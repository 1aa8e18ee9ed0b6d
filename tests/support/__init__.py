"""Test support shared by the test modules (``tests/`` is on ``sys.path`` under pytest):
synthetic runs and records, and fault injection for study drivers.

Studies name runners by name (see :func:`hiddencost.study.worker.resolve_runner`); the
synthetic runner is :mod:`hiddencost_test_runners` (``tests/plugin``, installed by `make test`
with its ``hiddencost.runners`` entry point), so every worker (this process, a forkserver
child, a Ray worker, a Slurm job, ``python -m hiddencost study``) finds it as
:data:`SYNTHETIC`.
"""

from __future__ import annotations

#: The ``runner:`` value of a study run by :func:`hiddencost_test_runners.synthetic_runner`.
SYNTHETIC = "synthetic"
