"""The GPU check (about 5 minutes on one GPU): agreement with the CPU, the effect of bf16, and
the throughput profile that ``study plan --profile`` reads.

1. Agreement: one small run (EfficientNet-Lite0, digits, 2-shot, 2 epochs, canvas 64) on CUDA
   in fp32 (TF32 off, the precision policy's fp32) and on the CPU: the same mapping sequence,
   accuracy within one test image, ECE within 0.02.
2. The bf16 effect, reported (not asserted): the quickstart's ILM run (10-shot, 6 epochs,
   canvas 64) on CUDA in bf16 and fp32 over seeds 0-4: mean and spread of Δaccuracy, ΔECE.
3. Throughput of ResNet-50 at 224 px (the paper grids' backbone, random weights) per batch size
   8, 16, 32, 64, 128: training steps (bf16) and forward passes (fp32), images/s.
4. Packing: one ILM epoch of 9 runs packed vs one at a time, 1-, 10-, 50-shot and full data
   (digits, canvas 224): the gain per budget.
5. 2:4 semi-structured sparsity's speed, reported: a fp16 Linear layer of ResNet-50's widths
   (2048 → 2048 and 512 → 2048, 4096 tokens) pruned 2:4 by ``nm:2:4``'s mask and multiplied
   through PyTorch's ``to_sparse_semi_structured`` against the same dense layer (needs compute
   capability ≥ 8.0; otherwise it says why).
6. Writes the profile (3 + 4) to ``--profile-out`` (default ``gpu-profile.json``) for
   ``hiddencost study plan SPEC --profile gpu-profile.json``.

Without a CUDA device it prints "no CUDA device: …" and exits 0 (the test suite runs it so).

    python benchmarks/bench_gpu.py            # or: make bench-gpu
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_packing import Setting, compare, print_rows  # noqa: E402

from hiddencost.run import make_config, run_one  # noqa: E402
from hiddencost.study.plan import PROFILE_BATCHES, measure_profile, write_profile  # noqa: E402

ECE_TOLERANCE = 0.02
SMALL = {"method": "ilm", "n_shot": 2, "epochs": 2, "canvas_size": 64, "inner_size": 16}
QUICKSTART_ILM = {"method": "ilm", "n_shot": 10, "epochs": 6, "canvas_size": 64,
                  "inner_size": 32}
PROFILE_KEY = "resnet50@224"
PACK = 9
PACK_BUDGETS: tuple[int | None, ...] = (1, 10, 50, None)


def agreement() -> bool:
    """The same small run on CUDA (fp32, TF32 off) and on the CPU; True when they agree."""
    gpu = run_one(make_config(**SMALL, device="cuda", precision="fp32"))
    cpu = run_one(make_config(**SMALL, device="cpu", precision="fp32"))
    same_mappings = gpu.mapping_history == cpu.mapping_history
    one_image = 1 / gpu.n_test
    acc_ok = abs(gpu.accuracy - cpu.accuracy) <= one_image + 1e-12
    ece_ok = abs(gpu.ece - cpu.ece) <= ECE_TOLERANCE
    print(f"agreement, CUDA fp32 vs CPU: mapping sequence "
          f"{'same' if same_mappings else 'DIFFERENT'}; accuracy {gpu.accuracy:.4f} vs "
          f"{cpu.accuracy:.4f} (one image = {one_image:.4f}); ECE {gpu.ece:.4f} vs "
          f"{cpu.ece:.4f} (tolerance {ECE_TOLERANCE})")
    return same_mappings and acc_ok and ece_ok


def bf16_effect(seeds: Sequence[int] = range(5)) -> dict[str, float]:
    """bf16 − fp32 accuracy and ECE of the quickstart's ILM run on CUDA, over ``seeds``."""
    d_acc, d_ece = [], []
    for seed in seeds:
        runs = {p: run_one(make_config(**QUICKSTART_ILM, seed=seed, device="cuda",
                                       precision=p)) for p in ("fp32", "bf16")}
        d_acc.append(runs["bf16"].accuracy - runs["fp32"].accuracy)
        d_ece.append(runs["bf16"].ece - runs["fp32"].ece)
    out = {"accuracy_mean": statistics.mean(d_acc), "accuracy_sd": statistics.stdev(d_acc),
           "ece_mean": statistics.mean(d_ece), "ece_sd": statistics.stdev(d_ece)}
    print(f"bf16 effect over {len(d_acc)} seeds (bf16 − fp32): accuracy "
          f"{out['accuracy_mean']:+.4f} ± {out['accuracy_sd']:.4f}, ECE "
          f"{out['ece_mean']:+.4f} ± {out['ece_sd']:.4f}")
    return out


