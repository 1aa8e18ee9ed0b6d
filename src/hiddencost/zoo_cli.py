"""``hiddencost zoo``, ``hiddencost compress`` and ``hiddencost fidelity``: thin CLI over
:mod:`hiddencost.zoo`, :mod:`hiddencost.recipes` and :mod:`hiddencost.fidelity`.

Mount on the main app with ``app.add_typer``-free registration (plain functions)::

    from hiddencost.zoo_cli import register
    register(app)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from hiddencost.cli_errors import friendly_errors
from hiddencost.compression.parse import short_form_fields
from hiddencost.errors import HiddenCostError
from hiddencost.fidelity import cached_fidelity, print_fidelity_table
from hiddencost.recipes.artifact import artifact_metadata_path

__all__ = ["compress", "fidelity", "register", "zoo", "zoo_app"]

console = Console()
zoo_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

RECIPES = ("magnitude", "random", "quantize", "gmp", "imp", "structured")


@zoo_app.command("zoo")
def zoo() -> None:
    """List the compressed-checkpoint formats of the zoo (tags, architectures, sources)."""
    from hiddencost.zoo import available_zoo

    table = Table(title="compression zoo (pass the file with --checkpoint)")
    for col in ("example", "format", "architectures", "description", "source"):
        table.add_column(col)
    for fam in available_zoo():
        table.add_row(fam.example, fam.format, ", ".join(fam.archs) if fam.archs else "any",
                      fam.description, fam.url)
    console.print(table)


def _train_data(model_name: str, dataset: str, data_root: Path | None, input_size: int | None,
                limit: int | None):
    from hiddencost.backbones import resolve_backbone_name
    from hiddencost.data import load_dataset
    from hiddencost.recipes import TrainData

    entry = resolve_backbone_name(model_name)
    task = load_dataset(dataset, root=str(data_root) if data_root else None)
    images, labels = task.train_images, task.train_labels
    if limit:
        images, labels = images[:limit], labels[:limit]
    return TrainData(images, labels, input_size or entry.cfg.input_size, entry.cfg.mean,
                     entry.cfg.std)


@zoo_app.command("compress")
def compress(
    model: Annotated[str, typer.Option(help="Registered backbone to compress.")] = (
        "efficientnet_lite0"),
    weights: Annotated[str, typer.Option(help="pretrained or random.")] = "pretrained",
    checkpoint: Annotated[Path | None, typer.Option(help="Start from this state dict.")] = None,
    recipe: Annotated[str, typer.Option(help=f"One of {', '.join(RECIPES)}.")] = "magnitude",
    sparsity: Annotated[float, typer.Option(help="Target sparsity (magnitude/random/gmp).")] = 0.5,
    scope: Annotated[str, typer.Option(help="global or layer.")] = "global",
    weight_bits: Annotated[int | None, typer.Option(help="quantize: weight bits.")] = None,
    activation_bits: Annotated[int | None, typer.Option(help="quantize: activation bits.")] = None,
    exclude_first_conv: Annotated[bool, typer.Option(help="Keep the stem dense.")] = False,
    exclude_classifier: Annotated[bool, typer.Option(help="Keep the classifier dense.")] = False,
    dataset: Annotated[str, typer.Option(help="Fine-tuning / calibration images.")] = "digits",
    data_root: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    input_size: Annotated[int | None, typer.Option(help="Training input size.")] = None,
    steps: Annotated[int, typer.Option(help="Fine-tuning steps (gmp total, imp per level, "
                                            "structured after pruning).")] = 100,
    batch_size: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = 32,
    lr: Annotated[float, typer.Option(help="Fine-tuning learning rate (SGD, momentum 0.9).")] = (
        1e-3),
    loss: Annotated[str, typer.Option(help="distill (label-free) or ce.")] = "distill",
    n_events: Annotated[int, typer.Option(help="gmp: number of pruning events n.")] = 10,
    frequency: Annotated[int, typer.Option(help="gmp: steps between events.")] = 5,
    start_step: Annotated[int, typer.Option(help="gmp: first pruning step t0.")] = 0,
    levels: Annotated[int, typer.Option(help="imp: pruning levels.")] = 3,
    fraction: Annotated[float, typer.Option(help="imp: fraction pruned per level.")] = 0.2,
    rewind_step: Annotated[int, typer.Option(help="imp: rewind point (0 = init).")] = 0,
    target_ratio: Annotated[float, typer.Option(help="structured: fraction removed.")] = 0.5,
    target: Annotated[str, typer.Option(help="structured: params or flops.")] = "params",
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("compressed/latest"),
) -> None:
    """Compress a backbone and write OUT/model.safetensors + OUT/model.json."""
    import torch

    from hiddencost.backbones import create_model
    from hiddencost.compression import apply_compression, compression_or_error
    from hiddencost.compression.parse import flag_fields
    from hiddencost.device import resolve_device
    from hiddencost.recipes import (
        FinetuneConfig,
        GMPConfig,
        IMPConfig,
        StructuredConfig,
        gmp_prune,
        imp_prune,
        save_artifact,
        structured_prune,
    )

    if recipe not in RECIPES:
        raise HiddenCostError(f"unknown --recipe {recipe!r}; use one of {', '.join(RECIPES)}")
    torch.manual_seed(seed)
    dev = resolve_device(device)
    net, info = create_model(model, weights=weights, checkpoint=checkpoint)  # type: ignore[arg-type]
    ft = FinetuneConfig(batch_size=batch_size, lr=lr, loss=loss, seed=seed)  # type: ignore[arg-type]
    excl = {"exclude_first_conv": exclude_first_conv, "exclude_classifier": exclude_classifier}
    config: dict[str, Any]
    bits = None
    extra: dict[str, Any] = {}
    if recipe in ("magnitude", "random", "quantize"):
        if recipe == "quantize" and weight_bits is None and activation_bits is None:
            raise HiddenCostError("--recipe quantize needs --weight-bits and/or --activation-bits")
        spec = compression_or_error(flag_fields(
            "none" if recipe == "quantize" else recipe, 0.0 if recipe == "quantize" else sparsity,
            scope, weight_bits, activation_bits, exclude_first_conv, exclude_classifier, seed))
        calibration = None
        if activation_bits is not None:
            data = _train_data(info.name, dataset, data_root, info.input_size, limit)
            calibration = data.preprocess()(data.images[:256].float() / 255)
        report = apply_compression(net, spec, calibration_images=calibration)
        config, bits = spec.model_dump(mode="json"), weight_bits
        extra["compression_report"] = report.to_dict()
    elif recipe == "gmp":
        data = _train_data(info.name, dataset, data_root, input_size, limit)
        cfg = GMPConfig(final_sparsity=sparsity, n_events=n_events, frequency=frequency,
                        start_step=start_step, total_steps=steps, scope=scope,  # type: ignore
                        finetune=ft, **excl)
        result = gmp_prune(net, data, cfg, dev, on_event=lambda t, s, m: console.print(
            f"step {t}: target {s:.4f}, measured {m:.4f}"))
        config = cfg.to_dict()
        extra["events"] = result.events
    elif recipe == "imp":
        data = _train_data(info.name, dataset, data_root, input_size, limit)
        cfg_imp = IMPConfig(levels=levels, fraction=fraction, rewind_step=rewind_step,
                            train_steps=steps, finetune=ft, **excl)
        result_levels = imp_prune(net, data, cfg_imp, out / "open_lth", dev,
                                  on_level=lambda lv: console.print(
                                      f"level {lv.level}: {lv.remaining}/{lv.total} weights "
                                      f"remain (sparsity {lv.sparsity:.4f}) -> {lv.path}"))
        config = cfg_imp.to_dict()
        extra["levels"] = [{"level": lv.level, "path": str(lv.path), "sparsity": lv.sparsity}
                           for lv in result_levels]
    else:
        data = _train_data(info.name, dataset, data_root, input_size, limit) if steps else None
        cfg_s = StructuredConfig(target_ratio=target_ratio, target=target,  # type: ignore
                                 input_size=input_size or info.input_size,
                                 finetune_steps=steps if data is not None else 0, finetune=ft)
        result_s = structured_prune(net, cfg_s, data, dev)
        config = cfg_s.to_dict()
        extra["structured"] = result_s.to_dict()
        console.print(f"params {result_s.params_before} -> {result_s.params_after}, "
                      f"MACs {result_s.flops_before} -> {result_s.flops_after}")
    net = net.cpu()
    path = save_artifact(net, out, info.name, recipe, config, weight_bits=bits, extra=extra)
    meta = json.loads(path.with_suffix(".json").read_text())
    console.print(f"measured sparsity {meta['report']['measured_sparsity']:.4f}, "
                  f"{meta['report']['n_params']} parameters")
    console.print(f"wrote {path} (use: hiddencost run --model {info.name} --checkpoint {path})")


@zoo_app.command("fidelity")
def fidelity(
    model: Annotated[str, typer.Option(help="Dense backbone (registry name).")] = (
        "efficientnet_lite0"),
    compressed: Annotated[list[str] | None, typer.Option(
        help="Compression to compare (repeatable): dense, magnitude:0.9, w4, w4a4, ..., or the "
             "path of a compressed checkpoint (artifact of `compress`, or NAME=PATH for a zoo "
             "checkpoint such as resnet50.acdc-s90=acdc.pth).")] = None,
    images: Annotated[str, typer.Option(help="Image folder, dataset name or 'skimage'.")] = (
        "digits"),
    weights: Annotated[str, typer.Option(help="Dense weights: pretrained or random.")] = (
        "pretrained"),
    checkpoint: Annotated[Path | None, typer.Option(help="Dense state dict.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N images.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache results here.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    download: Annotated[bool, typer.Option(
        help="Fetch NAME=URL checkpoints (needs internet; cached in ~/.cache/hiddencost/zoo).")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write all results as JSON here.")] = None,
) -> None:
    """Top-1 agreement and KL(p_dense || p_compressed) of compressed models on any images."""
    if not compressed:
        raise HiddenCostError("give at least one --compressed (e.g. magnitude:0.9 or w4)")
    results = []
    shared: dict = {}  # the dense model, images and logits, computed once for all rows
    for item in compressed:
        name, eq, path = item.partition("=")
        kw: dict[str, Any]
        if eq:
            kw = {"compressed_model": name, "compressed_checkpoint": path}
        elif artifact_metadata_path(item) is not None:
            kw = {"compressed_checkpoint": item}
        else:
            kw = {"compression": short_form_fields(item)}
        results.append(cached_fidelity(
            model, images=images, weights=weights,  # type: ignore[arg-type]  # checked there
            checkpoint=str(checkpoint) if checkpoint else None, limit=limit,
            batch_size=batch_size, device=device, cache_dir=cache_dir,
            data_root=str(data_root) if data_root else None, dense_cache=shared,
            download=download, **kw))
    print_fidelity_table(console, [r.row(item) for r, item in zip(results, compressed,
                                                                  strict=True)],
                         f"fidelity of {results[0].model}")
    if out is not None:
        rows = [{"compressed": item, **r.model_dump(mode="json")}
                for r, item in zip(results, compressed, strict=True)]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(rows, indent=2, allow_nan=False))
        console.print(f"wrote {out}")


def register(app: typer.Typer) -> None:
    """Add ``zoo``, ``compress`` and ``fidelity`` to ``app``, wrapped in ``friendly_errors``."""
    app.command("zoo")(friendly_errors(zoo))
    app.command("compress")(friendly_errors(compress))
    app.command("fidelity")(friendly_errors(fidelity))
