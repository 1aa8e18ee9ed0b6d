"""Synthetic result records in the shape of :func:`hiddencost.run.run_one`'s, for tests and for
previewing a report without training anything.

:func:`make_record` builds one record from explicit numbers (so a test knows every answer);
:func:`synthetic_records` builds a whole grid whose effects are known: accuracy falls with the
compression severity and rises with the budget, ECE rises with severity, per-class accuracy
drops on chosen classes, and label mappings move for compressed models. With ``artifacts``, each
VP run also gets ``weights.safetensors`` (``prompt.delta``) and ``prompt_history.safetensors``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hiddencost.report.table import PROMPT_HISTORY_FILE, WEIGHTS_FILE

#: (family, label, level, unit) of the synthetic compression points.
DEFAULT_COMPRESSIONS: tuple[tuple[str, str, Any, str | None], ...] = (
    ("dense", "dense", None, None),
    ("magnitude", "magnitude-global-s0.50", 0.5, "sparsity"),
    ("magnitude", "magnitude-global-s0.90", 0.9, "sparsity"),
    ("quantize", "w4", 4, "bits"),
)
#: ImageNet-1k sources used by the synthetic mappings: dense maps target t to DENSE_SOURCES[t],
#: compressed models move some targets to COMPRESSED_SOURCES[t].
DENSE_SOURCES = (223, 281, 151, 7, 0, 33, 300, 385, 970, 924)
COMPRESSED_SOURCES = (478, 282, 152, 8, 1, 34, 301, 386, 971, 925)
SOURCE_NAMES = {
    0: "tench", 1: "goldfish", 7: "cock", 8: "hen", 33: "loggerhead", 34: "leatherback turtle",
    151: "Chihuahua", 152: "Japanese spaniel", 223: "schipperke", 281: "tabby",
    282: "tiger cat", 300: "tiger beetle", 301: "ladybug", 385: "Indian elephant",
    386: "African elephant", 478: "carton", 924: "guacamole", 925: "consomme", 970: "alp",
    971: "bubble",
}


def source_name(index: int) -> str:
    """The ImageNet-1k name of ``index`` (torchvision's list; a built-in few without it)."""
    from hiddencost.report.analyses import _imagenet_names

    names = _imagenet_names()
    if names is not None and 0 <= index < len(names):
        return names[index]
    return SOURCE_NAMES.get(index, f"imagenet {index}")


def reliability_bins(accuracy: float, confidence: float, n: int, n_bins: int = 15
                     ) -> dict[str, list]:
    """Reliability data with all ``n`` samples in the bin of ``confidence``."""
    edges = [i / n_bins for i in range(n_bins + 1)]
    b = min(max(math.ceil(confidence * n_bins) - 1, 0), n_bins - 1)
    counts = [0] * n_bins
    counts[b] = n
    acc: list[float | None] = [None] * n_bins
    conf: list[float | None] = [None] * n_bins
    acc[b], conf[b] = accuracy, confidence
    return {"edges": edges, "counts": counts, "accuracy": acc, "confidence": conf}


def make_record(
    *, dataset: str = "digits", method: str = "ilm", n_shot: int | None = 10, seed: int = 0,
    compression: tuple[str, str, Any, str | None] = DEFAULT_COMPRESSIONS[0],
    accuracy: float = 0.8, ece: float = 0.05, per_class: Sequence[float] | None = None,
    mapping: Sequence[int] | None = None, losses: Sequence[float] = (2.0, 1.5, 1.0),
    model: str = "efficientnet_lite0", confidence_correct: float = 0.7,
    kl_incorrect: float = 0.5, epochs: int | None = None, class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One record in run_one's shape with the given numbers; ``compression`` is
    (family, label, level, unit). Keys absent from real records are not added."""
    family, label, level, unit = compression
    method_name = "none" if family == "dense" else ("quantize" if unit == "bits" else family)
    sparsity = float(level) if unit == "sparsity" else 0.0
    bits = int(level) if unit == "bits" else None
    k = len(per_class) if per_class is not None else (len(mapping) if mapping else 10)
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    cfg_comp = {"method": method_name, "sparsity": sparsity, "scope": "global",
                "weight_bits": bits, "activation_bits": None, "exclude_first_conv": False,
                "exclude_classifier": False, "seed": 0}
    record: dict[str, Any] = {
        "config": {"model": model, "weights": "pretrained", "checkpoint": None,
                   "dataset": dataset, "split_seed": 0, "method": method, "n_shot": n_shot,
                   "seed": seed, "compression": cfg_comp, "epochs": epochs or len(losses),
                   "lr": 0.01, "batch_size": 32, "canvas_size": 32, "inner_size": 16,
                   "lp_image_size": 32, "many_to_one": False, "save_prompt_history": True},
        "accuracy": accuracy, "ece": ece, "mce": min(1.0, 2 * ece), "nll": 1.0 - accuracy / 2,
        "brier": 1.0 - accuracy, "mean_confidence_correct": confidence_correct,
        "kl_to_uniform_incorrect": kl_incorrect,
        "per_class_accuracy": list(per_class) if per_class is not None else [accuracy] * k,
        "reliability": reliability_bins(accuracy, min(0.99, accuracy + ece), 450),
        "paper_ece": ece / 10,
        "compression": {"method": method_name, "label": label, "target_sparsity": sparsity,
                        "measured_sparsity": sparsity, "weight_bits": bits,
                        "activation_bits": None},
        "sparsity": sparsity, "weight_bits": bits, "activation_bits": None,
        "history": [{"epoch": i + 1, "loss": float(v), "train_accuracy": 0.5, "lr": 0.01}
                    for i, v in enumerate(losses)],
        "final_train_loss": float(losses[-1]), "wall_time_s": 1.0,
    }
    if method == "lp" or method == "fm":
        record["label_mapping"] = None
    else:
        src = list(mapping) if mapping is not None else list(DENSE_SOURCES[:k])
        record["label_mapping"] = [
            {"target": t, "target_name": names[t], "source": s, "source_name": source_name(s)}
            for t, s in enumerate(src)]
    return record


def tags_of(compression: tuple[str, str, Any, str | None]) -> dict[str, Any]:
    """Study tags of a synthetic compression point."""
    family, label, level, unit = compression
    return {"family": family, "compression": label, "level": level, "unit": unit}


def write_prompts(folder: Path, deltas: np.ndarray) -> None:
    """``weights.safetensors`` (final δ) and ``prompt_history.safetensors`` (E×3×C×C)."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prompt.delta": np.ascontiguousarray(deltas[-1], dtype=np.float32)},
              str(folder / WEIGHTS_FILE))
    save_file({"delta": np.ascontiguousarray(deltas, dtype=np.float32)},
              str(folder / PROMPT_HISTORY_FILE))


