"""Synthetic result records, complete :class:`~hiddencost.records.RunRecord` objects in the shape
:func:`hiddencost.run.run_one` returns, for the report's tests (no model is trained).

:func:`make_record` builds one record from explicit numbers (so a test knows every answer);
:func:`synthetic_records` builds a whole grid whose effects are known: accuracy falls with the
compression severity and rises with the budget, ECE rises with severity, per-class accuracy
drops on chosen classes, and label mappings move for compressed models. With ``artifacts``, each
VP run also gets ``weights.safetensors`` (``prompt.delta``), ``prompt_history.safetensors`` and
``predictions.safetensors`` (agreeing with its per-class accuracy).

Every record has every field a real record has (weights, split sizes,
effective shots, device, versions); the grid's records are returned as their ``result.json``
dicts (:meth:`RunRecord.to_json`), as a study reads them back from disk.
"""

from __future__ import annotations

import functools
import itertools
import math
import platform
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file

from hiddencost import __version__
from hiddencost.model_table import imagenet_class_names
from hiddencost.records import RunRecord
from hiddencost.report.table import PROMPT_HISTORY_FILE, WEIGHTS_FILE, severity

#: (family, label, level, unit) of a synthetic compression point.
Compression = tuple[str, str, Any, str | None]
#: The synthetic compression points.
DEFAULT_COMPRESSIONS: tuple[Compression, ...] = (
    ("dense", "dense", None, None),
    ("magnitude", "magnitude-global-s0.50", 0.5, "sparsity"),
    ("magnitude", "magnitude-global-s0.90", 0.9, "sparsity"),
    ("quantize", "w4", 4, "bits"),
)
#: ImageNet-1k sources used by the synthetic mappings: dense maps target t to DENSE_SOURCES[t],
#: compressed models move some targets to COMPRESSED_SOURCES[t].
DENSE_SOURCES = (223, 281, 151, 7, 0, 33, 300, 385, 970, 924)
COMPRESSED_SOURCES = (478, 282, 152, 8, 1, 34, 301, 386, 971, 925)
#: Test-split size of every synthetic run (all of it in one reliability bin).
N_TEST = 450
#: Training examples per class of a full-data synthetic run.
FULL_SHOTS = 100
_IMAGENET = imagenet_class_names()


def source_name(index: int) -> str:
    """The ImageNet-1k name of source class ``index``."""
    return _IMAGENET[index] if 0 <= index < len(_IMAGENET) else f"imagenet {index}"


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


def _method_of(compression: Compression) -> str:
    family, _, _, unit = compression
    return "none" if family == "dense" else ("quantize" if unit == "bits" else family)


