"""``hiddencost study …``: run, inspect and export studies (a typer sub-app).

Mount it on the main app with ``app.add_typer(study_app, name="study")``. Like the rest of the
CLI, every command turns :class:`~hiddencost.errors.HiddenCostError` into one line on stderr
and exit status 2; Ctrl-C (or SIGTERM) stops a study cleanly with exit status 130, and running
the same command again finishes the missing runs.
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

from hiddencost.cli_errors import friendly_errors
from hiddencost.errors import HiddenCostError
from hiddencost.study.fidelity import DEFAULT_FIDELITY_IMAGES

study_app = typer.Typer(
    help="Grids of runs: run (resumable; local, Ray or Slurm), status, export, presets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()

SpecArg = Annotated[str, typer.Argument(help="A study YAML file, or a preset name "
                                             "(see `hiddencost study list-presets`).")]
OutOpt = Annotated[Path | None, typer.Option(
    help="The study's output folder (default: hiddencost-results/<name>).")]
StoreOpt = Annotated[str | None, typer.Option(
    help="The results store: a SQLite file or sqlite:///PATH (default: <out>/study.sqlite).")]


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


@study_app.command("run")
@friendly_errors
def run_cmd(
    spec: SpecArg,
    out: OutOpt = None,
    store: StoreOpt = None,
    executor: Annotated[str, typer.Option(help="local, ray or slurm.")] = "local",
    retry_failed: Annotated[bool, typer.Option(help="Run failed runs again.")] = False,
    reclaim_all: Annotated[bool, typer.Option(
        help="Also reclaim runs marked running by drivers on other hosts.")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (not identity).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    download: Annotated[bool | None, typer.Option(
        help="Let torchvision download datasets.")] = None,
    checkpoint_root: Annotated[Path | None, typer.Option(
        help="Folder of the checkpoints that the spec names by relative path.")] = None,
    max_runs: Annotated[int | None, typer.Option(help="Execute at most N runs now.")] = None,
    dry_run: Annotated[bool, typer.Option(help="Show what would run, run nothing.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    fidelity: Annotated[bool | None, typer.Option(
        help="After the runs, record the upstream fidelity of each compressed backbone in "
             "<out>/fidelity.json (default: on, off for a custom runner).")] = None,
    fidelity_images: Annotated[int, typer.Option(
        min=2, help="Fidelity: test images per dataset.")] = DEFAULT_FIDELITY_IMAGES,
    address: Annotated[str | None, typer.Option(
        help="Ray: cluster address (default: RAY_ADDRESS, else a local Ray).")] = None,
    num_cpus: Annotated[float, typer.Option(help="Ray: CPUs per run.")] = 1.0,
    num_gpus: Annotated[float, typer.Option(help="Ray: GPUs per run (0.25 = a quarter).")] = 0.0,
    max_in_flight: Annotated[int | None, typer.Option(
        help="Ray: runs submitted at once (default: 2 × the runs that fit).")] = None,
    slurm_cluster: Annotated[str | None, typer.Option(
        help="Slurm: slurm, local or debug (submitit) (default: detect).")] = None,
    partition: Annotated[str | None, typer.Option(help="Slurm: partition.")] = None,
    timeout_min: Annotated[int, typer.Option(help="Slurm: minutes per array job.")] = 60,
    gpus_per_node: Annotated[int, typer.Option(help="Slurm: GPUs per array job.")] = 0,
    cpus_per_task: Annotated[int | None, typer.Option(help="Slurm: CPUs per job.")] = None,
    mem_gb: Annotated[float | None, typer.Option(help="Slurm: memory per job (GB).")] = None,
    array_parallelism: Annotated[int, typer.Option(
        help="Slurm: array jobs running at once.")] = 256,
    runs_per_job: Annotated[int, typer.Option(help="Slurm: runs per array job.")] = 1,
    poll_s: Annotated[float, typer.Option(help="Slurm: seconds between result checks.")] = 5.0,
) -> None:
    """Run every missing run of a study; safe to interrupt and run again.

    Exit status 0 when every run is done, 1 when some runs failed (see `status --failed`,
    rerun them with --retry-failed), 2 for bad input, 130 when interrupted.
    """
    from hiddencost.study.driver import run_study
    from hiddencost.study.results import study_status
    from hiddencost.study.spec import load_spec

    study = load_spec(spec)
    if dry_run:
        status = study_status(study, out, store)
        c = status.counts
        console.print(f"study {study.name}: {status.total} runs · {c['done']} done · "
                      f"{c['failed']} failed · {c['pending'] + c['running']} to run "
                      f"(store {status.store})", highlight=False)
        return
    options: dict[str, Any] = {}
    if executor == "ray":
        options = {"address": address, "num_cpus": num_cpus, "num_gpus": num_gpus,
                   "max_in_flight": max_in_flight}
    elif executor == "slurm":
        options = {"cluster": slurm_cluster, "partition": partition, "timeout_min": timeout_min,
                   "gpus_per_node": gpus_per_node, "cpus_per_task": cpus_per_task,
                   "mem_gb": mem_gb, "array_parallelism": array_parallelism,
                   "runs_per_job": runs_per_job, "poll_s": poll_s}
    environment = {"device": device, "data_root": str(data_root) if data_root else None,
                   "download": download}
    with _sigterm_interrupts():
        report = run_study(
            study, out=out, store=store, executor=executor, executor_options=options,
            retry_failed=retry_failed, reclaim_all=reclaim_all, environment=environment,
            checkpoint_root=str(checkpoint_root) if checkpoint_root else None,
            max_runs=max_runs, console=console, progress=progress, fidelity=fidelity,
            fidelity_images=fidelity_images)
    if report.counts["failed"]:
        raise typer.Exit(1)


@study_app.command("fidelity")
@friendly_errors
def fidelity_cmd(
    spec: SpecArg,
    out: OutOpt = None,
    store: StoreOpt = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    download: Annotated[bool | None, typer.Option(
        help="Allow downloads (datasets, checkpoint URLs).")] = None,
    checkpoint_root: Annotated[Path | None, typer.Option(
        help="Folder of the checkpoints that the spec names by relative path.")] = None,
    images: Annotated[int, typer.Option(
        min=2, help="Test images per dataset.")] = DEFAULT_FIDELITY_IMAGES,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Record the upstream fidelity of the study's compressed backbones (<out>/fidelity.json).

    `study run` does this after its runs; run it alone where the models should run (e.g. a GPU
    node) after `study run --no-fidelity`. Cached: measured entries are not measured again.
    """
    from hiddencost.study.driver import study_fidelity
    from hiddencost.study.spec import load_spec

    entries = study_fidelity(
        load_spec(spec), out=out, store=store,
        environment={"device": device, "data_root": str(data_root) if data_root else None,
                     "download": download},
        checkpoint_root=str(checkpoint_root) if checkpoint_root else None,
        images_per_dataset=images, console=console, progress=progress)
    if not entries:
        console.print("no compressed backbone has a done run: nothing to measure",
                      highlight=False)
        return
    table = Table(title="upstream fidelity (KL(p_dense || p_compressed), nats)")
    for col in ("compression", "dataset", "images", "top-1 agreement", "mean KL", "error"):
        table.add_column(col, justify="left" if col in ("compression", "error") else "right",
                         no_wrap=col != "error")
    for e in entries:
        ok = e.get("error") is None
        table.add_row(str(e["compression"]), str(e["dataset"]),
                      str(e["n_images"]) if ok else "-",
                      f"{e['top1_agreement']:.3f}" if ok else "-",
                      f"{e['mean_kl']:.3f}" if ok else "-", "" if ok else str(e["error"]))
    console.print(table)


