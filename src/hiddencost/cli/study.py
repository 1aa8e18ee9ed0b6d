"""``hiddencost study …``: run, inspect and export studies (mounted as the ``study`` group).

Like the rest of the CLI, every command turns :class:`~hiddencost.errors.HiddenCostError` into
one line on stderr and exit status 2; Ctrl-C (or SIGTERM) stops a study cleanly with exit status
130, and running the same command again finishes the missing runs.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

import hiddencost.cli.common as common
from hiddencost.config import Precision
from hiddencost.errors import HiddenCostError
from hiddencost.study.catalog import load_preset, load_spec, preset_names
from hiddencost.study.driver import (
    build_tasks,
    check_max_runs,
    resolve_environment,
    run_study,
    study_fidelity,
)
from hiddencost.study.executors import EXECUTORS, executor_options
from hiddencost.study.fidelity_file import DEFAULT_FIDELITY_IMAGES
from hiddencost.study.layout import RESULT_FILE, StudyPaths
from hiddencost.study.packing import default_pack_size, form_packs, local_gpu
from hiddencost.study.plan import Plan, Profile, make_plan, measure_throughput, read_profile
from hiddencost.study.results import export_study, format_duration, read_study, study_status
from hiddencost.study.spec import StudySpec, expand
from hiddencost.study.store import STATUSES

app = common.command_app(
    "Grids of runs: run (resumable; local, Ray or Slurm), status, export, presets.")
console = Console()

SpecArg = Annotated[str, typer.Argument(help="A study YAML file, or a preset name "
                                             "(see `hiddencost study list-presets`).")]
OutOpt = Annotated[Path | None, typer.Option(
    help="The study's output folder (default: hiddencost-results/<name>).")]
StoreOpt = Annotated[str | None, typer.Option(
    help="The results store: a SQLite file or sqlite:///PATH (default: <out>/study.sqlite).")]
# where and how runs execute (run and fidelity): not part of a run's identity
DeviceOpt = Annotated[str | None, typer.Option(help="auto, cpu or cuda (not identity).")]
StudyPrecisionOpt = Annotated[Precision | None, typer.Option(
    "--precision", help="Training-step precision: auto, fp32 or bf16 (not identity; a store "
                        "holds one precision).")]
DownloadOpt = Annotated[bool | None, typer.Option(
    help="Allow downloads (datasets, checkpoint URLs).")]
CheckpointRootOpt = Annotated[Path | None, typer.Option(
    help="Folder of the checkpoints that the spec names by relative path.")]
# `study run`
ExecutorOpt = Annotated[str, typer.Option(help=f"{', '.join(EXECUTORS)}.")]
RetryOpt = Annotated[bool, typer.Option(help="Run failed runs again.")]
ReclaimOpt = Annotated[bool, typer.Option(
    help="Also reclaim runs marked running by drivers on other hosts.")]
MaxRunsOpt = Annotated[int | None, typer.Option(help="Execute at most N (≥ 1) runs now.")]
DryRunOpt = Annotated[bool, typer.Option(help="Show what would run, run nothing.")]
VerifyOpt = Annotated[bool, typer.Option(
    help="Run again the done runs whose result.json is missing or does not read back as a "
         "record (deleted artifacts, a garbled file, a symbolic link).")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]
PackOpt = Annotated[int | None, typer.Option(
    min=1, help="Train up to N runs that share backbone, data and schedule through one "
                "backbone pass (default: 1 where the runs execute on a CPU, 9 on a GPU; "
                "full-data runs alone).")]
FidelityOpt = Annotated[bool | None, typer.Option(
    help="After the runs, record the upstream fidelity of each compressed backbone in "
         "<out>/fidelity.json (default: on, off for a custom runner).")]
FidelityImagesOpt = Annotated[int, typer.Option(
    min=2, help="Fidelity: test images per dataset.")]
# executor options: `study run` hands each executor those it takes (executor_options)
AddressOpt = Annotated[str | None, typer.Option(
    help="Ray: cluster address (default: RAY_ADDRESS, else a local Ray).")]
NumCpusOpt = Annotated[float, typer.Option(help="Ray: CPUs per run.")]
NumGpusOpt = Annotated[float | None, typer.Option(
    help="Ray: GPUs per task, i.e. per pack (0.25 = a quarter; default: 1 for --device cuda, "
         "and for auto when the cluster has GPUs, else 0).")]
MaxInFlightOpt = Annotated[int | None, typer.Option(
    help="Ray: runs submitted at once (default: 2 × the runs that fit).")]
SlurmClusterOpt = Annotated[str | None, typer.Option(
    help="Slurm: slurm, local or debug (submitit) (default: detect).")]
PartitionOpt = Annotated[str | None, typer.Option(help="Slurm: partition.")]
TimeoutMinOpt = Annotated[int | None, typer.Option(
    help="Slurm: minutes per array job (default: the job's estimate from --profile × 1.5 + 10, "
         "else 60; a job out of time is requeued and its runs resume).")]
GpusPerNodeOpt = Annotated[int | None, typer.Option(
    help="Slurm: GPUs per array job (default: 1 for --device cuda, else 0).")]
SlurmProfileOpt = Annotated[Path | None, typer.Option(
    "--profile", help="Slurm: a GPU profile (benchmarks/bench_gpu.py) to set the time limit.")]
MaxRequeuesOpt = Annotated[int, typer.Option(
    help="Slurm: requeues of a pre-empted or timed-out job.")]
CpusPerTaskOpt = Annotated[int | None, typer.Option(help="Slurm: CPUs per job.")]
MemGbOpt = Annotated[float | None, typer.Option(help="Slurm: memory per job (GB).")]
ArrayParallelismOpt = Annotated[int, typer.Option(help="Slurm: array jobs running at once.")]
RunsPerJobOpt = Annotated[int, typer.Option(help="Slurm: runs per array job.")]
PollOpt = Annotated[float, typer.Option(help="Slurm: seconds between result checks.")]


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Treat SIGTERM (kill, Slurm preemption) like Ctrl-C while a study runs."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _environment(device: str | None, data_root: Path | None, download: bool | None,
                 precision: Precision | None = None) -> dict[str, Any]:
    """The environment options as ``run_study``'s ``environment`` (None = the spec's)."""
    return {"device": device, "data_root": str(data_root) if data_root else None,
            "download": download, "precision": precision}


def _print_dry_run(study: StudySpec, out: Path | None, store: str | None) -> None:
    """What `study run` would do: the study's counts, from the store, without running."""
    status = study_status(study, out, store)
    c = status.counts
    console.print(f"study {study.name}: {status.total} runs · {c['done']} done · "
                  f"{c['failed']} failed · {c['pending'] + c['running']} to run "
                  f"(store {status.store})", highlight=False)


