"""Token tiling benchmark (cross-modal reprogramming): one batched gather/reshape against a
loop over patches written the way the reference code tiles them, in one process.

``python benchmarks/bench_crossmodal.py``: a batch of 4 sequences of 256 tokens, 16×16 patches
on a 224×224 canvas (196 slots, the reference's setting), forward and backward through the
tiling (the embedding's gradient is what training needs). Prints the time per batch of each
and the ratio loop / ours; checks first that both give the same canvases and gradients.
"""

from __future__ import annotations

import argparse
import time

import torch

from hiddencost.prompting.crossmodal import TokenPatches, tile_patches


def loop_tiling(patches: torch.Tensor, lengths: torch.Tensor, canvas: int) -> torch.Tensor:
    """One patch at a time into a zero canvas, as the reference loops (repeat-last rule)."""
    b, _, c, p, _ = patches.shape
    per_row = canvas // p
    rows = []
    for i in range(b):
        out = torch.zeros(c, canvas, canvas)
        for slot in range(per_row * per_row):
            token = min(slot, int(lengths[i]) - 1, patches.shape[1] - 1)
            r, col = divmod(slot, per_row)
            out[:, r * p:(r + 1) * p, col * p:(col + 1) * p] = patches[i, token]
        rows.append(out)
    return torch.stack(rows)


def _time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    embed = TokenPatches(30_000, patch=16)
    tokens = torch.randint(0, 30_000, (4, 256))
    lengths = torch.tensor([256, 120, 40, 3])

    def step(tile) -> torch.Tensor:
        embed.zero_grad()
        canvas = tile(embed(tokens), lengths, 224)
        canvas.square().sum().backward()
        return canvas.detach()

    ours, ref = step(tile_patches), step(loop_tiling)
    grad_ours = embed.table.grad.clone()
    step(loop_tiling)
    if not (torch.equal(ours, ref) and torch.allclose(grad_ours, embed.table.grad)):
        print("the two tilings differ: no timing")
        return 1
    t_ours = _time(lambda: step(tile_patches), args.repeats)
    t_ref = _time(lambda: step(loop_tiling), args.repeats)
    print(f"tiling 4 × 256 tokens, 16-px patches, 224-px canvas, forward + backward: "
          f"ours {t_ours * 1e3:.1f} ms, reference-style loop {t_ref * 1e3:.1f} ms, "
          f"ratio {t_ref / t_ours:.1f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
