"""Training-speed benchmark: hiddencost's loops against plain reference loops, in one process.

Run with ``make bench`` or ``python benchmarks/bench_training.py [flags]`` (``--help`` lists the
flags). Everything runs in this one process on the same model (the packaged ImageNet
EfficientNet-Lite0, offline) and the same data (scikit-learn digits), and the result is printed
as ratios reference / ours, so it means the same on a slow or a busy machine (DESIGN §7).

A. Visual prompting, one ILM-VP epoch.

   ours       ``train_visual_prompt(method="ilm")``: uint8 images held in memory, frozen
              backbone with BatchNorm folded, channels_last (``prepare_frozen``, as
              ``run._backbone``),
              ``inference_mode`` for the ILM mapping pass, no test pass during training.
   reference  written here the way earlier code did it: a ``DataLoader`` over a ``Dataset`` of
              PIL images (converted once at set-up, as torchvision datasets hold them) with
              ``Resize(inner) + ToTensor`` applied per item every epoch, default memory format,
              fp32, frozen backbone (``requires_grad=False``, eval), the same pad prompt, the
              ILM mapping pass under ``torch.no_grad`` through the DataLoader, and a full
              test-set evaluation every epoch to keep the "best on test" prompt.

   Same canvas, inner size, batch size, model, training images, optimiser; each side gets a
   warm-up of a few batches first.

B. Linear probing, E epochs.

   ours       ``extract_features`` once (train and test) + ``train_linear_head`` + evaluation.
   reference  every epoch, the frozen backbone is run on every training batch (same
              ``ResizeNormalize``, same seeded batch order as ``epoch_batches``, same seeded head
              initialisation), then the head step; then evaluation. Both must reach the same test
              accuracy (within one test image), otherwise the script exits with status 1.

The machine's other load is reported: on a small shared CPU, other processes' CPU time during a
measurement makes it slower and noisier (``--repeats`` keeps the fastest of several).
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from hiddencost.backbones import create_model
from hiddencost.data import load_dataset
from hiddencost.device import resolve_device
from hiddencost.frozen import penultimate_features, prepare_frozen
from hiddencost.prompting.label_mapping import frequency_mapping
from hiddencost.prompting.linear_probe import ResizeNormalize, extract_features, train_linear_head
from hiddencost.prompting.pad_prompt import PadPrompt
from hiddencost.prompting.schedule import adam_multistep, epoch_batches
from hiddencost.prompting.visual_prompt import (
    ReprogrammedModel,
    source_predictions,
    to_unit,
    train_visual_prompt,
)

VP_TARGET = 3.0
LP_TARGET = 50.0
#: scikit-learn digits are 8 x 8: the raw images the reference Dataset holds.
DIGITS_RAW_SIZE = 8


# --------------------------------------------------------------------------- timing helpers


def _system_busy_seconds() -> float | None:
    """CPU seconds spent by the whole machine so far (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class Timing:
    """Wall seconds of one measurement, and CPU seconds other processes used meanwhile."""

    seconds: float
    others_cpu: float | None

    def note(self) -> str:
        if self.others_cpu is None:
            return ""
        return f"  (other processes used {self.others_cpu:.1f} CPU-s meanwhile)"


def wait_for_quiet(max_wait: float, busy_cores: float = 0.3, window: float = 2.0) -> None:
    """Wait (at most ``max_wait`` s) until other processes use < ``busy_cores`` CPU cores.

    A shared small machine (this project's CI has 2 cores) makes wall times meaningless while
    something else runs; waiting for a quiet moment before each measurement helps, ``--repeats``
    (keep the fastest) helps more.
    """
    deadline = time.monotonic() + max_wait
    waited = False
    while time.monotonic() < deadline:
        busy0, own0 = _system_busy_seconds(), _own_cpu_seconds()
        if busy0 is None:
            return
        time.sleep(window)
        others = (_system_busy_seconds() - busy0) - (_own_cpu_seconds() - own0)
        if others < busy_cores * window:
            break
        if not waited:
            print(f"  (waiting up to {max_wait:.0f} s for other processes to go quiet: they use "
                  f"{others / window:.1f} cores)", flush=True)
            waited = True


def timed(
    fn: Callable[[], object], device: torch.device, quiet_wait: float = 0.0
) -> tuple[Timing, object]:
    """Run ``fn`` once; wall time (CUDA-synchronised) and the machine's other CPU load."""
    if quiet_wait > 0:
        wait_for_quiet(quiet_wait)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    busy0, own0 = _system_busy_seconds(), _own_cpu_seconds()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    busy1, own1 = _system_busy_seconds(), _own_cpu_seconds()
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (own1 - own0))
    return Timing(seconds, others), out


