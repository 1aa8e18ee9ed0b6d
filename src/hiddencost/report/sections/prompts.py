"""The prompt-evolution section: how far compressed models' learned prompts drift from the
dense model's per epoch, the prompts as images, and the training-loss trajectories."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

import hiddencost.report.figures as fg
from hiddencost.report.builder import SectionSpec, Task, TaskFigure, _Builder, _of
from hiddencost.report.common import (
    COMPRESSION_META,
    TASK,
    _dense_and_most_compressed,
    _empty,
    _meta,
    _sort,
    largest_budget,
)
from hiddencost.report.html import Note, Section
from hiddencost.report.stats import mean_ci

#: (prompts E'×3×C×C, their epochs, ``history`` | ``final``) of one run.
Prompts = tuple[np.ndarray, list[int], str]


def load_prompts(path: str) -> np.ndarray:
    """δ after each epoch, ``(E, 3, C, C)`` float32, from ``prompt_history.safetensors``."""
    return load_file(path)["delta"].astype(np.float32)


def load_final_prompt(path: str) -> np.ndarray | None:
    """The final δ ``(3, C, C)`` from ``weights.safetensors``; None for LP heads."""
    tensors = load_file(path)
    d = tensors.get("prompt.delta")
    return None if d is None else d.astype(np.float32)


def _prompts_of(row: Any) -> Prompts | None:
    """(prompts E'×3×C×C, their epochs, 'history' | 'final') for a table row, or None."""
    try:
        if row.prompt_history:
            p = load_prompts(row.prompt_history)
            return p, list(range(1, len(p) + 1)), "history"
        if row.weights:
            final = load_final_prompt(row.weights)
            if final is not None:
                epochs = int(row.epochs) if row.epochs else 1
                return final[None], [epochs], "final"
    except (OSError, KeyError, ValueError, TypeError):
        return None
    return None


def prompt_distance(df: pd.DataFrame) -> pd.DataFrame:
    """Per task × VP method × budget × compressed point × epoch: the L2 distance between the
    dense and the compressed model's prompt parameters, ``‖δ_dense(e) − δ_comp(e)‖₂`` over all
    3·C·C entries (same seed; then mean and 95% t-interval over seeds). Uses the per-epoch
    prompt history when both runs kept one (``source = history``), else the final prompts in
    ``weights.safetensors`` (``source = final``, one point at the last epoch)."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "budget_rank", "epoch",
            "source", "n_seeds", "mean", "lo", "hi", "sd"]
    if df.empty:
        return _empty(cols)
    pairs = _prompt_pairs(_vp_runs(df))
    if not pairs:
        return _empty(cols)
    out = _summarize_long(pd.DataFrame(pairs),
                          [*TASK, "method", "budget", "compression", "epoch", "source"], "value",
                          _meta(df))
    return _sort(out[cols], df, ["epoch"])


def _vp_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of ``df`` with a learned prompt on disk (methods that learn one; LP has none)."""
    return df[df["learns_prompt"] & (df["prompt_history"].notna() | df["weights"].notna())]


def _prompt_pairs(vp: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per compressed VP run × epoch: ``value`` = the L2 distance of its prompt to the
    dense run's of the same task, method, budget and seed (see :func:`prompt_distance`)."""
    cache: dict[str, Prompts | None] = {}

    def prompts(row: Any) -> Prompts | None:
        key = str(row.prompt_history or row.weights)  # the file the prompts come from
        if key not in cache:
            cache[key] = _prompts_of(row)
        return cache[key]

    pairs = []
    dense = {(r.backbone, r.dataset, r.method, r.budget, r.seed): r
             for r in vp[vp["is_dense"]].itertuples(index=False)}
    for r in vp[~vp["is_dense"]].itertuples(index=False):
        d = dense.get((r.backbone, r.dataset, r.method, r.budget, r.seed))
        got = _prompt_distances(prompts(d), prompts(r)) if d is not None else None
        if got is None:
            continue
        epochs, dist, source = got
        pairs += [{"backbone": r.backbone, "dataset": r.dataset, "method": r.method,
                   "budget": r.budget, "budget_rank": r.budget_rank,
                   "compression": r.compression, "epoch": e, "source": source,
                   "value": float(v)} for e, v in zip(epochs, dist, strict=True)]
    return pairs


def _prompt_distances(dense: Prompts | None, comp: Prompts | None
                      ) -> tuple[list[int], np.ndarray, str] | None:
    """(epochs, ‖δ_dense(e) − δ_comp(e)‖₂ per epoch, source): per epoch over the common
    epochs when both runs kept a history, else the final prompts only; None when either run
    has no prompts or their shapes differ."""
    if dense is None or comp is None or dense[0].shape[1:] != comp[0].shape[1:]:
        return None
    if dense[2] == "history" and comp[2] == "history":
        n = min(len(dense[0]), len(comp[0]))
        dist = np.sqrt(((dense[0][:n] - comp[0][:n]) ** 2).reshape(n, -1).sum(axis=1))
        return dense[1][:n], dist, "history"
    dist = np.sqrt(((dense[0][-1] - comp[0][-1]) ** 2).sum())[None]
    return [dense[1][-1]], dist, "final"


def prompt_mask(canvas: int, inner: int) -> np.ndarray:
    """The pad-prompt mask M (C×C): 1 on the border, 0 over the image, which sits at
    top/left offset ⌊(C − s + 1)/2⌋ (DESIGN §3)."""
    m = np.ones((canvas, canvas), dtype=np.float32)
    off = (canvas - inner + 1) // 2
    m[off:off + inner, off:off + inner] = 0.0
    return m


def prompt_image(delta: np.ndarray, inner: int | None) -> np.ndarray:
    """What the prompt adds, as an H×W×3 image in [0, 1]: sigmoid(δ) on the border; the image
    area (where M = 0) is shown white."""
    img = 1.0 / (1.0 + np.exp(-delta.astype(np.float64)))
    if inner:
        m = prompt_mask(delta.shape[-1], int(inner))
        img = img * m + (1.0 - m)
    return np.clip(img.transpose(1, 2, 0), 0.0, 1.0)


def _snapshots(got: Prompts, inner: int | None, n_epochs: int) -> list[dict[str, Any]]:
    """``n_epochs`` evenly spaced prompts of one run (first and last included) with their
    epoch, source, ‖δ‖₂, border mean of sigmoid(δ) and :func:`prompt_image`."""
    prompts, epochs, source = got
    idx = sorted({int(round(x)) for x in np.linspace(0, len(prompts) - 1,
                                                     min(n_epochs, len(prompts)))})
    out = []
    for i in idx:
        delta = prompts[i].astype(np.float64)
        mask = prompt_mask(delta.shape[-1], int(inner)) if inner else \
            np.ones(delta.shape[-2:], dtype=np.float32)
        sig = 1.0 / (1.0 + np.exp(-delta))
        out.append({"epoch": epochs[i], "source": source,
                    "l2_norm": float(np.sqrt((delta ** 2).sum())),
                    "border_mean": float((sig * mask).sum() / (3 * mask.sum())),
                    "image": prompt_image(prompts[i], inner)})
    return out


def prompt_snapshots(df: pd.DataFrame, n_epochs: int = 3) -> pd.DataFrame:
    """The learned prompts of the dense model and of each family's most compressed point at
    ``n_epochs`` epochs (first, evenly spaced, last; only the last without a history), per
    task × VP method at the largest budget and smallest seed. Column ``image`` holds the
    H×W×3 array of :func:`prompt_image`; ``l2_norm`` is ‖δ‖₂ and ``border_mean`` the mean of
    sigmoid(δ) over the border."""
    cols = [*TASK, "method", "budget", "seed", "compression", *COMPRESSION_META, "epoch",
            "source", "l2_norm", "border_mean", "image"]
    if df.empty:
        return _empty(cols)
    vp = _vp_runs(df)
    meta = _meta(df)
    rows = []
    for k, g in vp.groupby([*TASK, "method"], sort=False):
        if not g["is_dense"].any():
            continue
        b = largest_budget(g[g["is_dense"]])
        g = g[g["budget"] == b]
        s = int(g.loc[g["is_dense"], "seed"].min())
        g = g[g["seed"] == s]
        cell = {**dict(zip([*TASK, "method"], k, strict=True)), "budget": b, "seed": s}
        for comp in _dense_and_most_compressed(g):
            run = next(g[g["compression"] == comp].itertuples(index=False), None)
            got = _prompts_of(run) if run is not None else None
            if got is not None:
                rows += [{**cell, "compression": comp, **meta[comp], **snap}
                         for snap in _snapshots(got, run.inner_size, n_epochs)]
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df, ["epoch"])


def loss_trajectories(df: pd.DataFrame) -> pd.DataFrame:
    """Per task × method × budget × compression × epoch: the mean training loss (cross-entropy,
    nats, averaged over the epoch's batches) over seeds with its 95% t-interval."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "budget_rank", "epoch",
            "n_seeds", "mean", "lo", "hi", "sd"]
    if df.empty:
        return _empty(cols)
    long = []
    for r in df.itertuples(index=False):
        if not isinstance(r.history, list):
            continue
        for i, h in enumerate(r.history, 1):
            if isinstance(h, dict) and h.get("loss") is not None:
                long.append({"backbone": r.backbone, "dataset": r.dataset, "method": r.method,
                             "budget": r.budget, "budget_rank": r.budget_rank,
                             "compression": r.compression, "epoch": int(h.get("epoch", i)),
                             "loss": float(h["loss"])})
    if not long:
        return _empty(cols)
    meta = _meta(df)
    out = _summarize_long(pd.DataFrame(long), [*TASK, "method", "budget", "compression", "epoch"],
                          "loss", meta)
    return _sort(out[cols], df, ["epoch"])


def _summarize_long(long: pd.DataFrame, keys: list[str], value: str,
                    meta: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for k, g in long.groupby(keys, sort=False):
        ci = mean_ci(g[value])
        row = dict(zip(keys, k, strict=True))
        rows.append({**row, **meta[row["compression"]],
                     "budget_rank": float(g["budget_rank"].iloc[0]), "n_seeds": ci.n,
                     "mean": ci.mean, "lo": ci.lo, "hi": ci.hi, "sd": ci.sd})
    return pd.DataFrame(rows)


PROMPT_DISTANCE = TaskFigure(
    "prompt-distance", "Prompt distance to dense",
    "L2 norm of the difference between the dense and the compressed model's prompt "
    "parameters δ (3 × canvas × canvas values, same seed) per epoch, one panel per VP method, "
    "one line per compressed model and data budget; {final}{seeds}.", fg.plot_prompt_distance)
PROMPT_IMAGES = TaskFigure(
    "prompt-images", "Learned prompts",
    "The prompt each model adds to the border of the canvas, sigmoid(δ) as RGB (grey = the "
    "initial value 0.5; the white square is where the image goes; contrast around 0.5 "
    "stretched by the factor in the legend, the same for every panel), at a few epochs, for "
    "the dense model and each family's most compressed model, at the largest budget and first "
    "seed.", fg.plot_prompt_images)
LOSS = TaskFigure(
    "loss", "Training loss",
    "Mean training cross-entropy per epoch for the dense and the compressed models, one "
    "column per transfer method, rows for the smallest and the largest data budget; {seeds}.",
    fg.plot_loss)


def _prompt_notes(b: _Builder, s: Section, dist: pd.DataFrame) -> None:
    vp = b.df[b.df["learns_prompt"]] if not b.df.empty else b.df
    if not vp.empty and vp["prompt_history"].isna().all():
        s.items.append(Note(
            "No run kept its per-epoch prompts (set save_prompt_history: true in the study's "
            "params): prompt distances and images use the final prompts only.", "info"))
    if dist.empty:
        s.items.append(Note("Prompt distances: skipped, no pair of dense and compressed VP runs "
                            "with saved prompts (weights.safetensors) for the same cell and "
                            "seed."))


def _fill_prompts(b: _Builder, s: Section, tasks: list[Task]) -> None:
    dist, snaps = prompt_distance(b.df), prompt_snapshots(b.df)
    loss = loss_trajectories(b.df)
    b.save_tables(prompt_distance=dist, prompt_snapshots=snaps, loss_trajectories=loss)
    _prompt_notes(b, s, dist)
    for task in tasks:
        if not dist.empty:
            d = _of(dist, task)
            final = not d.empty and (d["source"] == "final").all()
            b.task_figure(s, PROMPT_DISTANCE, task, d,
                          final="final epoch only (no prompt history); " if final else "")
        if not snaps.empty:
            b.task_figure(s, PROMPT_IMAGES, task, snaps)
        b.task_figure(s, LOSS, task, loss)


SECTION = SectionSpec(
    "prompts", "Prompt evolution",
    "How far each compressed model's learned prompt drifts from the dense model's "
    "during training, what the prompts look like, and the training-loss "
    "trajectories.", _fill_prompts)
