"""``hiddencost run``, ``quickstart``, ``models``, ``datasets`` and ``show``: one experiment and
the registries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

import hiddencost.cli.common as common
from hiddencost.budgets import parse_n_shot
from hiddencost.compression.parse import flag_fields
from hiddencost.config import Precision, make_config
from hiddencost.errors import HiddenCostError
from hiddencost.progress import epoch_progress
from hiddencost.records import COMPRESSION_FIELDS, METRIC_FIELDS
from hiddencost.study.catalog import QUICKSTART, QUICKSTART_CROSSMODAL

app = common.command_app()
console = Console()
#: What ``run`` and ``show`` print of a record.
SHOWN_FIELDS = (*METRIC_FIELDS, *COMPRESSION_FIELDS, "wall_time_s")


def parse_settings(items: list[str]) -> dict[str, object]:
    """``KEY=VALUE`` strings as a mapping; values are read as YAML scalars (``2``, ``true``,
    ``null``, ``randn``)."""
    out: dict[str, object] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise HiddenCostError(f"--set {item!r}: give KEY=VALUE, e.g. mapping_interval=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise HiddenCostError(f"--set {item!r}: {value!r} is not a value") from None
    return out


def _value(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _compression(text: str | None, flags: dict) -> dict | str:
    """``--compression TEXT``, or the compression flags' fields; both at once is an error."""
    if text is None:
        return flags
    if flags != {"method": "none"}:
        raise HiddenCostError("give --compression or the --prune / --weight-bits flags, not both")
    return text