def fastest(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.seconds)


# --------------------------------------------------------------------------- A. visual prompting


class PILImages(Dataset):
    """Images held as PIL, transformed per item (how torchvision datasets serve CIFAR & co.)."""

    def __init__(self, images_u8: torch.Tensor, labels: torch.Tensor, transform: Callable) -> None:
        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images_u8]
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


@dataclass
class ReferenceVP:
    """The state of the reference VP loop: NCHW frozen backbone, prompt, optimiser, loaders."""

    backbone: nn.Module
    prompt: PadPrompt
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train_loader: DataLoader
    map_loader: DataLoader
    test_loader: DataLoader
    num_source: int
    num_classes: int
    device: torch.device
    best_accuracy: float = -1.0
    best_prompt: dict | None = None


def make_reference_vp(
    backbone: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    args: argparse.Namespace,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    num_source: int,
    num_classes: int,
    device: torch.device,
) -> ReferenceVP:
    transform = T.Compose([T.Resize((args.inner, args.inner)), T.ToTensor()])
    train_set = PILImages(*train, transform)
    test_set = PILImages(*test, transform)
    loader_kw = {"batch_size": args.batch_size, "num_workers": args.ref_workers}
    prompt = PadPrompt(args.canvas, args.inner, mean, std).to(device)
    optimizer, scheduler = adam_multistep(prompt.parameters(), args.vp_epochs, lr=0.01)
    return ReferenceVP(
        backbone=backbone,
        prompt=prompt,
        optimizer=optimizer,
        scheduler=scheduler,
        train_loader=DataLoader(train_set, shuffle=True,
                                generator=torch.Generator().manual_seed(args.seed), **loader_kw),
        map_loader=DataLoader(train_set, shuffle=False, **loader_kw),
        test_loader=DataLoader(test_set, shuffle=False, **loader_kw),
        num_source=num_source,
        num_classes=num_classes,
        device=device,
    )


def reference_vp_epoch(ref: ReferenceVP, laps: dict[str, float] | None = None) -> float:
    """One epoch of the earlier code: ILM pass, training, full test pass; returns test accuracy.

    ``laps``, when given, receives the seconds of each phase (mapping, train, test).
    """
    dev = ref.device
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        if laps is not None:
            laps[name] = laps.get(name, 0.0) + now - clock
        clock = now

    ref.backbone.eval()
    # ILM: re-map with the current prompt, without gradients (no_grad, not inference_mode).
    preds, labels = [], []
    with torch.no_grad():
        for x, y in ref.map_loader:
            preds.append(ref.backbone(ref.prompt(x.to(dev))).argmax(1).cpu())
            labels.append(y)
    mapping = frequency_mapping(torch.cat(preds), torch.cat(labels), ref.num_source,
                                ref.num_classes).to(dev)
    lap("mapping pass")
    for x, y in ref.train_loader:
        x, y = x.to(dev), y.to(dev)
        logits = ref.backbone(ref.prompt(x))[:, mapping]
        loss = F.cross_entropy(logits, y)
        ref.optimizer.zero_grad()
        loss.backward()
        ref.optimizer.step()
    ref.scheduler.step()
    lap("training pass")
    # Test pass every epoch, to keep the "best on test" prompt (the practice DESIGN §4 forbids).
    correct, seen = 0, 0
    with torch.no_grad():
        for x, y in ref.test_loader:
            logits = ref.backbone(ref.prompt(x.to(dev)))[:, mapping]
            correct += int((logits.argmax(1).cpu() == y).sum())
            seen += len(y)
    accuracy = correct / seen
    if accuracy > ref.best_accuracy:
        ref.best_accuracy = accuracy
        ref.best_prompt = copy.deepcopy(ref.prompt.state_dict())
    lap("test pass")
    return accuracy


def breakdown_vp(ours_bb: nn.Module, ref: ReferenceVP, train_u8: torch.Tensor, k_src: int,
                 k: int, args: argparse.Namespace, info, device: torch.device) -> None:
    """Where each side's epoch goes (one more epoch each, phase by phase)."""
    laps: dict[str, float] = {}
    reference_vp_epoch(ref, laps)
    start = time.perf_counter()
    for loader in (ref.map_loader, ref.train_loader, ref.test_loader):
        for _ in loader:
            pass
    laps["(of which DataLoader + PIL transforms)"] = time.perf_counter() - start
    prompt = PadPrompt(args.canvas, args.inner, info.mean, info.std)
    model = ReprogrammedModel(ours_bb, prompt, k_src, k).to(device)
    t, _ = timed(lambda: source_predictions(model, train_u8, device), device)
    print("  breakdown of one more epoch:")
    for name, sec in laps.items():
        print(f"    reference {name:40s} {sec:7.2f} s")
    print(f"    ours      {'mapping pass (inference_mode)':40s} {t.seconds:7.2f} s"
          "  (the rest of our epoch is the training pass)")


