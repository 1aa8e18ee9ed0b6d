"""Upstream fidelity of every compressed backbone of a study, recorded beside its results.

After a study's runs, :func:`record_study_fidelity` measures each distinct compressed backbone
of the done runs against its dense original, once per dataset of the study, with
:func:`hiddencost.fidelity.cached_fidelity`: top-1 agreement and the mean
``KL(p_dense || p_compressed)`` over the source (ImageNet) classes, on the first
``images_per_dataset`` test images of that dataset at the backbone's own input size. No labels
are used, so this is the "upstream" quality of the compression measured on the images the
backbone is transferred to; the report sets it against the transfer cost.

The dense original of a compression point is the study's dense backbone: the spec's ``model``
with the shared ``weights`` and ``checkpoint`` of ``params``, uncompressed. For grid points
(magnitude, quantize, ...) the compressed model is that backbone compressed the way the runs
compress it; for checkpoint families it is the family's checkpoint file (its zoo name or a plain
state dict).

Files in the study's output folder::

    fidelity.json       {"version", "study", "images_per_dataset", "entries": [...]}
    fidelity/           one cached result per entry (asking again is free)

Each entry holds ``model`` (the compressed model name of the runs), ``dataset``, the study tags
``family``, ``compression``, ``level``, ``unit``, ``dense_model``, and the metrics of
:func:`hiddencost.fidelity.fidelity_report` (``n_images``, ``top1_agreement``,
``top5_agreement``, ``mean_kl``, ``max_kl``, ...), or ``error`` when it could not be measured
(a missing checkpoint, say): one bad entry never stops the others.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from hiddencost.errors import HiddenCostError

if TYPE_CHECKING:  # torch-heavy modules load on first use: `hiddencost --help` stays fast
    from hiddencost.compression import CompressionSpec
    from hiddencost.study.spec import PlannedRun, StudySpec

FIDELITY_FILE = "fidelity.json"
FIDELITY_CACHE = "fidelity"
FIDELITY_FILE_VERSION = 1
#: Test images per dataset: the binomial standard error of an agreement is then ≤ 3.1 pp.
DEFAULT_FIDELITY_IMAGES = 256
_METRICS = ("n_images", "top1_agreement", "top5_agreement", "mean_kl", "max_kl",
            "dense_mean_confidence", "compressed_mean_confidence")


@dataclass(frozen=True)
class FidelityTarget:
    """One compressed backbone × dataset of a study, with its dense original."""

    model: str  # the compressed model name, as in the runs' identity
    dataset: str
    dense_model: str
    weights: str
    dense_checkpoint: str | None
    compression: CompressionSpec | None  # grid points
    checkpoint: str | None  # checkpoint families (relative to checkpoint_root, as written)
    tags: dict[str, Any]

    def run_key(self) -> tuple:
        """What identifies the target's runs: model, dataset, compression, checkpoint."""
        from hiddencost.compression import CompressionSpec

        comp = (self.compression or CompressionSpec()).model_dump(mode="json")
        ckpt = self.checkpoint if self.compression is None else self.dense_checkpoint
        return (self.model, self.dataset, json.dumps(comp, sort_keys=True), ckpt)


def _run_key(run: PlannedRun) -> tuple:
    c = run.identity
    return (c["model"], c["dataset"], json.dumps(c["compression"], sort_keys=True),
            c.get("checkpoint"))


def fidelity_targets(spec: StudySpec, runs: Sequence[PlannedRun] | None = None
                     ) -> list[FidelityTarget]:
    """The compressed backbones × datasets of ``spec`` (in expansion order), only those with a
    run in ``runs`` when given (e.g. the done runs)."""
    from hiddencost.backbones import resolve_backbone_name
    from hiddencost.run import RunConfig
    from hiddencost.study.spec import compression_points

    weights = spec.params.get("weights", RunConfig.model_fields["weights"].default)
    base_ckpt = spec.params.get("checkpoint")
    wanted = {_run_key(r) for r in runs} if runs is not None else None
    targets: dict[tuple, FidelityTarget] = {}
    points = compression_points(spec.compression)
    for model in spec.model:
        entry = resolve_backbone_name(model)
        for dataset in spec.dataset:
            for point in points:
                if point.family == "dense":
                    continue
                family = point.checkpoint is not None
                target = FidelityTarget(
                    model=resolve_backbone_name(point.model_for(model, entry.arch)).name,
                    dataset=dataset, dense_model=entry.name, weights=weights,
                    dense_checkpoint=base_ckpt,
                    compression=None if family else point.spec,
                    checkpoint=point.checkpoint_for(model, entry.arch) if family else None,
                    tags=point.tags())
                key = target.run_key()
                if (wanted is None or key in wanted) and key not in targets:
                    targets[key] = target
    return list(targets.values())


