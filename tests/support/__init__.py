"""Test support shared by the test modules (``tests/`` is on ``sys.path`` under pytest):
synthetic runs and records, and fault injection for study drivers.

Studies name runners as ``path/to/file.py:function`` (see
:func:`hiddencost.study.worker.resolve_runner`), so test specs name the synthetic runner by the
absolute path of its file, :data:`SYNTHETIC`: every worker (this process, a forkserver child, a
Ray worker, a Slurm job, ``python -m hiddencost study``) loads it from there.
"""

from __future__ import annotations

from pathlib import Path

#: The ``runner:`` value of a study run by :func:`support.synthetic_runner.synthetic_runner`.
SYNTHETIC = f"{Path(__file__).parent / 'synthetic_runner.py'}:synthetic_runner"