def bench_vp(args: argparse.Namespace, base: nn.Module, info, device: torch.device) -> dict:
    task = load_dataset("digits", image_size=args.inner)  # ours: preprocessed uint8, in memory
    raw = load_dataset("digits", image_size=DIGITS_RAW_SIZE)  # reference: raw 8x8 images
    assert torch.equal(task.train_labels, raw.train_labels)  # same seeded split
    n_train = min(args.vp_train, len(task.train_labels))
    n_test = min(args.vp_test, len(task.test_labels))
    k, k_src = task.num_classes, info.num_classes

    # Ours: the backbone exactly as run._backbone prepares it.
    ours_bb = prepare_frozen(copy.deepcopy(base), device, args.canvas)
    # Reference: default memory format, requires_grad False, eval.
    ref_bb = copy.deepcopy(base).to(device)
    for p in ref_bb.parameters():
        p.requires_grad_(False)
    ref_bb.eval()

    train_u8, train_y = task.train_images[:n_train], task.train_labels[:n_train]

    def ours_run(n: int, epochs: int) -> list[float]:
        """Our training loop; returns its own per-epoch seconds (history)."""
        prompt = PadPrompt(args.canvas, args.inner, info.mean, info.std)
        _, hist = train_visual_prompt(ours_bb, prompt, train_u8[:n], train_y[:n], k, k_src,
                                      "ilm", epochs, args.batch_size, args.seed, device)
        return [e.seconds for e in hist.epochs]

    def ref_setup(n_tr: int, n_te: int) -> ReferenceVP:
        return make_reference_vp(
            ref_bb, (raw.train_images[:n_tr], raw.train_labels[:n_tr]),
            (raw.test_images[:n_te], raw.test_labels[:n_te]), args, info.mean, info.std,
            k_src, k, device)

    # Warm-up: a few batches through each loop (kernel selection, allocator, first-call costs).
    n_warm = min(n_train, args.warmup_batches * args.batch_size)
    ours_run(n_warm, 1)
    reference_vp_epoch(ref_setup(n_warm, min(n_test, args.batch_size)))

    ours_t, ref_t, ours_epoch_secs = [], [], []
    for _ in range(args.repeats):
        ref = ref_setup(n_train, n_test)
        t, _ = timed(lambda ref=ref: [reference_vp_epoch(ref) for _ in range(args.vp_epochs)],
                     device, args.quiet_wait)
        ref_t.append(t)
        t, out = timed(lambda: ours_run(n_train, args.vp_epochs), device, args.quiet_wait)
        ours_t.append(t)
        ours_epoch_secs.append(out)
    ref_best, ours_best = fastest(ref_t), fastest(ours_t)
    per_ref = ref_best.seconds / args.vp_epochs
    per_ours = ours_best.seconds / args.vp_epochs
    print(f"\n[A] VP, {args.vp_epochs} ILM epoch(s), {n_train} training / {n_test} test images, "
          f"canvas {args.canvas}, inner {args.inner}, batch {args.batch_size}")
    for i, (r, o) in enumerate(zip(ref_t, ours_t, strict=True)):
        print(f"  repeat {i + 1}: reference {r.seconds:7.2f} s{r.note()}")
        print(f"            ours      {o.seconds:7.2f} s{o.note()}  "
              f"(history per-epoch seconds: {', '.join(f'{s:.2f}' for s in ours_epoch_secs[i])})")
    if args.breakdown:
        breakdown_vp(ours_bb, ref_setup(n_train, n_test), train_u8, k_src, k, args, info, device)
    return {"reference": per_ref, "ours": per_ours, "ratio": per_ref / per_ours}


# --------------------------------------------------------------------------- B. linear probing


