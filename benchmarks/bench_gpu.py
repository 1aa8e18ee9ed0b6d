"""The GPU check (under 5 minutes on one GPU): packed ILM-VP throughput, CUDA vs CPU agreement.

1. One ILM-VP epoch of ResNet-50 (random weights) at canvas 224 with 1-shot batches, runs
   alone and packed ×4, ×9, ×16, in bf16 and fp32: images/s, packed / alone, peak memory.
   Goal: packed ×9 at least 4× the throughput of one run at a time.
2. A small run (EfficientNet-Lite0, digits, 2-shot, 2 epochs, canvas 64) on CUDA and on CPU:
   the same mapping sequence, accuracy within one test image, ECE within 0.02 (CUDA runs the
   backbone in bf16, so probabilities differ in the third digit).

Without a CUDA device it prints "no CUDA device: …" and exits 0 (the test suite runs it so).

    python benchmarks/bench_gpu.py            # or: make bench-gpu
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from bench_packing import Setting, compare, print_rows  # noqa: E402

from hiddencost.run import make_config, run_one  # noqa: E402

ECE_TOLERANCE = 0.02


def agreement() -> bool:
    """The same small run on CUDA and CPU; prints the comparison, True when it agrees."""
    base = {"method": "ilm", "n_shot": 2, "epochs": 2, "canvas_size": 64, "inner_size": 16}
    gpu = run_one(make_config(**base, device="cuda"))
    cpu = run_one(make_config(**base, device="cpu"))
    same_mappings = gpu.mapping_history == cpu.mapping_history
    one_image = 1 / gpu.n_test
    acc_ok = abs(gpu.accuracy - cpu.accuracy) <= one_image + 1e-12
    ece_ok = abs(gpu.ece - cpu.ece) <= ECE_TOLERANCE
    print(f"CUDA vs CPU: mapping sequence {'same' if same_mappings else 'DIFFERENT'}; "
          f"accuracy {gpu.accuracy:.4f} vs {cpu.accuracy:.4f} (one image = "
          f"{one_image:.4f}); ECE {gpu.ece:.4f} vs {cpu.ece:.4f} (tolerance "
          f"{ECE_TOLERANCE})")
    return same_mappings and acc_ok and ece_ok


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU check did not run (it needs an NVIDIA GPU)")
        return 0
    device = torch.device("cuda")
    print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    setting = Setting("resnet50", "random", 224, 128, 1, device)
    rows = []
    for dtype in ("bf16", "fp32"):
        rows += compare(setting, [4, 9, 16], dtype, repeats=2)
    print_rows(rows)
    nine = [r["ratio"] for r in rows if r["pack"] == 9 and r["dtype"] == "bf16"]
    print(f"packed ×9 (bf16): {nine[0]:.2f}× one run at a time (goal ≥ 4×)")
    ok = agreement()
    print("GPU check:", "passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