def measure_target(target: FidelityTarget, *, images_per_dataset: int, cache_dir: Path,
                   checkpoint_root: str | None = None, device: str = "auto",
                   data_root: str | None = None, download: bool = False,
                   dense_cache: dict | None = None) -> dict[str, Any]:
    """The fidelity entry of one target (cached in ``cache_dir``); errors are the caller's."""
    from hiddencost.fidelity import cached_fidelity
    from hiddencost.study.spec import checkpoint_location

    result = cached_fidelity(
        target.dense_model, target.compression, images=target.dataset, cache_dir=cache_dir,
        weights=target.weights,
        checkpoint=checkpoint_location(target.dense_checkpoint, checkpoint_root),
        compressed_model=target.model if target.compression is None else None,
        compressed_checkpoint=checkpoint_location(target.checkpoint, checkpoint_root),
        limit=images_per_dataset, device=device, data_root=data_root, dense_cache=dense_cache,
        download=download)
    return {**_entry_head(target), **{k: result[k] for k in _METRICS},
            "kl_direction": result["kl_direction"], "error": None}


def _entry_head(target: FidelityTarget) -> dict[str, Any]:
    return {"model": target.model, "dataset": target.dataset, **target.tags,
            "dense_model": target.dense_model,
            "images": f"{target.dataset} test split"}


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
) -> list[dict[str, Any]]:
    """Measure every target of ``runs`` (see :func:`fidelity_targets`), write
    ``root/fidelity.json`` and return its entries. Entries that fail carry ``error``."""
    from hiddencost.progress import make_progress

    if images_per_dataset < 2:
        raise HiddenCostError("fidelity needs at least 2 images per dataset")
    console = console or Console()
    root = Path(root)
    targets = fidelity_targets(spec, runs)
    entries: list[dict[str, Any]] = []
    dense_cache: dict = {}
    bar = make_progress(console) if progress and targets else None
    task = bar.add_task("fidelity", total=len(targets), status="") if bar is not None else None
    try:
        if bar is not None:
            bar.start()
        for target in targets:
            if bar is not None:
                bar.update(task, status=f"{target.tags['compression']} on {target.dataset}")
            try:
                entry = measure_target(
                    target, images_per_dataset=images_per_dataset,
                    cache_dir=root / FIDELITY_CACHE, checkpoint_root=checkpoint_root,
                    device=device, data_root=data_root, download=download,
                    dense_cache=dense_cache)
            except (HiddenCostError, OSError, RuntimeError) as exc:
                # fidelity is a side measurement: a checkpoint that cannot be read is noted
                entry = {**_entry_head(target), "error": f"{type(exc).__name__}: {exc}"}
                console.print(f"[yellow]fidelity not measured[/] for {target.tags['compression']}"
                              f" on {target.dataset}: {exc}", highlight=False, soft_wrap=True)
            entries.append(entry)
            if bar is not None:
                bar.update(task, advance=1)
    finally:
        if bar is not None:
            bar.stop()
    write_fidelity(root, spec.name, images_per_dataset, entries)
    return entries


def write_fidelity(root: str | Path, study: str, images_per_dataset: int,
                   entries: list[dict[str, Any]]) -> Path:
    """Write ``root/fidelity.json`` atomically and return its path."""
    path = Path(root) / FIDELITY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": FIDELITY_FILE_VERSION, "study": study,
           "images_per_dataset": images_per_dataset, "entries": entries}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2, allow_nan=False))
    tmp.replace(path)
    return path


def read_fidelity(root: str | Path) -> list[dict[str, Any]]:
    """The entries of ``root/fidelity.json`` ([] when there is none)."""
    path = Path(root) / FIDELITY_FILE
    if not path.is_file():
        return []
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HiddenCostError(f"{path} is unreadable: {exc}") from None
    entries = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise HiddenCostError(f"{path} has no 'entries' list")
    return entries
