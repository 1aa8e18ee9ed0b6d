"""Upstream fidelity of every compressed backbone of a study, recorded beside its results.

After a study's runs, :func:`record_study_fidelity` measures each distinct compressed backbone
of the done runs against its dense original, once per dataset of the study, with
:func:`hiddencost.fidelity.cached_fidelity`: top-1 agreement and the mean
``KL(p_dense || p_compressed)`` over the source (ImageNet) classes, on the first
``images_per_dataset`` test images of that dataset at the backbone's own input size. No labels
are used, so this is the "upstream" quality of the compression measured on the images the
backbone is transferred to; the report sets it against the transfer cost.

A target (:class:`FidelityTarget`) is one compressed backbone × dataset; its runs are those
whose identity agrees on :data:`TARGET_FIELDS` (model, dataset, compression, checkpoint), and
:func:`target_key` hashes exactly those fields with the runs' own
:func:`hiddencost.study.identity.key_of_identity`. The dense original of a target is the
study's dense backbone: the spec's ``model`` with the runs' ``weights`` and the shared
``checkpoint`` of ``params``, uncompressed. For grid points (magnitude, quantize, ...) the
compressed model is that backbone compressed the way the runs compress it; for checkpoint
families it is the family's checkpoint file (its zoo name or a plain state dict).

Files in the study's output folder::

    fidelity.json       {"version", "study", "images_per_dataset", "entries": [...]}
    fidelity/           one cached result per entry (asking again is free)

Each entry is a :class:`FidelityEntry` as flat JSON: ``model`` (the compressed model name of
the runs), ``dataset``, the study tags ``family``, ``compression``, ``level``, ``unit``,
``dense_model``, ``images``, the fields of :class:`hiddencost.fidelity.FidelityMetrics`
(``n_images``, ``top1_agreement``, ``top5_agreement``, ``mean_kl``, ``max_kl``, ...) when
measured, and ``error``: None, or the one-line :class:`~hiddencost.errors.HiddenCostError`
that kept it from being measured (a missing checkpoint, say), which never stops the others.
Any other exception (a bug, CUDA out of memory) propagates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from hiddencost.backbones import WeightsMode, resolve_backbone_name
from hiddencost.compression import CompressionSpec
from hiddencost.data import dataset_info
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity import FidelityMetrics, FidelityRow, cached_fidelity
from hiddencost.progress import make_progress
from hiddencost.study.fidelity_file import (  # noqa: F401 (re-exported: the file's API)
    DEFAULT_FIDELITY_IMAGES,
    FIDELITY_CACHE,
    FIDELITY_FILE,
    FIDELITY_FILE_VERSION,
    FidelityEntry,
    read_fidelity,
    write_fidelity,
)
from hiddencost.study.identity import key_of_identity
from hiddencost.study.spec import (
    CompressionPoint,
    PlannedRun,
    StudySpec,
    checkpoint_location,
    compression_points,
    expand,
)

#: The run identity fields that all runs of one fidelity target share.
TARGET_FIELDS = ("model", "dataset", "compression", "checkpoint")


def target_key(identity: Mapping[str, Any]) -> str:
    """The key of the fidelity target of a run identity: ``key_of_identity`` of its
    :data:`TARGET_FIELDS` alone (so runs differing only in method, budget, seed share it)."""
    fields = {k: identity.get(k) for k in TARGET_FIELDS}
    if identity.get("mask") is not None:  # absent when unset, so older keys stay valid
        fields["mask"] = identity["mask"]
    return key_of_identity(fields)


def run_target_key(run: PlannedRun) -> str:
    """:func:`target_key` of a planned run."""
    return target_key(run.identity)


@dataclass(frozen=True)
class FidelityTarget:
    """One compressed backbone × dataset of a study, with its dense original."""

    model: str  # the compressed model name, as in the runs' identity
    dataset: str
    dense_model: str
    weights: WeightsMode
    dense_checkpoint: str | None
    compression: CompressionSpec | None  # grid points
    checkpoint: str | None  # checkpoint families (relative to checkpoint_root, as written)
    tags: dict[str, Any]
    mask: str | None
    key: str  # target_key of its runs

    def run_key(self) -> str:
        """The :func:`target_key` that the target's runs share."""
        return self.key


def entry_of(target: FidelityTarget, metrics: FidelityMetrics | None = None,
             error: str | None = None) -> FidelityEntry:
    """The entry of ``target`` with its ``metrics`` or its ``error``."""
    return FidelityEntry(model=target.model, dataset=target.dataset, tags=target.tags,
                         dense_model=target.dense_model, images=f"{target.dataset} test split",
                         metrics=metrics, error=error)


def _compressed_points(spec: StudySpec
                       ) -> dict[tuple[str, str], tuple[str, CompressionPoint, str | None]]:
    """(compressed model name, compression label) → (dense model name, point, dense
    checkpoint), for every compressed point of every backbone of ``spec``. The dense
    checkpoint is that of a checkpoint family named ``dense`` (UPop's uncompressed CLIP in
    ``paper-clip``) when the spec has one for the backbone, else the ``checkpoint`` of
    ``params``."""
    everything = compression_points(spec.compression)
    points = [p for p in everything if p.family != "dense"]
    dense_files = [p for p in everything if p.family == "dense" and p.checkpoint is not None]
    out: dict[tuple[str, str], tuple[str, CompressionPoint, str | None]] = {}
    for model in spec.model:
        entry = resolve_backbone_name(model)
        dense_file = next((p.checkpoint_for(model, entry.arch) for p in dense_files
                           if p.applies_to(model, entry.arch)), spec.params.get("checkpoint"))
        for point in points:
            name = resolve_backbone_name(point.model_for(model, entry.arch)).name
            out.setdefault((name, point.label), (entry.name, point, dense_file))
    return out


