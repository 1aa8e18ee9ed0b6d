"""Studies at scale: grid specs, a results store, kill-safe resume, local / Ray / Slurm.

- :mod:`~hiddencost.study.spec`: YAML study files, validation, expansion into runs.
- :mod:`~hiddencost.study.identity`: run keys (hash of the resolved configuration).
- :mod:`~hiddencost.study.store`: the results store (SQLite) and the reclaim rule.
- :mod:`~hiddencost.study.layout`: a study's output folder, store and artifact folders.
- :mod:`~hiddencost.study.worker`: what a worker does with one run.
- :mod:`~hiddencost.study.executors`: the executor registry: local, Ray and Slurm (submitit).
- :mod:`~hiddencost.study.driver`: :func:`run_study`, the resumable driver.
- :mod:`~hiddencost.study.results`: reading a study back (its done runs and their records),
  status and CSV / Parquet export.
- :mod:`~hiddencost.study.catalog`: presets (the quickstart and the paper's grids) and
  :func:`load_spec` (a study file or a preset).

The ``hiddencost study`` commands live in :mod:`hiddencost.cli.study`. Import what you use from
its module (``from hiddencost.study.driver import run_study``): the package itself imports
nothing, so loading one module never loads the others.
"""