def pack_gains(device: torch.device) -> dict[str, float]:
    """Packed ×9 over one run at a time, per budget (bf16), printed as a table."""
    gains, rows = {}, []
    for n_shot in PACK_BUDGETS:
        setting = Setting("resnet50", "random", 224, 128, n_shot, device)
        row = compare(setting, [PACK], "bf16", repeats=2)[0]
        rows.append(row | {"pack": f"{PACK} ({'full' if n_shot is None else n_shot})"})
        gains["full" if n_shot is None else str(n_shot)] = round(row["ratio"], 3)
    print_rows(rows)
    return gains


def _linear_ms(x: torch.Tensor, w: torch.Tensor, repeats: int = 50) -> float:
    """Median milliseconds of ``F.linear(x, w)`` on the current CUDA stream (after a warm-up)."""
    for _ in range(5):
        torch.nn.functional.linear(x, w)
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.nn.functional.linear(x, w)
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def semi_structured_speed(device: torch.device) -> dict[str, float]:
    """Dense over 2:4-sparse time of ``F.linear`` per layer shape, printed; {} when this GPU
    or build has no semi-structured kernels."""
    from hiddencost.compression.activation_aware import nm_mask

    try:
        from torch.sparse import to_sparse_semi_structured
    except ImportError as exc:
        print(f"2:4 speed: not measured ({exc})")
        return {}
    speedups = {}
    for d_in, d_out in ((2048, 2048), (512, 2048)):
        g = torch.Generator(device=device).manual_seed(0)
        w = torch.randn(d_out, d_in, device=device, dtype=torch.float16, generator=g)
        w = w * nm_mask(w.abs().float(), 2, 4).to(w.dtype)
        x = torch.randn(4096, d_in, device=device, dtype=torch.float16, generator=g)
        try:
            sparse = to_sparse_semi_structured(w)
            dense_ms, sparse_ms = _linear_ms(x, w), _linear_ms(x, sparse)
        except (RuntimeError, NotImplementedError) as exc:
            print(f"2:4 speed: not measured on this GPU ({str(exc).splitlines()[0]})")
            return {}
        key = f"{d_in}->{d_out}"
        speedups[key] = round(dense_ms / sparse_ms, 3)
        print(f"2:4 linear {key}, 4096 tokens, fp16: dense {dense_ms:.3f} ms, 2:4 "
              f"{sparse_ms:.3f} ms, speed-up {speedups[key]:.2f}×")
    return speedups


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile-out", type=Path, default=Path("gpu-profile.json"))
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check did not run (it needs an NVIDIA GPU)")
        return 0
    device = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    ok = agreement()
    bf16_effect()
    profile = measure_profile([PROFILE_KEY], "cuda", "auto", PROFILE_BATCHES,
                              pack_gain=pack_gains(device))
    print(f"{PROFILE_KEY} images/s by batch ({profile.precision} training steps, fp32 "
          "forward):")
    for batch, tp in profile.throughputs[PROFILE_KEY].items():
        print(f"  batch {batch:>3}: train {tp.train_img_s:>8.1f}  eval {tp.eval_img_s:>8.1f}")
    semi_structured_speed(device)
    print(f"profile written to {write_profile(profile, args.profile_out)}")
    print("GPU check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