def _target(run: PlannedRun, dense_model: str, point: CompressionPoint,
            dense_checkpoint: str | None) -> FidelityTarget:
    c = run.identity
    family = point.checkpoint is not None or point.tag is not None  # its own model or file
    return FidelityTarget(
        model=c["model"], dataset=c["dataset"], dense_model=dense_model, weights=c["weights"],
        dense_checkpoint=dense_checkpoint, compression=None if family else point.spec,
        checkpoint=c.get("checkpoint") if family else None, tags=point.tags(),
        mask=c.get("mask") if family else None, key=run_target_key(run))


def fidelity_targets(spec: StudySpec, runs: Sequence[PlannedRun] | None = None
                     ) -> list[FidelityTarget]:
    """The compressed backbones × datasets of the runs of ``spec`` (default: all of them, else
    e.g. the done runs), in the runs' order; dense runs have none, and neither do sequence
    datasets (fidelity compares ImageNet predictions on a dataset's images)."""
    points = _compressed_points(spec)
    targets: dict[str, FidelityTarget] = {}
    for run in expand(spec) if runs is None else runs:
        if dataset_info(run.identity["dataset"]).modality != "image":
            continue
        found = points.get((run.identity["model"], run.tags.get("compression")))
        key = run_target_key(run)
        if found is not None and key not in targets:
            targets[key] = _target(run, *found)
    return list(targets.values())


def measure_target(target: FidelityTarget, *, images_per_dataset: int, cache_dir: Path,
                   checkpoint_root: str | None = None, device: str = "auto",
                   data_root: str | None = None, download: bool = False,
                   dense_cache: dict | None = None) -> FidelityEntry:
    """The fidelity entry of one target (cached in ``cache_dir``); errors are the caller's."""
    result = cached_fidelity(
        target.dense_model, target.compression, images=target.dataset, cache_dir=cache_dir,
        weights=target.weights,
        checkpoint=checkpoint_location(target.dense_checkpoint, checkpoint_root),
        compressed_model=target.model if target.compression is None else None,
        compressed_checkpoint=checkpoint_location(target.checkpoint, checkpoint_root),
        compressed_mask=checkpoint_location(target.mask, checkpoint_root),
        limit=images_per_dataset, device=device, data_root=data_root, dense_cache=dense_cache,
        download=download)
    return entry_of(target, result.metrics)


def _measure_one(target: FidelityTarget, measure: Callable[[FidelityTarget], FidelityEntry],
                 console: Console) -> FidelityEntry:
    try:
        return measure(target)
    except HiddenCostError as exc:
        # an expected one-line failure (a missing checkpoint, say): recorded, the others go on;
        # anything else (a bug, CUDA out of memory) propagates
        console.print(f"[yellow]fidelity not measured[/] for {target.tags['compression']} on "
                      f"{target.dataset}: {exc}", highlight=False, soft_wrap=True)
        return entry_of(target, error=str(exc))


def _measure_all(targets: Sequence[FidelityTarget],
                 measure: Callable[[FidelityTarget], FidelityEntry], console: Console,
                 progress: bool) -> list[FidelityEntry]:
    bar = make_progress(console) if progress and targets else None
    if bar is None:
        return [_measure_one(target, measure, console) for target in targets]
    task = bar.add_task("fidelity", total=len(targets), status="")
    entries = []
    with bar:
        for target in targets:
            bar.update(task, status=f"{target.tags['compression']} on {target.dataset}")
            entries.append(_measure_one(target, measure, console))
            bar.update(task, advance=1)
    return entries


def record_study_fidelity(
    spec: StudySpec,
    runs: Sequence[PlannedRun],
    root: str | Path,
    *,
    images_per_dataset: int = DEFAULT_FIDELITY_IMAGES,
    checkpoint_root: str | None = None,
    device: str = "auto",
    data_root: str | None = None,
    download: bool = False,
    console: Console | None = None,
    progress: bool = True,
) -> list[FidelityEntry]:
    """Measure every target of ``runs`` (see :func:`fidelity_targets`), write
    ``root/fidelity.json`` and return its entries (as :func:`read_fidelity` returns them).
    Entries that failed carry ``error``."""
    if images_per_dataset < 2:
        raise HiddenCostError("fidelity needs at least 2 images per dataset")
    measure = partial(measure_target, images_per_dataset=images_per_dataset,
                      cache_dir=Path(root) / FIDELITY_CACHE, checkpoint_root=checkpoint_root,
                      device=device, data_root=data_root, download=download, dense_cache={})
    entries = _measure_all(fidelity_targets(spec, runs), measure, console or Console(),
                           progress)
    write_fidelity(root, spec.name, images_per_dataset, entries)
    return entries


def fidelity_rows(entries: Sequence[FidelityEntry]) -> list[FidelityRow]:
    """The entries as lines of :func:`hiddencost.fidelity.print_fidelity_table`."""
    return [FidelityRow(str(e.tags.get("compression")), e.dataset, e.metrics, error=e.error)
            for e in entries]
