"""CLIP VP epoch: ours against a plain reference loop written the way earlier code did, in one
process (DESIGN §7: a ratio).

Both train the same frame prompt (30 px, SGD lr 40, momentum 0.9, cosine per step, batch 16)
on the same random-weight CLIP and the same N-shot digits subset, fp32, for one epoch:

- **reference** (Bahng et al.'s loop): a ``DataLoader`` over PIL images with per-item
  torchvision transforms (bicubic resize, centre crop, ToTensor, Normalize), and the class
  texts encoded by the text tower at every step;
- **ours** (:func:`hiddencost.prompting.clip_prompt.train_clip_prompt`): images kept as one
  uint8 tensor, resized and normalised per batch on tensors, the text table encoded once.

The reference also scores the test split after every epoch (as Bahng et al.'s and ILM-VP's
scripts do, to report the best epoch), again re-encoding the texts per batch; ours scores it once,
after the last epoch. So two ratios are printed: one training epoch alone, and a whole run of
``--epochs`` E (the paper's 10): E·(train + test) against E·train + one test pass, each part
timed here.

``python benchmarks/bench_clip.py`` (a small ViT: open_clip's ViT-S-32, 12 blocks of width 384
per tower, 224 px); ``--arch ViT-B-32`` for ViT-B/32. The reference's extra training work is one
text-tower forward of K texts per step (K = 10 digits classes here) and the per-item
transforms; the image tower's forward and backward to the prompt, which both loops need, is
the rest, so the training ratio grows with K.
"""

from __future__ import annotations

import argparse
import time

import open_clip
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from hiddencost.clip.text import DEFAULT_TEMPLATE, column_texts, text_table
from hiddencost.clip.towers import ClipTowers
from hiddencost.data import few_shot_indices, load_dataset
from hiddencost.data.transforms import ResizeNormalize
from hiddencost.prompting.clip_prompt import (
    ClipPromptRun,
    FramePrompt,
    clip_predict,
    train_clip_prompt,
)
from hiddencost.prompting.schedule import sgd_cosine

MEAN, STD = open_clip.constants.OPENAI_DATASET_MEAN, open_clip.constants.OPENAI_DATASET_STD


class PilImages(Dataset):
    """uint8 images as PIL images through per-item transforms, as a torchvision dataset."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, size: int) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(transforms.functional.to_pil_image(self.images[i])), self.labels[i]


def reference_epoch(towers: ClipTowers, images: torch.Tensor, labels: torch.Tensor,
                    class_names: list[str], seed: int) -> None:
    """One epoch of the plain loop: texts re-encoded every step, per-item transforms."""
    clip = towers.clip
    prompt = FramePrompt(towers.image_size)
    loader = DataLoader(PilImages(images, labels, towers.image_size), batch_size=16,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    tokens = open_clip.tokenize(column_texts(class_names, [DEFAULT_TEMPLATE]))
    optimizer, scheduler = sgd_cosine([prompt.delta], len(loader), 40.0)
    for x, y in loader:
        image = F.normalize(clip.encode_image(prompt(x)), dim=-1)
        text = F.normalize(clip.encode_text(tokens), dim=-1)
        loss = F.cross_entropy(clip.logit_scale.exp() * image @ text.t(), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def reference_test(towers: ClipTowers, images: torch.Tensor, labels: torch.Tensor,
                   class_names: list[str]) -> None:
    """The reference's test pass: per-item transforms, texts re-encoded per batch."""
    clip = towers.clip
    prompt = FramePrompt(towers.image_size)
    tokens = open_clip.tokenize(column_texts(class_names, [DEFAULT_TEMPLATE]))
    with torch.no_grad():
        for x, _ in DataLoader(PilImages(images, labels, towers.image_size), batch_size=64):
            image = F.normalize(clip.encode_image(prompt(x)), dim=-1)
            text = F.normalize(clip.encode_text(tokens), dim=-1)
            (clip.logit_scale.exp() * image @ text.t()).argmax(1)


def our_test(towers: ClipTowers, images: torch.Tensor, class_names: list[str]) -> None:
    """Our final test pass (the text table is the one training encoded)."""
    text = text_table(towers, class_names, [DEFAULT_TEMPLATE])
    clip_predict(towers, FramePrompt(towers.image_size), ResizeNormalize(towers.image_size,
                 MEAN, STD), images, text, torch.device("cpu"))


def our_epoch(towers: ClipTowers, images: torch.Tensor, labels: torch.Tensor,
              class_names: list[str], seed: int) -> None:
    """One epoch of :func:`train_clip_prompt`, the text table included in the time."""
    device = torch.device("cpu")
    text = text_table(towers, class_names, [DEFAULT_TEMPLATE])
    run = ClipPromptRun(images, labels, text, len(class_names), 1, 1, 16, seed)
    train_clip_prompt(towers, ResizeNormalize(towers.image_size, MEAN, STD), run, device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-S-32", help="an open_clip model config name")
    parser.add_argument("--n-shot", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the whole-run ratio")
    args = parser.parse_args()
    config = open_clip.get_model_config(args.arch)
    torch.manual_seed(0)
    clip = open_clip.CLIP(config["embed_dim"], config["vision_cfg"], config["text_cfg"],
                          quick_gelu=True).eval()
    clip.requires_grad_(False)
    towers = ClipTowers(clip, config["text_cfg"]["context_length"])
    task = load_dataset("digits", image_size=8)
    idx = few_shot_indices(task.train_labels, args.n_shot, 0).indices
    images, labels = task.train_images[idx], task.train_labels[idx]
    names = list(task.class_names)
    parts = {
        "reference": lambda: reference_epoch(towers, images, labels, names, 0),
        "ours": lambda: our_epoch(towers, images, labels, names, 0),
        "reference test": lambda: reference_test(towers, task.test_images, task.test_labels,
                                                 names),
        "ours test": lambda: our_test(towers, task.test_images, names),
    }
    times = {}
    for name, part in parts.items():
        best = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            part()
            best = min(best, time.perf_counter() - start)
        times[name] = best
    print(f"CLIP {args.arch} (random weights), {args.n_shot}-shot digits ({len(labels)} "
          f"images, {-(-len(labels) // 16)} steps of 16), one VP epoch, fp32, threads "
          f"{torch.get_num_threads()}")
    print(f"reference (texts every step, DataLoader + per-item transforms): "
          f"{times['reference']:.2f} s")
    print(f"ours (text table once, tensor batches):                         "
          f"{times['ours']:.2f} s")
    print(f"training epoch, ratio reference / ours: {times['reference'] / times['ours']:.2f}×")
    print(f"test pass ({len(task.test_labels)} images): reference {times['reference test']:.2f} s,"
          f" ours {times['ours test']:.2f} s")
    e = args.epochs
    whole_ref = e * (times["reference"] + times["reference test"])
    whole_ours = e * times["ours"] + times["ours test"]
    print(f"whole {e}-epoch run (reference tests every epoch, ours once): reference "
          f"{whole_ref:.1f} s, ours {whole_ours:.1f} s, ratio {whole_ref / whole_ours:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