def _compression(compression: Compression) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the config's compression, the record's compression report) of a synthetic point."""
    _, label, level, unit = compression
    method = _method_of(compression)
    sparsity = float(level) if unit == "sparsity" else 0.0
    bits = int(level) if unit == "bits" else None
    n_weights = 1_000_000
    config = {"method": method, "sparsity": sparsity, "scope": "global", "weight_bits": bits,
              "activation_bits": None, "exclude_first_conv": False,
              "exclude_classifier": False, "seed": 0}
    report = {"method": method, "label": label, "target_sparsity": sparsity,
              "measured_sparsity": sparsity, "weight_bits": bits, "activation_bits": None,
              "n_prunable_weights": n_weights, "n_zero_weights": round(sparsity * n_weights),
              "max_distinct_values_per_channel": 2 ** bits if bits else None,
              "overall_sparsity": sparsity, "n_activation_quantizers": 0}
    return config, report


def _config(model: str, dataset: str, method: str, n_shot: int | None, seed: int,
            compression: dict[str, Any], epochs: int, canvas: int, inner: int) -> dict[str, Any]:
    """A resolved run configuration (every field of ``RunConfig``, as ``result.json`` has)."""
    return {"model": model, "weights": "pretrained", "checkpoint": None, "dataset": dataset,
            "data_root": None, "download": False, "split_seed": 0, "method": method,
            "n_shot": n_shot, "seed": seed, "compression": compression, "epochs": epochs,
            "lr": 0.01, "batch_size": 32, "canvas_size": canvas, "inner_size": inner,
            "lp_image_size": canvas, "many_to_one": False, "device": "cpu",
            "save_prompt_history": True}


def _label_mapping(method: str, mapping: Sequence[int] | None, names: Sequence[str]
                   ) -> list[dict[str, Any]] | None:
    """The mapping table of a VP run with a one-to-one mapping (None for LP and FM)."""
    if method in ("lp", "fm"):
        return None
    src = list(mapping) if mapping is not None else list(DENSE_SOURCES[:len(names)])
    return [{"target": t, "target_name": names[t], "source": s, "source_name": source_name(s)}
            for t, s in enumerate(src)]


def make_record(
    *, dataset: str = "digits", method: str = "ilm", n_shot: int | None = 10, seed: int = 0,
    compression: Compression = DEFAULT_COMPRESSIONS[0],
    accuracy: float = 0.8, ece: float = 0.05, per_class: Sequence[float] | None = None,
    mapping: Sequence[int] | None = None, losses: Sequence[float] = (2.0, 1.5, 1.0),
    model: str = "efficientnet_lite0", confidence_correct: float = 0.7,
    kl_incorrect: float = 0.5, epochs: int | None = None, class_names: Sequence[str] | None = None,
    canvas: int = 32, inner: int = 16,
) -> RunRecord:
    """One complete record with the given numbers; ``compression`` is (family, label, level,
    unit). Derived metrics: mce = min(1, 2·ece), nll = 1 − accuracy/2, brier = 1 − accuracy,
    paper_ece = ece/10, paper_kl_uniform_incorrect = kl_incorrect/10; all test samples sit in
    the reliability bin of confidence min(0.99, accuracy + ece)."""
    k = len(per_class) if per_class is not None else (len(mapping) if mapping else 10)
    names = list(class_names) if class_names else [str(i) for i in range(k)]
    cfg_comp, report = _compression(compression)
    label_mapping = _label_mapping(method, mapping, names)
    shots = n_shot or FULL_SHOTS
    return RunRecord(
        config=_config(model, dataset, method, n_shot, seed, cfg_comp, epochs or len(losses),
                       canvas, inner),
        label_mapping=label_mapping,
        mapping_history=None if label_mapping is None else
        [[m["source"] for m in label_mapping]] * len(losses),
        accuracy=accuracy, ece=ece, mce=min(1.0, 2 * ece), nll=1.0 - accuracy / 2,
        brier=1.0 - accuracy, mean_confidence_correct=confidence_correct,
        kl_to_uniform_incorrect=kl_incorrect, paper_kl_uniform_incorrect=kl_incorrect / 10,
        per_class_accuracy=list(per_class) if per_class is not None else [accuracy] * k,
        reliability=reliability_bins(accuracy, min(0.99, accuracy + ece), N_TEST),
        paper_ece=ece / 10, compression=report, sparsity=report["measured_sparsity"],
        weight_bits=report["weight_bits"], activation_bits=None,
        backbone_weights=f"{model} pretrained (synthetic)", n_train=k * shots, n_test=N_TEST,
        effective_shots={str(c): shots for c in range(k)},
        history=[{"epoch": i + 1, "loss": float(v), "train_accuracy": 0.5, "lr": 0.01,
                  "seconds": 0.01}
                 for i, v in enumerate(losses)],
        final_train_loss=float(losses[-1]), wall_time_s=1.0, device="cpu",
        versions={"hiddencost": __version__, "python": platform.python_version()},
    )


def tags_of(compression: Compression) -> dict[str, Any]:
    """Study tags of a synthetic compression point."""
    family, label, level, unit = compression
    return {"family": family, "compression": label, "level": level, "unit": unit}


def write_prompts(folder: Path, deltas: np.ndarray) -> None:
    """``weights.safetensors`` (final δ) and ``prompt_history.safetensors`` (E×3×C×C)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file({"prompt.delta": np.ascontiguousarray(deltas[-1], dtype=np.float32)},
              str(folder / WEIGHTS_FILE))
    save_file({"delta": np.ascontiguousarray(deltas, dtype=np.float32)},
              str(folder / PROMPT_HISTORY_FILE))