@study_app.command("status")
@friendly_errors
def status_cmd(
    spec: SpecArg,
    out: OutOpt = None,
    store: StoreOpt = None,
    failed: Annotated[bool, typer.Option("--failed", help="List failed runs and errors.")] = False,
) -> None:
    """Done / failed / running / pending counts and an ETA."""
    from hiddencost.study.results import format_duration, study_status
    from hiddencost.study.spec import load_spec

    status = study_status(load_spec(spec), out, store)
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


@study_app.command("export")
@friendly_errors
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
    from hiddencost.study.driver import StudyPaths
    from hiddencost.study.results import export_study
    from hiddencost.study.spec import load_spec
    from hiddencost.study.store import STATUSES

    study = load_spec(spec)
    for s in status or ():
        if s not in STATUSES:
            raise HiddenCostError(f"unknown status {s!r}; use {', '.join(STATUSES)}")
    path = output or StudyPaths.resolve(study, out, store).root / f"{study.name}.{format}"
    n = export_study(study, path, format, out, store, tuple(status) if status else None)
    console.print(f"wrote {n} rows to {path}", highlight=False)


@study_app.command("list-presets")
@friendly_errors
def list_presets_cmd() -> None:
    """The shipped study presets."""
    from hiddencost.study.catalog import load_preset, preset_names
    from hiddencost.study.spec import expand

    table = Table(title="study presets")
    for col in ("name", "runs", "description"):
        table.add_column(col, justify="right" if col == "runs" else "left")
    for name in preset_names():
        spec = load_preset(name)
        table.add_row(name, str(len(expand(spec))), spec.description)
    console.print(table)


@study_app.command("show-preset")
@friendly_errors
def show_preset_cmd(name: Annotated[str, typer.Argument(help="A preset name.")]) -> None:
    """Print a preset as YAML, to copy into a study file and edit."""
    from hiddencost.study.catalog import load_preset

    print(load_preset(name).to_yaml(), end="")