@common.command(app, "run")
def run_cmd(
    spec: SpecArg, out: OutOpt = None, store: StoreOpt = None, executor: ExecutorOpt = "local",
    retry_failed: RetryOpt = False, reclaim_all: ReclaimOpt = False,
    device: DeviceOpt = None, precision: StudyPrecisionOpt = None,
    data_root: common.DataRootOpt = None, download: DownloadOpt = None,
    checkpoint_root: CheckpointRootOpt = None, max_runs: MaxRunsOpt = None,
    dry_run: DryRunOpt = False, progress: ProgressOpt = True, fidelity: FidelityOpt = None,
    verify: VerifyOpt = False, pack: PackOpt = None,
    fidelity_images: FidelityImagesOpt = DEFAULT_FIDELITY_IMAGES,
    address: AddressOpt = None, num_cpus: NumCpusOpt = 1.0, num_gpus: NumGpusOpt = None,
    max_in_flight: MaxInFlightOpt = None, slurm_cluster: SlurmClusterOpt = None,
    partition: PartitionOpt = None, timeout_min: TimeoutMinOpt = None,
    gpus_per_node: GpusPerNodeOpt = None, cpus_per_task: CpusPerTaskOpt = None,
    mem_gb: MemGbOpt = None, array_parallelism: ArrayParallelismOpt = 256,
    runs_per_job: RunsPerJobOpt = 1, poll_s: PollOpt = 5.0, profile: SlurmProfileOpt = None,
    max_requeues: MaxRequeuesOpt = 10,
) -> None:
    """Run every missing run of a study; safe to interrupt and run again.

    Exit status 0 when every run is done (or --max-runs were executed), 1 when some runs failed
    (see `status --failed`, rerun them with --retry-failed), 2 for bad input, 3 when runs are
    left undone (held by another driver on the store), 130 when interrupted.
    """
    common.output_folder(out)
    check_max_runs(max_runs)
    study = load_spec(spec)
    if dry_run:
        _print_dry_run(study, out, store)
        return
    options = executor_options(executor, {
        "address": address, "num_cpus": num_cpus, "num_gpus": num_gpus,
        "max_in_flight": max_in_flight, "cluster": slurm_cluster, "partition": partition,
        "timeout_min": timeout_min, "gpus_per_node": gpus_per_node,
        "cpus_per_task": cpus_per_task, "mem_gb": mem_gb,
        "array_parallelism": array_parallelism, "runs_per_job": runs_per_job,
        "poll_s": poll_s, "profile": profile, "max_requeues": max_requeues})
    with _sigterm_interrupts():
        report = run_study(
            study, out=out, store=store, executor=executor, executor_options=options,
            retry_failed=retry_failed, reclaim_all=reclaim_all,
            environment=_environment(device, data_root, download, precision),
            checkpoint_root=str(checkpoint_root) if checkpoint_root else None,
            max_runs=max_runs, console=console, progress=progress, fidelity=fidelity,
            fidelity_images=fidelity_images, verify=verify, pack=pack)
    if report.counts["failed"]:
        raise typer.Exit(1)
    not_run = report.counts["pending"] + report.counts["running"]
    if not_run and max_runs is None:
        console.print(f"{not_run} runs are not done: another driver holds them (see `study "
                      "status`); run the same command again when it has finished",
                      highlight=False)
        raise typer.Exit(3)