@common.command(app)
def run(
    model: Annotated[str, typer.Option(help="Backbone, arch or arch.tag (see `models`).")] = (
        "efficientnet_lite0"),
    weights: common.WeightsOpt = "pretrained",
    checkpoint: Annotated[str | None, typer.Option(
        help="A checkpoint file (state dict, zoo format or compress artifact), or an http(s) "
             "URL with --download.")] = None,
    mask: Annotated[str | None, typer.Option(
        help="A 0/1 mask file for --checkpoint (lottery tickets): weights become weight × mask."
    )] = None,
    dataset: Annotated[str, typer.Option(help="Dataset name or imagefolder:PATH.")] = "digits",
    data_root: common.DataRootOpt = None,
    download: Annotated[bool, typer.Option(
        help="Allow downloads: torchvision datasets, a --checkpoint URL.")] = False,
    skip_unreadable: Annotated[bool, typer.Option(
        help="Leave unreadable image files out (counted in the run's warnings).")] = False,
    split_seed: Annotated[int, typer.Option(help="Seed of the splits made by hiddencost.")] = 0,
    method: Annotated[str, typer.Option(
        help="ilm, flm, rlm, fm, blm, blm+, smm (VP), lp, ft, bitfit, lora, vpt; xmr for "
             "sequence datasets (splice); CLIP backbones: vp, ilm, zero-shot, lp (see "
             "`hiddencost models`).")] = "ilm",
    n_shot: Annotated[str, typer.Option(help="Examples per class, or 'full'.")] = "full",
    seed: Annotated[int, typer.Option(help="Seed of sampling, shuffling and init.")] = 0,
    compression: Annotated[str | None, typer.Option(
        help="A compression in its short form (nm:2:4, wanda-nm:2:4, wanda:0.5, gptq:4, "
             "lowrank:0.25, magnitude:0.9, w4, ...), instead of the flags below.")] = None,
    prune: Annotated[str, typer.Option(help="none, magnitude or random.")] = "none",
    sparsity: Annotated[float, typer.Option(help="Fraction of weights zeroed, in (0, 1).")] = 0.0,
    scope: common.ScopeOpt = "global",
    weight_bits: Annotated[int | None, typer.Option(help="Quantize weights: 2, 3, 4 or 8.")] = None,
    activation_bits: Annotated[int | None, typer.Option(help="Quantize activations.")] = None,
    exclude_first_conv: common.ExcludeFirstConvOpt = False,
    exclude_classifier: common.ExcludeClassifierOpt = False,
    epochs: Annotated[int, typer.Option(help="Training epochs (ILM-VP used 200).")] = 100,
    max_steps: Annotated[int | None, typer.Option(
        help="xmr: stop after this many optimiser steps, if before the last epoch (the "
             "reference: 100 epochs or 100,000 steps).")] = None,
    lr: Annotated[float | None, typer.Option(
        help="Learning rate (default: the method's: Adam 0.01; xmr 0.001; CLIP SGD 40).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Default: the N-shot table.")] = None,
    canvas_size: Annotated[int | None, typer.Option(help="Default: backbone input.")] = None,
    inner_size: Annotated[int | None, typer.Option(help="Default: the dataset's.")] = None,
    lp_image_size: Annotated[int | None, typer.Option(help="LP input; default backbone's.")] = None,
    many_to_one: Annotated[bool, typer.Option(help="Allow K > K' by reusing sources.")] = False,
    mapping_interval: Annotated[int, typer.Option(help="ILM: re-map every k epochs.")] = 1,
    mapping_num: Annotated[int | None, typer.Option(
        help="Source classes per target (FLM/ILM/RLM: averaged, default 1; xmr: max, 10).")
    ] = None,
    prompt_init: Annotated[str, typer.Option(help="Prompt init: zero or randn.")] = "zero",
    test_every_epoch: Annotated[bool, typer.Option(
        help="VP: record the test accuracy after every epoch (curves only; slower).")] = False,
    restrict_templates: Annotated[bool, typer.Option(
        help="CLIP ilm: map each class to one of its own 81 template texts (the reference "
             "lets a class take any column).")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="A method option KEY=VALUE (repeatable), e.g. --set mapping_interval=2; "
                      "an unknown key lists the method's options.")] = None,
    device: common.DeviceChoiceOpt = "auto",
    precision: common.PrecisionOpt = Precision.AUTO,
    save_prompt_history: Annotated[bool, typer.Option(help="Keep every epoch's prompt.")] = False,
    out: Annotated[Path, typer.Option(help="Folder for result.json and weights.")] = Path(
        "runs/latest"),
) -> None:
    """Run one experiment and write OUT/result.json."""
    common.output_folder(out)
    cfg = make_config(
        model=model, weights=weights, checkpoint=checkpoint, mask=mask,
        dataset=dataset, data_root=str(data_root) if data_root else None, download=download,
        split_seed=split_seed, method=method, n_shot=parse_n_shot(n_shot), seed=seed,
        compression=_compression(compression, flag_fields(
            prune, sparsity, scope, weight_bits, activation_bits, exclude_first_conv,
            exclude_classifier, seed)),
        epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size,
        canvas_size=canvas_size, inner_size=inner_size, lp_image_size=lp_image_size,
        many_to_one=many_to_one,
        mapping_interval=mapping_interval, mapping_num=mapping_num, prompt_init=prompt_init,
        test_every_epoch=test_every_epoch, skip_unreadable=skip_unreadable,
        restrict_templates=restrict_templates, device=device, precision=precision,
        save_prompt_history=save_prompt_history, options=parse_settings(set_ or []),
    )
    from hiddencost.run import resolve, run_one  # lazy: torch (commands load what they use)

    resolve(cfg)  # bad names and options are one line before any progress bar
    with epoch_progress(console, cfg.epochs) as on_epoch:
        record = run_one(cfg, out_dir=out, on_epoch=on_epoch)
    table = Table(title=f"{cfg.method} · {record.compression.label} · {cfg.dataset}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in SHOWN_FIELDS:
        table.add_row(k, _value(getattr(record, k)))
    console.print(table)
    for warning in record.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    console.print(f"wrote {out / 'result.json'}")


@common.command(app)
def quickstart(
    out: Annotated[Path | None, typer.Option(
        help="Where results go (default hiddencost-results/<preset>).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the preset's epochs.")] = None,
    crossmodal: Annotated[bool, typer.Option(
        help="Run quickstart-crossmodal instead: xmr to DNA (Splice) and news (BBC News).")
    ] = False,
    device: common.DeviceChoiceOpt = "auto",
) -> None:
    """A small real study on the offline default (EfficientNet-Lite0 → digits; with
    --crossmodal → Splice and BBC News), < 10 min on CPU."""
    name = QUICKSTART_CROSSMODAL if crossmodal else QUICKSTART
    out = out or Path("hiddencost-results") / name
    common.output_folder(out)
    from hiddencost.quickstart import (  # lazy: torch (commands load what they use)
        run_crossmodal_quickstart,
        run_quickstart,
    )

    run = run_crossmodal_quickstart if crossmodal else run_quickstart
    run(out, console, epochs=epochs, device=device)


@common.command(app)
def models() -> None:
    """List the registered backbones and the transfer methods each takes."""
    from hiddencost.backbones import available_backbones  # lazy: the registries load torch
    from hiddencost.prompting.catalog import METHOD_TABLES  # lazy: as above

    common.print_rows(console, "backbones", ("name", "weights", "input", "methods",
                                             "description"),
               [(e.name, e.cfg.source, e.cfg.input_size, ", ".join(METHOD_TABLES[e.family]),
                 e.cfg.description) for e in available_backbones()])


@common.command(app)
def datasets() -> None:
    """List the registered datasets."""
    from hiddencost.data import available_datasets  # lazy: the registry loads torch

    common.print_rows(console, "datasets", ("name", "classes", "inner size", "needs --data-root",
                                     "description"),
               [(d.name, d.num_classes or "any", d.inner_size, "yes" if d.needs_root else "no",
                 d.description) for d in available_datasets()])


@common.command(app)
def show(result: Annotated[Path, typer.Argument(help="A result.json file.")]) -> None:
    """Print the main numbers of a result.json."""
    if not result.is_file():
        raise HiddenCostError(f"{result} does not exist")
    try:
        record = json.loads(result.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # garbled text, or not text
        raise HiddenCostError(f"{result} is not valid JSON: {exc}") from None
    if not isinstance(record, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(record), "a number")
        raise HiddenCostError(f"{result} holds {kind}, not a result record (a JSON object)")
    for k in SHOWN_FIELDS:
        console.print(f"{k:>24}: {_value(record.get(k))}")
