"""The Ray executor on a real local Ray instance (``ray.init(num_cpus=2)``): the same spec
gives the same rows as the local executor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from rich.console import Console
from support import SYNTHETIC

import hiddencost
from hiddencost.study.catalog import load_preset
from hiddencost.study.driver import run_study
from hiddencost.study.results import export_rows
from hiddencost.study.spec import parse_spec

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install "
                                        "'hiddencost[ray]'); `make test` installs it")

SPEC = f"""
name: syn-ray
compression:
  - method: none
  - method: magnitude
    sparsity: [0.5, 0.9]
  - name: broken
    checkpoint: missing.pth
    levels: [1]
method: [ilm, lp]
n_shot: [1, full]
params: {{epochs: 2}}
runner: "{SYNTHETIC}"
"""
VOLATILE = ("elapsed_s", "started_at", "finished_at", "host", "wall_time_s", "artifacts")


@pytest.fixture(scope="module")
def local_ray():
    src = str(Path(hiddencost.__file__).parents[1])
    paths = os.environ.get("PYTHONPATH", "")
    with pytest.MonkeyPatch.context() as mp:
        if src not in paths.split(os.pathsep):  # Ray workers must import hiddencost
            mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, paths) if p))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        yield ray
        ray.shutdown()


def _stable(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


def test_ray_executor_matches_local(local_ray, tmp_path):
    spec = parse_spec(SPEC)
    quiet = Console(quiet=True)
    report = run_study(spec, out=tmp_path / "ray", executor="ray", console=quiet,
                       executor_options={"max_in_flight": 3, "num_cpus": 1})
    assert report.executed == 16
    assert report.counts == {"done": 12, "failed": 4, "pending": 0, "running": 0}
    local = run_study(spec, out=tmp_path / "local", console=quiet)
    assert local.counts == report.counts
    ray_rows = export_rows(spec, tmp_path / "ray")
    assert _stable(ray_rows) == _stable(export_rows(spec, tmp_path / "local"))
    assert all(r["error"].startswith("HiddenCostError: checkpoint file")
               for r in ray_rows if r["status"] == "failed")
    again = run_study(spec, out=tmp_path / "ray", executor="ray", console=quiet,
                      retry_failed=True)
    assert again.executed == 4 and again.counts["failed"] == 4


def test_fractional_gpus_need_gpus(local_ray, tmp_path):
    from hiddencost.errors import HiddenCostError

    spec = parse_spec(SPEC)
    with pytest.raises(HiddenCostError, match="the Ray cluster has no GPU"):
        run_study(spec, out=tmp_path, executor="ray", console=Console(quiet=True),
                  executor_options={"num_gpus": 0.25})


def test_auto_runs_ask_ray_for_a_gpu_only_when_the_cluster_has_one(local_ray):
    from hiddencost.study.executors import RayExecutor

    executor = RayExecutor()  # the cluster is already up: nothing started, nothing shut down
    assert executor.task_gpus("auto") == 0 and not executor.runs_on_gpu("auto")
    assert local_ray.is_initialized()


@pytest.mark.slow
def test_tiny_real_study_on_ray_matches_local(local_ray, tmp_path):
    """The genuine EfficientNet-Lite0 on digits (the `smoke` preset) on Ray and locally."""
    spec = load_preset("smoke")
    quiet = Console(quiet=True)
    env = {"device": "cpu"}
    # Ray gives a task as many BLAS/OpenMP threads as CPUs; with the local thread count the
    # floating-point reductions are the same and so are the results, bit for bit
    threads = torch.get_num_threads()
    on_ray = run_study(spec, out=tmp_path / "ray", executor="ray", console=quiet,
                       environment=env, executor_options={"num_cpus": min(threads, 2)},
                       fidelity=False)
    local = run_study(spec, out=tmp_path / "local", console=quiet, environment=env,
                      fidelity=False)
    assert on_ray.counts["done"] == local.counts["done"] == 2
    ray_rows, local_rows = export_rows(spec, tmp_path / "ray"), export_rows(spec,
                                                                            tmp_path / "local")
    for a, b in zip(ray_rows, local_rows, strict=True):
        for metric in ("accuracy", "ece", "nll", "brier", "final_train_loss", "sparsity"):
            if threads <= 2:
                assert a[metric] == b[metric], metric
            else:  # other thread counts change the summation order: last-bit differences
                assert a[metric] == pytest.approx(b[metric], rel=1e-5, abs=1e-7), metric
    print("\nray vs local:", [(a["compression"], a["accuracy"], a["nll"], b["accuracy"],
                                b["nll"]) for a, b in zip(ray_rows, local_rows, strict=True)])