@common.command(app, "plan")
def plan_cmd(
    spec: SpecArg, out: OutOpt = None, store: StoreOpt = None, pack: PackOpt = None,
    gpus: Annotated[int, typer.Option(min=1, help="Devices the runs would share.")] = 1,
    profile: Annotated[Path | None, typer.Option(
        help="Recorded throughputs (JSON, see hiddencost.study.plan) instead of timing a few "
             "steps here.")] = None,
    device: DeviceOpt = None,
) -> None:
    """Estimate the device time of the runs still to do: counts by model, dataset, method and
    N-shot, the packs they would form, and the wall time on --gpus devices."""
    study = load_spec(spec)
    runs = read_study(study, out, store)
    todo = [r for r in runs.runs if runs.status(r) != "done"]
    env = resolve_environment(study, _environment(device, None, None))
    measured = read_profile(profile) if profile else None
    # packs are sized for the device that will run them: the profile's GPU, else this one
    on_gpu = measured is not None and measured.device not in (None, "cpu")
    size = pack if pack is not None else default_pack_size(on_gpu or local_gpu(env.device))
    packs = form_packs(build_tasks(todo, runs.paths, env, study.runner), size,
                       pack_full_data=pack is not None)
    dev = env.device
    with console.status("timing a few backbone steps…"):
        plan = make_plan(todo, len(packs), gpus, measured,
                         measure=lambda key: measure_throughput(key, dev,
                                                                precision=env.precision))
    table = Table(title=f"{study.name}: {plan.total_runs} runs to do", title_justify="left")
    for name in ("model", "dataset", "method", "N-shot", "runs", "device time"):
        table.add_column(name, justify="right" if name in ("runs", "device time") else "left")
    for r in plan.rows:
        table.add_row(r["model"], r["dataset"], r["method"], str(r["n_shot"]), str(r["runs"]),
                      format_duration(r["device_s"]))
    console.print(table)
    source = _plan_source(plan, profile, measured, dev)
    console.print(f"device time {format_duration(plan.device_s)} ({source}); {plan.packs} "
                  f"packs of up to {size}; wall time on {gpus} device(s) ≥ "
                  f"{format_duration(plan.wall_s)} (packing gain {plan.pack_speedup:.2f}× on "
                  "VP)", highlight=False, soft_wrap=True)
    if plan.unknown:
        console.print(f"not estimated (split sizes unknown until loaded): "
                      f"{', '.join(plan.unknown)}", highlight=False)


def _plan_source(plan: Plan, path: Path | None, profile: Profile | None, device: str) -> str:
    """Where the plan's throughputs come from: the profile, this machine, or (a profile that
    lacks some architectures) which from each."""
    here = f"timed on this machine ({device})"
    if profile is None:
        return here
    source = f"profile {path}: {profile.device}, {profile.precision}"
    if not plan.timed_here:
        return source
    return (f"{source} for {', '.join(plan.profiled) or 'none'}; {here} for "
            f"{', '.join(plan.timed_here)}, which the profile lacks")


