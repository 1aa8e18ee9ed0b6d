"""``hiddencost zoo``, ``compress`` and ``fidelity``: the compression zoo, the recipes that make
compressed models, and upstream fidelity."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

import hiddencost.cli.common as common
from hiddencost.errors import HiddenCostError

app = common.command_app()
console = Console()


@common.command(app)
def zoo() -> None:
    """List the compressed-checkpoint formats of the zoo (tags, architectures, sources)."""
    from hiddencost.zoo import available_zoo  # lazy: torch (commands load what they use)

    common.print_rows(console, "compression zoo (pass the file with --checkpoint)",
               ("example", "format", "architectures", "description", "source"),
               [(f.example, f.format, ", ".join(f.archs) if f.archs else "any", f.description,
                 f.url) for f in available_zoo()])


@common.command(app)
def compress(
    model: Annotated[str, typer.Option(help="Registered backbone to compress.")] = (
        "efficientnet_lite0"),
    weights: common.WeightsOpt = "pretrained",
    checkpoint: Annotated[Path | None, typer.Option(help="Start from this state dict.")] = None,
    recipe: Annotated[str, typer.Option(
        help="A registered recipe: magnitude, random, quantize, oneshot (--compression), gmp, "
             "imp or structured (an unknown name lists them all).")] = "magnitude",
    compression: Annotated[str | None, typer.Option(
        help="oneshot: a compression's short form (nm:2:4, wanda-nm:2:4, wanda:0.5, "
             "gptq:4, ...).")] = None,
    sparsity: Annotated[float, typer.Option(help="Target sparsity (magnitude/random/gmp).")] = 0.5,
    weight_bits: Annotated[int | None, typer.Option(help="quantize: weight bits.")] = None,
    activation_bits: Annotated[int | None, typer.Option(help="quantize: activation bits.")] = None,
    scope: common.ScopeOpt = "global",
    exclude_first_conv: common.ExcludeFirstConvOpt = False,
    exclude_classifier: common.ExcludeClassifierOpt = False,
    dataset: Annotated[str, typer.Option(help="Fine-tuning / calibration images.")] = "digits",
    data_root: common.DataRootOpt = None,
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
    device: common.DeviceChoiceOpt = "auto",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("compressed/latest"),
    overwrite: Annotated[bool, typer.Option(
        help="Replace an artifact already in OUT (else it is refused before any work).")] = False,
) -> None:
    """Compress a backbone and write OUT/model.safetensors + OUT/model.json."""
    import torch  # lazy: torch (commands load what they use)

    from hiddencost.backbones import create_model  # lazy: as above
    from hiddencost.data import image_dataset  # lazy: as above
    from hiddencost.device import resolve_device  # lazy: as above
    from hiddencost.recipes import existing_artifact, save_artifact  # lazy: as above
    from hiddencost.recipes.registry import RECIPES, CompressOptions, train_data  # lazy: as above

    # what can be refused is refused before the model is built and compressed
    common.output_folder(out)
    found = existing_artifact(out)
    if found is not None and not overwrite:
        raise HiddenCostError(f"{out} already holds a compressed model ({found.name}); give "
                              "another --out, or --overwrite to replace it")
    image_dataset(dataset, "compress --dataset")
    chosen = RECIPES.get(recipe)
    opts = CompressOptions.parse(
        sparsity=sparsity, scope=scope, weight_bits=weight_bits,  # type: ignore[arg-type]
        activation_bits=activation_bits, exclude_first_conv=exclude_first_conv,
        exclude_classifier=exclude_classifier, input_size=input_size, steps=steps,
        batch_size=batch_size, lr=lr, loss=loss, n_events=n_events,  # type: ignore[arg-type]
        frequency=frequency, start_step=start_step, levels=levels, fraction=fraction,
        rewind_step=rewind_step, target_ratio=target_ratio, target=target,  # type: ignore
        seed=seed, compression=compression,
    )
    torch.manual_seed(seed)
    net, info = create_model(model, weights=weights, checkpoint=checkpoint)  # type: ignore[arg-type]
    data = (train_data(info, dataset, str(data_root) if data_root else None, input_size, limit)
            if chosen.needs_data(opts) else None)
    result = chosen.run(net, info, opts, data, resolve_device(device), out, console.print)
    path = save_artifact(net.cpu(), out, info.name, recipe, result.config,
                         weight_bits=result.weight_bits, extra=result.extra)
    meta = json.loads(path.with_suffix(".json").read_text())
    console.print(f"measured sparsity {meta['report']['measured_sparsity']:.4f}, "
                  f"{meta['report']['n_params']} parameters")
    console.print(f"wrote {path} (use: hiddencost run --model {info.name} --checkpoint {path})")


def _compressed(item: str) -> dict[str, Any]:
    """What one ``--compressed`` names: ``NAME=PATH`` (a zoo checkpoint), a file (an artifact of
    ``compress`` or a state dict of the dense architecture), or a compression in short form."""
    from hiddencost.checkpoints import CHECKPOINT_SUFFIXES  # lazy: torch
    from hiddencost.recipes.artifact import artifact_metadata_path  # lazy: torch

    name, eq, path = item.partition("=")
    if eq:
        return {"compressed_model": name, "compressed_checkpoint": path}
    looks_like_file = Path(item).suffix in CHECKPOINT_SUFFIXES or "/" in item
    if artifact_metadata_path(item) is not None or Path(item).is_file() or looks_like_file:
        return {"compressed_checkpoint": item}  # read (or refused) as a checkpoint file
    return {"compression": item}  # the short form, validated where it is read


@common.command(app)
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
    mask: Annotated[str | None, typer.Option(
        help="The 0/1 mask file of the one compressed lottery-ticket checkpoint.")] = None,
    limit: Annotated[int | None, typer.Option(help="Use the first N images.")] = None,
    data_root: common.DataRootOpt = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 64,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache results here.")] = None,
    device: common.DeviceChoiceOpt = "auto",
    download: Annotated[bool, typer.Option(
        help="Fetch NAME=URL checkpoints (needs internet; cached in ~/.cache/hiddencost/zoo).")
    ] = False,
    out: Annotated[Path | None, typer.Option(help="Write all results as JSON here.")] = None,
) -> None:
    """Top-1 agreement and KL(p_dense || p_compressed) of compressed models on any images."""
    from hiddencost.fidelity import (  # lazy: torch (commands load what they use)
        cached_fidelity,
        check_image_source,
        print_fidelity_table,
    )

    if not compressed:
        raise HiddenCostError("give at least one --compressed (e.g. magnitude:0.9 or w4)")
    check_image_source(images)  # before any model is built
    if out is not None and out.is_dir():
        raise HiddenCostError(f"--out {out} is a folder; give the JSON file to write")
    items = [_compressed(item) for item in compressed]
    if mask is not None:
        files = [kw for kw in items if "compressed_checkpoint" in kw]
        if len(files) != 1:
            raise HiddenCostError(f"--mask goes with exactly one compressed checkpoint, "
                                  f"got {len(files)}")
        files[0]["compressed_mask"] = mask
    results = []
    shared: dict = {}  # the dense model, images and logits, computed once for all rows
    for kw in items:
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
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # renamed: never half-written
        tmp.write_text(json.dumps(rows, indent=2, allow_nan=False))
        os.replace(tmp, out)
        console.print(f"wrote {out}")
