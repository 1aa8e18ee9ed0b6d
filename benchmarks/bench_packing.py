"""Packed VP runs against the same runs one at a time, in one process (DESIGN §7: a ratio).

``train_visual_prompts`` with R ILM runs (seeds 0…R−1, each its own N-shot subset, prompt,
mapping and Adam state) for one epoch, against R calls of ``train_visual_prompt``; both sides
do the same work (R mapping passes and R·n training images) and print images/s and the ratio
packed / alone. ``--fuse`` (``auto``: on CUDA only, as the library does) chooses whether the
pack concatenates its batches into one backbone call or calls it per run. Model: the packaged
ImageNet EfficientNet-Lite0 (offline) or any registered backbone with ``--weights random``;
data: scikit-learn digits.

    python benchmarks/bench_packing.py                        # CPU, packs of 4 and 9
    python benchmarks/bench_packing.py --fuse on              # CPU, one backbone call per step
    python benchmarks/bench_packing.py --device cuda --arch resnet50 --weights random \\
        --canvas 224 --n-shot 1 --packs 4,9,16 --dtype bf16,fp32

``bench_gpu.py`` runs the GPU check (ResNet-50, canvas 224, 1-shot) with these functions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hiddencost.backbones import create_model
from hiddencost.data import batch_size_for, few_shot_indices, load_dataset
from hiddencost.device import resolve_device
from hiddencost.frozen import prepare_frozen
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.visual_prompt import (
    PromptRun,
    fuses_batches,
    train_visual_prompt,
    train_visual_prompts,
)

DTYPES = {"bf16": torch.bfloat16, "fp32": None}


@dataclass(frozen=True)
class Setting:
    arch: str
    weights: str
    canvas: int
    inner: int
    n_shot: int | None  # None: full data
    device: torch.device


def prepared(setting: Setting) -> tuple[nn.Module, tuple, tuple, int]:
    """The frozen backbone as ``run._backbone`` prepares it, its mean/std and class count."""
    model, info = create_model(setting.arch, weights=setting.weights)
    return (prepare_frozen(model, setting.device, setting.canvas), info.mean, info.std,
            info.num_classes)


def make_runs(setting: Setting, runs: int, mean: tuple, std: tuple) -> list[PromptRun]:
    """R ILM runs of digits, seeds 0…R−1, each with its own N-shot subset."""
    task = load_dataset("digits", image_size=setting.inner)
    out = []
    for seed in range(runs):
        idx = few_shot_indices(task.train_labels, setting.n_shot, seed).indices
        out.append(PromptRun(PadPrompt(setting.canvas, setting.inner, mean, std),
                             task.train_images[idx], task.train_labels[idx], "ilm", seed))
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_epoch(setting: Setting, backbone: nn.Module, num_source: int, runs: Sequence[PromptRun],
               packed: bool, fuse: bool | None = None,
               precision: torch.dtype | None = None) -> float:
    """Seconds for one ILM epoch of ``runs``: one pack, or one run after the other."""
    batch = batch_size_for(setting.n_shot)
    _sync(setting.device)
    start = time.perf_counter()
    if packed:
        train_visual_prompts(backbone, runs, 10, num_source, 1, batch, setting.device,
                             fuse=fuse, precision=precision)
    else:
        for r in runs:
            train_visual_prompt(backbone, r.prompt, r.train_images, r.train_labels, 10,
                                num_source, "ilm", 1, batch, r.seed, setting.device,
                                precision=precision)
    _sync(setting.device)
    return time.perf_counter() - start


def compare(setting: Setting, packs: Sequence[int], dtype: str = "bf16",
            repeats: int = 2, fuse: bool | None = None) -> list[dict]:
    """Per pack size R: images/s alone and packed, the ratio, and peak memory (CUDA)."""
    backbone, mean, std, num_source = prepared(setting)
    rows = []
    precision = DTYPES[dtype] if setting.device.type == "cuda" else None
    time_epoch(setting, backbone, num_source, make_runs(setting, 1, mean, std), True,
               precision=precision)  # warm
    for size in packs:
        best = {}
        for packed in (False, True):
            times = []
            for _ in range(repeats):
                runs = make_runs(setting, size, mean, std)
                if setting.device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(setting.device)
                times.append(time_epoch(setting, backbone, num_source, runs, packed,
                                        fuse, precision))
            best[packed] = min(times)
        images = sum(len(r.train_labels) for r in runs)  # the same subsets every repeat
        peak = (torch.cuda.max_memory_allocated(setting.device) / 2**20
                if setting.device.type == "cuda" else None)
        rows.append({"pack": size, "dtype": dtype if setting.device.type == "cuda" else "fp32",
                     "fused": fuses_batches(setting.device, fuse),
                     "alone_img_s": images / best[False], "packed_img_s": images / best[True],
                     "ratio": best[False] / best[True], "peak_mib": peak})
    return rows


def print_rows(rows: Sequence[dict]) -> None:
    print(f"{'pack':>9} {'dtype':>5} {'fused':>5} {'alone img/s':>12} {'packed img/s':>13} "
          f"{'packed/alone':>13} {'peak MiB':>9}")
    for r in rows:
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        print(f"{r['pack']!s:>9} {r['dtype']:>5} {'yes' if r['fused'] else 'no':>5} "
              f"{r['alone_img_s']:>12.1f} "
              f"{r['packed_img_s']:>13.1f} {r['ratio']:>12.2f}× {peak:>9}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--weights", default="pretrained", choices=["pretrained", "random"])
    parser.add_argument("--canvas", type=int, default=128)
    parser.add_argument("--inner", type=int, default=32)
    parser.add_argument("--n-shot", type=int, default=4)
    parser.add_argument("--packs", default="4,9")
    parser.add_argument("--dtype", default="bf16", help="CUDA only: bf16, fp32 or both (a,b)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--fuse", default="auto", choices=["auto", "on", "off"],
                        help="one backbone call per step for the whole pack (auto: on CUDA)")
    args = parser.parse_args(argv)
    setting = Setting(args.arch, args.weights, args.canvas, args.inner, args.n_shot,
                      resolve_device(args.device))
    print(f"{args.arch} ({args.weights}) on {setting.device}, canvas {args.canvas}, "
          f"{args.n_shot}-shot digits, one ILM epoch per run; threads {torch.get_num_threads()}")
    rows = []
    for dtype in args.dtype.split(","):
        rows += compare(setting, [int(p) for p in args.packs.split(",")], dtype, args.repeats,
                        {"auto": None, "on": True, "off": False}[args.fuse])
    print_rows(rows)


if __name__ == "__main__":
    main()