@common.command(app, "fidelity")
def fidelity_cmd(
    spec: SpecArg,
    out: OutOpt = None,
    store: StoreOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    data_root: common.DataRootOpt = None,
    download: DownloadOpt = None,
    checkpoint_root: CheckpointRootOpt = None,
    images: Annotated[int, typer.Option(
        min=2, help="Test images per dataset.")] = DEFAULT_FIDELITY_IMAGES,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Record the upstream fidelity of the study's compressed backbones (<out>/fidelity.json).

    `study run` does this after its runs; run it alone where the models should run (e.g. a GPU
    node) after `study run --no-fidelity`. Cached: measured entries are not measured again.
    """
    with _sigterm_interrupts():
        entries = study_fidelity(
            load_spec(spec), out=out, store=store,
            environment=_environment(device, data_root, download),
            checkpoint_root=str(checkpoint_root) if checkpoint_root else None,
            images_per_dataset=images, console=console, progress=progress)
    if not entries:
        console.print("no compressed backbone has a done run: nothing to measure",
                      highlight=False)
        return
    from hiddencost.fidelity import print_fidelity_table  # lazy: torch
    from hiddencost.study.fidelity import fidelity_rows  # lazy: torch

    print_fidelity_table(console, fidelity_rows(entries), "upstream fidelity")


@common.command(app, "status")
def status_cmd(
    spec: SpecArg,
    out: OutOpt = None,
    store: StoreOpt = None,
    failed: Annotated[bool, typer.Option("--failed", help="List failed runs and errors.")] = False,
) -> None:
    """Done / failed / running / pending counts and an ETA."""
    status = study_status(load_spec(spec, check=False), out, store)  # reading: no torch
    c = status.counts
    table = Table(title=f"study {status.name}")
    for col in ("runs", "done", "failed", "running", "pending", "mean run", "ETA"):
        table.add_column(col, justify="right")
    table.add_row(str(status.total), str(c["done"]), str(c["failed"]), str(c["running"]),
                  str(c["pending"]), format_duration(status.mean_run_s),
                  format_duration(status.eta_s) if c["pending"] + c["running"] else "-")
    console.print(table)
    if not status.store_exists:
        console.print(f"no results yet ({status.store} does not exist)", highlight=False)
    else:
        console.print(f"store {status.store}; ETA = mean run time × runs left, one at a time",
                      highlight=False)
    if failed:
        for key, label, error in status.failed:
            console.print(f"[red]failed[/] {key} {label}: {error}", highlight=False,
                          soft_wrap=True)
        for key, label, owner in status.running:
            console.print(f"running {key} {label} (driver {owner})", highlight=False)


@common.command(app, "export")
def export_cmd(
    spec: SpecArg,
    format: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    output: Annotated[Path | None, typer.Option(
        help="The file to write (default: <out>/<name>.<format>).")] = None,
    out: OutOpt = None,
    store: StoreOpt = None,
    status: Annotated[list[str] | None, typer.Option(
        help="Only runs with this status (repeatable).")] = None,
) -> None:
    """One row per run: configuration, compression tags, metrics, status, timings."""
    study = load_spec(spec, check=False)  # reading results: no resolution, no torch
    for s in status or ():
        if s not in STATUSES:
            raise HiddenCostError(f"unknown status {s!r}; use {', '.join(STATUSES)}")
    path = output or StudyPaths.resolve(study, out, store).root / f"{study.name}.{format}"
    rows = export_study(study, path, format, out, store, tuple(status) if status else None)
    console.print(f"wrote {len(rows)} rows to {path}", highlight=False)
    missing = sum(r["result_missing"] for r in rows)
    if missing:
        console.print(f"[yellow]warning:[/] {missing} done runs have no {RESULT_FILE} "
                      "(column result_missing); `study run --verify` runs them again",
                      highlight=False)


@common.command(app, "migrate")
def migrate_cmd(spec: SpecArg, out: OutOpt = None, store: StoreOpt = None) -> None:
    """Re-key a store written by an older hiddencost (its runs are kept, nothing is re-run);
    `study run` does this by itself, this is for reading results without running."""
    from hiddencost.study.migrate import rekey_store  # lazy: re-keying resolves (torch)

    paths = StudyPaths.resolve(load_spec(spec, check=False), out, store)
    if not paths.location.exists():
        raise HiddenCostError(f"results store {paths.store} does not exist")
    with paths.writable(), paths.location.open() as db:
        if not db.needs_rekey:
            console.print(f"{paths.store}: already current, nothing to do", highlight=False)
            return
        done = rekey_store(db, paths.artifacts)
    console.print(f"{paths.store}: {done.moved} runs re-keyed, {done.merged} merged, "
                  f"{len(done.kept)} left as they were", highlight=False)
    for key, why in done.kept.items():
        console.print(f"  kept {key}: {why}", highlight=False, soft_wrap=True)


@common.command(app, "list-presets")
def list_presets_cmd() -> None:
    """The shipped study presets."""
    table = Table(title="study presets")
    for col in ("name", "runs", "description"):
        table.add_column(col, justify="right" if col == "runs" else "left")
    for name in preset_names():
        spec = load_preset(name)
        table.add_row(name, str(len(expand(spec))), spec.description)
    console.print(table)


@common.command(app, "show-preset")
def show_preset_cmd(name: Annotated[str, typer.Argument(help="A preset name.")]) -> None:
    """Print a preset as YAML, to copy into a study file and edit."""
    print(load_preset(name).to_yaml(), end="")
