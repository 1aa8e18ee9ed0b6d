"""Cluster defaults: where the runs execute sizes their packs, Ray and Slurm ask for GPUs when
the runs are meant for CUDA, a Slurm job's time limit comes from a profile's estimate of its
runs, and a requeued job resumes instead of starting over."""

from __future__ import annotations

import logging
import math
import time

import pytest
from rich.console import Console
from support import SYNTHETIC

import hiddencost.study.driver as driver_module
from hiddencost.config import Environment
from hiddencost.errors import HiddenCostError
from hiddencost.study.driver import build_tasks, run_study
from hiddencost.study.executors import (
    DEFAULT_TIMEOUT_MIN,
    LocalExecutor,
    RayExecutor,
    SlurmExecutor,
)
from hiddencost.study.layout import StudyPaths
from hiddencost.study.plan import Profile, Throughput, estimate_s, write_profile
from hiddencost.study.spec import PlannedRun, expand, parse_spec
from hiddencost.study.worker import ResumableChunk, Task, execute_chunk

SPEC = f"""
name: cluster
method: [ilm, flm]
n_shot: [1, full]
params: {{epochs: 2}}
runner: {SYNTHETIC}
"""
#: digits: 10 classes, 1,347 training / 450 test images; ILM maps every epoch.
TINY = {"model": "efficientnet_lite0", "dataset": "digits", "method": "ilm", "epochs": 3,
        "canvas_size": 48, "inner_size": 16, "device": "cuda", "seed": 0}


def _tasks(tmp_path, identities: list[dict]) -> list[Task]:
    runs = [PlannedRun(f"k{i}", identity) for i, identity in enumerate(identities)]
    spec = parse_spec("name: t\n")
    return build_tasks(runs, StudyPaths.resolve(spec, tmp_path, None), Environment(), None)


def test_the_executor_not_the_driver_sizes_the_packs(tmp_path, monkeypatch):
    seen = []
    real = driver_module.form_packs

    def spy(tasks, size, pack_full_data=False):
        seen.append((size, pack_full_data))
        return real(tasks, size, pack_full_data)

    class OnGpus(LocalExecutor):  # a driver on a CPU login node, its runs on GPUs
        def runs_on_gpu(self, device):
            return True

    monkeypatch.setattr(driver_module, "form_packs", spy)
    spec = parse_spec(SPEC)
    run_study(spec, out=tmp_path / "a", executor=OnGpus(), console=Console(quiet=True))
    run_study(spec, out=tmp_path / "b", console=Console(quiet=True))  # here: a CPU
    run_study(spec, out=tmp_path / "c", console=Console(quiet=True), pack=3)
    assert seen == [(9, False), (1, False), (3, True)]


def test_local_runs_are_on_a_gpu_only_for_cuda_here():
    local = LocalExecutor()
    assert local.runs_on_gpu("cuda:1") and not local.runs_on_gpu("cpu")
    assert local.runs_on_gpu("auto") is False  # this machine has no CUDA


def test_ray_tasks_ask_for_a_gpu_when_their_runs_are_meant_for_cuda():
    assert RayExecutor().task_gpus("cpu") == 0 and not RayExecutor().runs_on_gpu("cpu")
    assert RayExecutor().task_gpus("cuda") == 1 and RayExecutor().runs_on_gpu("cuda:0")
    assert RayExecutor(num_gpus=0.25).task_gpus("cuda") == 0.25
    with pytest.raises(HiddenCostError, match=r"--device cuda with --num-gpus 0: Ray would "
                       "give the runs no GPU"):
        RayExecutor(num_gpus=0).task_gpus("cuda")


def test_slurm_jobs_ask_for_a_gpu_when_their_runs_are_meant_for_cuda():
    def gpus(device, given=None):
        return SlurmExecutor("f", gpus_per_node=given).job_gpus(device)

    assert (gpus("cpu"), gpus("auto"), gpus("cuda"), gpus("auto", 2)) == (0, 0, 1, 2)
    with pytest.raises(HiddenCostError, match="--device cuda with --gpus-per-node 0"):
        gpus("cuda", 0)


def test_a_slurm_time_limit_is_the_profiles_estimate_with_a_margin(tmp_path):
    profile = Profile({"efficientnet_lite0@48": {16: Throughput(10.0, 100.0)}},
                      {"2": 4.0, "full": 1.0})
    path = write_profile(profile, tmp_path / "gpu.json")
    full = _tasks(tmp_path, [{**TINY, "n_shot": None}])
    shots = _tasks(tmp_path, [{**TINY, "n_shot": 2, "seed": s} for s in (0, 1)])
    # full data: 3·1347 trained at 10/s, 3·1347 mapped + 450 tested at 100/s, no packing gain
    assert estimate_s([t.config for t in full], profile) == pytest.approx(404.1 + 44.91)
    # 2-shot (n = 20), two runs packed at 4×: 2 · (60/10 + 510/100) / 4
    assert estimate_s([t.config for t in shots], profile) == pytest.approx(2 * 11.1 / 4)
    slurm = SlurmExecutor(tmp_path, profile=path)
    chunks = [[full], [shots]]
    assert slurm.time_limit(chunks) == math.ceil(449.01 * 1.5 / 60) + 10 == 22
    assert SlurmExecutor(tmp_path, profile=path, timeout_min=7).time_limit(chunks) == 7


def test_without_an_estimate_a_slurm_job_gets_the_default_with_a_notice(tmp_path, caplog):
    other = write_profile(Profile({"resnet50@224": {16: Throughput(1.0, 1.0)}}),
                          tmp_path / "other.json")
    chunks = [[_tasks(tmp_path, [{**TINY, "n_shot": 2}])]]
    with caplog.at_level(logging.WARNING):
        assert SlurmExecutor(tmp_path).time_limit(chunks) == DEFAULT_TIMEOUT_MIN
        assert SlurmExecutor(tmp_path, profile=other).time_limit(chunks) == DEFAULT_TIMEOUT_MIN
    assert "no --profile to estimate it from" in caplog.text
    assert "lacks a model or dataset of these runs" in caplog.text


def test_a_requeued_slurm_job_runs_only_what_it_had_not_finished(tmp_path):
    spec = parse_spec(SPEC)
    tasks = build_tasks(expand(spec), StudyPaths.resolve(spec, tmp_path, None),
                        Environment(device="cpu"), spec.runner)
    packs = [[t] for t in tasks]
    body = ResumableChunk()
    first = body(packs[:2])  # the job ran two runs before it was pre-empted
    requeued = body.checkpoint(packs)
    assert requeued.function is body and requeued.args == (packs,)
    time.sleep(0.01)
    again = requeued.result()  # what the requeued job returns: all four
    assert [o.key for o in again] == [t.key for t in tasks]
    assert again[:2] == first  # not run again: the same outcomes, same times
    assert all(o.status == "done" and o.started_at > first[1].finished_at for o in again[2:])
    assert execute_chunk(packs) == again


def test_cuda_runs_on_ray_without_gpus_are_refused_before_the_store_is_touched(tmp_path):
    with pytest.raises(HiddenCostError, match="--num-gpus 0"):
        run_study(parse_spec(SPEC), out=tmp_path, executor="ray",
                  executor_options={"num_gpus": 0}, environment={"device": "cuda"})
    assert not (tmp_path / "study.sqlite").exists()