def synthetic_records(
    datasets: Sequence[str] = ("digits",),
    methods: Sequence[str] = ("ilm", "flm", "lp"),
    compressions: Sequence[tuple[str, str, Any, str | None]] = DEFAULT_COMPRESSIONS,
    shots: Sequence[int | None] = (1, 10, None),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 6,
    artifacts: str | Path | None = None,
    canvas: int = 32,
    inner: int = 16,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str | None], list[str]]:
    """A grid of synthetic records: (records, tags, artifact folders, keys).

    Accuracy = 0.55 + 0.1·log10(shots) (full data: 0.85) + 0.02·(method index) − 0.25·s²
    (s = severity) + seed noise of sd 0.01; ECE = 0.04 + 0.15·s + noise; classes 0 and 1 lose
    30·s and 20·s points more than the others and class 9 gains 10·s over
    dense; compressed models with s ≥ 0.5 move the sources
    of targets 0–2 to other ImageNet classes.
    """
    from hiddencost.report.table import severity

    rng = np.random.default_rng(0)
    records, tags, folders, keys = [], [], [], []
    for dataset in datasets:
        for comp in compressions:
            s = severity(comp[0], comp[2], comp[3])
            for mi, method in enumerate(methods):
                for shot in shots:
                    for seed in seeds:
                        base = 0.85 if shot is None else 0.55 + 0.1 * math.log10(shot)
                        acc = base + 0.02 * mi - 0.25 * s * s + rng.normal(0, 0.01)
                        ece = 0.04 + 0.15 * s + abs(rng.normal(0, 0.005))
                        per_class = [acc] * 10
                        per_class[0] -= 0.30 * s
                        per_class[1] -= 0.20 * s
                        per_class[9] = min(1.0, base + 0.02 * mi + 0.10 * s)
                        mapping = list(DENSE_SOURCES)
                        if s >= 0.5:
                            mapping[:3] = COMPRESSED_SOURCES[:3]
                        losses = [2.3 * math.exp(-0.3 * e) + 0.3 * s for e in range(epochs)]
                        rec = make_record(
                            dataset=dataset, method=method, n_shot=shot, seed=seed,
                            compression=comp, accuracy=float(np.clip(acc, 0, 1)), ece=ece,
                            per_class=[float(np.clip(p, 0, 1)) for p in per_class],
                            mapping=mapping, losses=losses,
                            confidence_correct=0.8 - 0.3 * s, kl_incorrect=1.2 - 0.8 * s)
                        rec["config"].update(canvas_size=canvas, inner_size=inner)
                        key = f"{dataset}-{comp[1]}-{method}-{shot}-{seed}"
                        folder = None
                        if artifacts is not None and method != "lp":
                            folder = Path(artifacts) / key
                            g = np.random.default_rng(
                                zlib.crc32(f"{method}{shot}{seed}".encode()))
                            base_d = g.normal(0, 1, (3, canvas, canvas))
                            steps = np.linspace(0.2, 1.0, epochs)[:, None, None, None]
                            deltas = steps * (base_d + 2 * s * g.normal(0, 1, base_d.shape))
                            write_prompts(folder, deltas)
                        records.append(rec)
                        tags.append(tags_of(comp))
                        folders.append(str(folder) if folder is not None else None)
                        keys.append(key)
    return records, tags, folders, keys