def reference_lp(
    backbone: nn.Module,
    pre: ResizeNormalize,
    train_u8: torch.Tensor,
    train_y: torch.Tensor,
    test_u8: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> tuple[nn.Linear, float]:
    """LP recomputing the backbone features of every batch in every epoch."""

    def features(images_u8: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return penultimate_features(backbone, pre(to_unit(images_u8, device))).float()

    dim = features(train_u8[:1]).shape[1]
    with torch.random.fork_rng(devices=[]):  # the same seeded initialisation as ours
        torch.manual_seed(seed)
        head = nn.Linear(dim, num_classes)
    head.to(device)
    labels = train_y.to(device)
    optimizer, scheduler = adam_multistep(head.parameters(), epochs, 0.01)
    generator = torch.Generator().manual_seed(seed)  # the same batch order as ours
    for _ in range(epochs):
        for idx in epoch_batches(len(train_y), batch_size, generator):
            logits = head(features(train_u8[idx]))
            loss = F.cross_entropy(logits, labels[idx.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        logits = torch.cat([head(features(chunk)).cpu() for chunk in test_u8.split(batch_size)])
    return head, float((logits.argmax(1) == test_y).float().mean())


def ours_lp(
    backbone: nn.Module,
    pre: ResizeNormalize,
    train_u8: torch.Tensor,
    train_y: torch.Tensor,
    test_u8: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
) -> tuple[nn.Linear, float]:
    """LP as the library does it: features extracted once, head trained on the cache."""
    train_f = extract_features(backbone, pre, train_u8, device)
    test_f = extract_features(backbone, pre, test_u8, device)
    head, _ = train_linear_head(train_f, train_y, num_classes, epochs, batch_size, seed, device)
    with torch.inference_mode():
        logits = head(test_f.to(device)).float().cpu()
    return head, float((logits.argmax(1) == test_y).float().mean())


def bench_lp(args: argparse.Namespace, base: nn.Module, info, device: torch.device) -> dict:
    # run.py stores 32-px tasks at min(inner, LP size) and resizes them to the LP input size.
    task = load_dataset("digits", image_size=min(32, args.lp_size))
    n_train = min(args.lp_train, len(task.train_labels))
    train_u8, train_y = task.train_images[:n_train], task.train_labels[:n_train]
    test_u8, test_y = task.test_images, task.test_labels
    backbone = prepare_frozen(copy.deepcopy(base), device, args.lp_size)
    pre = ResizeNormalize(args.lp_size, info.mean, info.std).to(device)
    ref_epochs = args.lp_ref_epochs or args.lp_epochs
    common = (backbone, pre, train_u8, train_y, test_u8, test_y, task.num_classes)

    # Warm-up: the backbone at this input size, and the head training path of each side.
    warm = min(n_train, args.warmup_batches * args.batch_size)
    ours_lp(backbone, pre, train_u8[:warm], train_y[:warm], test_u8[: args.batch_size],
            test_y[: args.batch_size], task.num_classes, 1, args.batch_size, args.seed, device)
    reference_lp(backbone, pre, train_u8[:warm], train_y[:warm], test_u8[: args.batch_size],
                 test_y[: args.batch_size], task.num_classes, 1, args.batch_size, args.seed,
                 device)

    ours_t = []
    for _ in range(args.repeats):
        t, (ours_head, ours_acc) = timed(
            lambda: ours_lp(*common, args.lp_epochs, args.batch_size, args.seed, device), device,
            args.quiet_wait)
        ours_t.append(t)
    ref_t, (ref_head, ref_acc) = timed(
        lambda: reference_lp(*common, ref_epochs, args.batch_size, args.seed, device), device,
        args.quiet_wait)
    ours_best = fastest(ours_t)
    ours_acc_full = ours_acc
    ref_seconds = ref_t.seconds
    extrapolated = ref_epochs != args.lp_epochs
    if extrapolated:
        # Scale the per-epoch part (everything but the final test pass) linearly to E epochs.
        test_t, _ = timed(lambda: extract_features(backbone, pre, test_u8, device), device)
        per_epoch = max(0.0, ref_t.seconds - test_t.seconds) / ref_epochs
        ref_seconds = per_epoch * args.lp_epochs + test_t.seconds
        # The equivalence check compares like with like: ours, also trained for ref_epochs.
        ours_head, ours_acc = ours_lp(*common, ref_epochs, args.batch_size, args.seed, device)

    n_test = len(test_y)
    diff = abs(ours_acc - ref_acc) * n_test
    max_w = float((ours_head.weight.detach().cpu() - ref_head.weight.detach().cpu()).abs().max())
    print(f"\n[B] LP, {args.lp_epochs} epochs, {n_train} training / {n_test} test images, "
          f"input {args.lp_size}, batch {args.batch_size}")
    for i, o in enumerate(ours_t):
        print(f"  ours, repeat {i + 1}: {o.seconds:7.2f} s{o.note()}")
    if extrapolated:
        print(f"  reference: ran {ref_epochs} of {args.lp_epochs} epochs in {ref_t.seconds:.2f} s"
              f"{ref_t.note()};\n  EXTRAPOLATED linearly from {ref_epochs} epochs to "
              f"{args.lp_epochs}: {ref_seconds:.2f} s (accuracy check at {ref_epochs} epochs; "
              f"ours after {args.lp_epochs} epochs: {ours_acc_full:.4f})")
    else:
        print(f"  reference: {ref_seconds:7.2f} s{ref_t.note()} (all {ref_epochs} epochs run)")
    print(f"  test accuracy: reference {ref_acc:.4f}, ours {ours_acc:.4f} "
          f"({diff:.0f} test images apart); max |head weight difference| {max_w:.2e}")
    return {
        "reference": ref_seconds, "ours": ours_best.seconds,
        "ratio": ref_seconds / ours_best.seconds, "ref_acc": ref_acc, "ours_acc": ours_acc,
        "agree": diff <= 1.0 + 1e-9, "extrapolated": extrapolated, "ref_epochs": ref_epochs,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128, help="the full-data batch size")
    p.add_argument("--warmup-batches", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2,
                   help="time each side this many times (alternating) and keep the fastest")
    p.add_argument("--quiet-wait", type=float, default=30.0,
                   help="before each measurement, wait up to this many seconds for other "
                        "processes to leave the CPU idle (0: do not wait)")
    p.add_argument("--only", choices=("vp", "lp"), default=None, help="run one part only")
    g = p.add_argument_group("A. visual prompting")
    g.add_argument("--canvas", type=int, default=128,
                   help="prompt canvas (the protocol uses 224; smaller keeps this CPU run short)")
    g.add_argument("--inner", type=int, default=32, help="inner image size")
    g.add_argument("--vp-train", type=int, default=256, help="training images")
    g.add_argument("--vp-test", type=int, default=256, help="test images (reference test pass)")
    g.add_argument("--vp-epochs", type=int, default=1)
    g.add_argument("--ref-workers", type=int, default=0, help="reference DataLoader workers")
    g = p.add_argument_group("B. linear probing")
    g.add_argument("--lp-size", type=int, default=96, help="LP input size (protocol: 224)")
    g.add_argument("--lp-train", type=int, default=10**9, help="training images (default all)")
    g.add_argument("--lp-epochs", type=int, default=100)
    g.add_argument("--lp-ref-epochs", type=int, default=20,
                   help="run the reference for this many epochs only and extrapolate its time "
                        "linearly to --lp-epochs (0: run all --lp-epochs; about 6 min at the "
                        "defaults on a 2-core CPU)")
    p.add_argument("--breakdown", action="store_true",
                   help="also time the phases of a VP epoch (mapping, training, test, data)")
    p.add_argument("--check-targets", action="store_true",
                   help=f"exit 1 if VP < {VP_TARGET:g}x or LP < {LP_TARGET:g}x")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    print("hiddencost training benchmark (reference loop / ours, same process)")
    load = f", load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else ""
    print(f"  python {platform.python_version()}, torch {torch.__version__}, device {device}, "
          f"threads {torch.get_num_threads()}, CPUs {os.cpu_count()}{load}")
    print("  settings: " + ", ".join(f"{k}={v}" for k, v in vars(args).items()))
    base, info = create_model("efficientnet_lite0")
    start = time.perf_counter()
    vp = bench_vp(args, base, info, device) if args.only in (None, "vp") else None
    lp = bench_lp(args, base, info, device) if args.only in (None, "lp") else None

    print(f"\nSummary ({time.perf_counter() - start:.0f} s in all; targets: VP >= {VP_TARGET:g}x, "
          f"LP >= {LP_TARGET:g}x)")
    ok = True
    if vp is not None:
        print(f"VP epoch  reference {vp['reference']:.1f} s  ours {vp['ours']:.1f} s  "
              f"speed-up {vp['ratio']:.1f}x")
        ok &= vp["ratio"] >= VP_TARGET
    if lp is not None:
        note = ""
        if lp["extrapolated"]:
            note = f", reference extrapolated from {lp['ref_epochs']} epochs"
        print(f"LP        reference {lp['reference']:.1f} s  ours {lp['ours']:.1f} s  "
              f"speed-up {lp['ratio']:.1f}x  (test acc {lp['ref_acc']:.4f} vs "
              f"{lp['ours_acc']:.4f}{note})")
        ok &= lp["ratio"] >= LP_TARGET
        if not lp["agree"]:
            print("ERROR: cached-feature LP and recomputed-feature LP disagree by more than one "
                  "test image", file=sys.stderr)
            return 1
    if args.check_targets and not ok:
        print("speed-up below target", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