def _grid_record(rng: np.random.Generator, dataset: str, comp: Compression, mi: int,
                 method: str, shot: int | None, seed: int, epochs: int, canvas: int,
                 inner: int) -> RunRecord:
    """One record of the :func:`synthetic_records` grid (two draws from ``rng``)."""
    s = severity(comp[0], comp[2], comp[3])
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
    return make_record(
        dataset=dataset, method=method, n_shot=shot, seed=seed, compression=comp,
        accuracy=float(np.clip(acc, 0, 1)), ece=ece,
        per_class=[float(np.clip(p, 0, 1)) for p in per_class], mapping=mapping,
        losses=[2.3 * math.exp(-0.3 * e) + 0.3 * s for e in range(epochs)],
        confidence_correct=0.8 - 0.3 * s, kl_incorrect=1.2 - 0.8 * s, canvas=canvas,
        inner=inner)


def _grid_prompts(folder: Path, method: str, shot: int | None, seed: int, s: float,
                  epochs: int, canvas: int) -> None:
    """Prompts drifting from a per-(method, shot, seed) base by 2·s (s = severity)."""
    g = np.random.default_rng(zlib.crc32(f"{method}{shot}{seed}".encode()))
    base = g.normal(0, 1, (3, canvas, canvas))
    steps = np.linspace(0.2, 1.0, epochs)[:, None, None, None]
    write_prompts(folder, steps * (base + 2 * s * g.normal(0, 1, base.shape)))


@functools.cache
def _digits_test_labels() -> np.ndarray:
    from hiddencost.data import load_dataset

    return load_dataset("digits").test_labels.numpy()


def write_grid_predictions(folder: Path, per_class: Sequence[float], dataset: str = "digits"
                           ) -> None:
    """``predictions.safetensors`` agreeing with a record's per-class accuracy: the test labels
    of the real digits split (so the report can show its PIEs' images), else 0, 1, …, K−1
    repeated over :data:`N_TEST` examples; in each class the first round(acc·n) examples are
    predicted right, the others as the next class."""
    from hiddencost.predictions import write_predictions

    k = len(per_class)
    labels = _digits_test_labels() if dataset == "digits" and k == 10 else np.arange(N_TEST) % k
    predicted = labels.copy()
    for c, acc in enumerate(per_class):
        members = np.flatnonzero(labels == c)
        wrong = members[int(round((acc or 0.0) * len(members))):]
        predicted[wrong] = (c + 1) % k
    write_predictions(folder, np.eye(k, dtype=np.float32)[predicted] * 4.0, labels)


def synthetic_records(
    datasets: Sequence[str] = ("digits",),
    methods: Sequence[str] = ("ilm", "flm", "lp"),
    compressions: Sequence[Compression] = DEFAULT_COMPRESSIONS,
    shots: Sequence[int | None] = (1, 10, None),
    seeds: Sequence[int] = (0, 1, 2),
    epochs: int = 6,
    artifacts: str | Path | None = None,
    canvas: int = 32,
    inner: int = 16,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str | None], list[str]]:
    """A grid of synthetic records: (``result.json`` dicts, tags, artifact folders, keys).

    Accuracy = 0.55 + 0.1·log10(shots) (full data: 0.85) + 0.02·(method index) − 0.25·s²
    (s = severity) + seed noise of sd 0.01; ECE = 0.04 + 0.15·s + noise; classes 0 and 1 lose
    30·s and 20·s points more than the others and class 9 gains 10·s over dense; compressed
    models with s ≥ 0.5 move the sources of targets 0–2 to other ImageNet classes.
    """
    rng = np.random.default_rng(0)
    records, tags, folders, keys = [], [], [], []
    for dataset, comp, (mi, method), shot, seed in itertools.product(
            datasets, compressions, enumerate(methods), shots, seeds):
        record = _grid_record(rng, dataset, comp, mi, method, shot, seed, epochs, canvas, inner)
        key = f"{dataset}-{comp[1]}-{method}-{shot}-{seed}"
        folder = None
        if artifacts is not None and method != "lp":
            folder = Path(artifacts) / key
            _grid_prompts(folder, method, shot, seed, severity(comp[0], comp[2], comp[3]),
                          epochs, canvas)
            write_grid_predictions(folder, record.per_class_accuracy, dataset)
        records.append(record.to_json())
        tags.append(tags_of(comp))
        folders.append(str(folder) if folder is not None else None)
        keys.append(key)
    return records, tags, folders, keys

