"""The paper's analyses, one function each, from the tidy run table of
:mod:`hiddencost.report.table` to the table behind a figure (a DataFrame).

Conventions shared by every function:

- A *task* is a (``backbone``, ``dataset``) pair; a *cell* is a task × ``method`` × ``budget``
  (× compression). Replicates are seeds: every mean is over the seeds of a cell, with a 95%
  Student-t interval (:func:`hiddencost.report.stats.mean_ci`; NaN bounds with one seed).
- Accuracy and ECE are in percent, differences of them in percentage points (pp); confidence
  is a probability; KL divergence is in nats.
- Δ (delta) is **dense − compressed** for accuracy (positive = compression costs accuracy) and
  **compressed − dense** for ECE (positive = compression worsens calibration).
- The dense reference of a compressed run is the dense run of the same backbone, dataset,
  method, budget and seed (same few-shot subset).
- An analysis with no usable input returns an empty DataFrame; the report turns that into a
  note, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from safetensors.numpy import load_file
from scipy.stats import spearmanr

from hiddencost.model_table import imagenet_class_names
from hiddencost.prompting.catalog import methods_reading
from hiddencost.report.order import budget_order, compression_order
from hiddencost.report.stats import ALPHA, mean_ci, welch_test
from hiddencost.report.table import class_names

TASK: list[str] = ["backbone", "dataset"]
#: Per-compression descriptors carried along by every analysis.
COMPRESSION_META: list[str] = ["family", "compression_name", "level", "unit", "severity"]
PERCENT = 100.0


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _empty(columns: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=list(columns))


def _meta(df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    out = {}
    for row in df.drop_duplicates("compression").itertuples(index=False):
        out[row.compression] = {k: getattr(row, k) for k in COMPRESSION_META}
    return out


def _sort(out: pd.DataFrame, df: pd.DataFrame, extra: Sequence[str] = ()) -> pd.DataFrame:
    """Sort an analysis table: tasks and methods in order of appearance, compressions in
    :func:`compression_order`, budgets by shots, then ``extra`` columns."""
    if out.empty:
        return out.reset_index(drop=True)
    orders: dict[str, list] = {
        "backbone": list(dict.fromkeys(df["backbone"])),
        "dataset": list(dict.fromkeys(df["dataset"])),
        "method": list(dict.fromkeys(df["method"])),
        "compression": compression_order(df),
        "budget": budget_order(df),
    }
    keys = [c for c in ("backbone", "dataset", "method", "compression", "budget")
            if c in out.columns]
    tmp = out.copy()
    sort_cols = []
    for c in keys:
        rank = {v: i for i, v in enumerate(orders[c])}
        tmp[f"_{c}"] = [rank.get(v, len(rank)) for v in tmp[c]]
        sort_cols.append(f"_{c}")
    sort_cols += [c for c in extra if c in tmp.columns]
    tmp = tmp.sort_values(sort_cols, kind="stable")
    return tmp.drop(columns=[c for c in tmp.columns if c.startswith("_")]).reset_index(drop=True)


def _summarize(df: pd.DataFrame, keys: list[str], value: str, scale: float = 1.0
               ) -> pd.DataFrame:
    """Mean and 95% t-interval of ``value × scale`` over the rows (seeds) of each group."""
    rows = []
    meta = _meta(df)
    for k, g in df.groupby(keys, sort=False, dropna=False):
        vals = [v * scale for v in g[value] if v is not None and v == v]
        ci = mean_ci(vals)
        row = dict(zip(keys, k if isinstance(k, tuple) else (k,), strict=True))
        if "compression" in row:
            row.update(meta[row["compression"]])
        if "budget" in row:
            row["budget_rank"] = float(g["budget_rank"].iloc[0])
        row.update(n_seeds=ci.n, mean=ci.mean, lo=ci.lo, hi=ci.hi, sd=ci.sd)
        rows.append(row)
    return pd.DataFrame(rows)


def _dense_pairs(sub: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame, pd.DataFrame]]:
    """Each compressed cell (task, method, budget, compression) of ``sub`` with its dense
    cell (the same task, method and budget): ``(key, dense rows, compressed rows)``; cells
    without a dense counterpart are skipped."""
    cell = [*TASK, "method", "budget"]
    dense = {k: g for k, g in sub[sub["is_dense"]].groupby(cell, sort=False)}
    for k, g in sub[~sub["is_dense"]].groupby([*cell, "compression"], sort=False):
        d = dense.get(k[:4])
        if d is not None:
            yield k, d, g


def largest_budget(df: pd.DataFrame) -> str | None:
    """The budget with the most shots (``full`` when present)."""
    if df.empty:
        return None
    return str(df.loc[df["budget_rank"].idxmax(), "budget"])


def most_compressed(df: pd.DataFrame) -> list[str]:
    """Per family, the most compressed point present in ``df`` (highest severity; the last one
    in order when severity is unknown)."""
    order = compression_order(df)
    out: dict[str, str] = {}
    for comp in order:
        fam = df.loc[df["compression"] == comp, "family"].iloc[0]
        if fam != "dense":
            out[fam] = comp  # order is ascending severity within a family
    return list(out.values())


def _dense_and_most_compressed(g: pd.DataFrame) -> list[str]:
    """The dense point of ``g`` (it must have one) and each family's most compressed point."""
    return [g.loc[g["is_dense"], "compression"].iloc[0], *most_compressed(g)]


def max_seeds(df: pd.DataFrame) -> int:
    """The largest number of seeds of any cell × compression (1 → no intervals possible)."""
    if df.empty:
        return 0
    return int(df.groupby([*TASK, "method", "budget", "compression"], sort=False)["seed"]
               .nunique().max())


# --------------------------------------------------------------------------------------------
# 1. accuracy vs data budget
# --------------------------------------------------------------------------------------------


def accuracy_vs_budget(df: pd.DataFrame, metric: str = "accuracy") -> pd.DataFrame:
    """Per task × method × compression × budget: mean test accuracy (%) over seeds with its 95%
    t-interval (``lo``, ``hi``; NaN with one seed)."""
    cols = [*TASK, "method", "compression", "budget", *COMPRESSION_META, "budget_rank",
            "n_seeds", "mean", "lo", "hi", "sd"]
    sub = df[df[metric].notna()] if not df.empty else df
    if sub.empty:
        return _empty(cols)
    out = _summarize(sub, [*TASK, "method", "compression", "budget"], metric, PERCENT)
    return _sort(out[cols], df)


# --------------------------------------------------------------------------------------------
# 2. Δ heatmaps with a significance test
# --------------------------------------------------------------------------------------------


def delta_heatmap(df: pd.DataFrame, metric: str = "accuracy", alpha: float = ALPHA,
                  dense_minus_compressed: bool = True) -> pd.DataFrame:
    """Per task × method × compressed point × budget: Δ = mean(dense) − mean(compressed) of
    ``metric`` in pp over seeds (or compressed − dense with ``dense_minus_compressed=False``),
    with Welch's two-sided t-test of equal means (:func:`~hiddencost.report.stats.welch_test`)
    and the Welch 95% interval of Δ.

    ``significant`` is True / False at level ``alpha`` (no multiple-comparison correction), and
    None when untested (``reason``: fewer than 2 seeds on a side, or zero variance). Cells
    without a dense counterpart are absent.
    """
    cols = [*TASK, "method", "compression", "budget", *COMPRESSION_META, "budget_rank",
            "dense_mean", "compressed_mean", "delta", "delta_lo", "delta_hi", "n_dense",
            "n_compressed", "t", "df", "p", "tested", "significant", "reason"]
    if df.empty:
        return _empty(cols)
    sub = df[df[metric].notna()]
    meta = _meta(df)
    rows = []
    for k, d, g in _dense_pairs(sub):
        dv = [v * PERCENT for v in d[metric]]
        cv = [v * PERCENT for v in g[metric]]
        w = welch_test(dv, cv) if dense_minus_compressed else welch_test(cv, dv)
        lo, hi = w.diff_ci()
        rows.append({
            **dict(zip([*TASK, "method", "budget", "compression"], k, strict=True)),
            **meta[k[4]], "budget_rank": float(g["budget_rank"].iloc[0]),
            "dense_mean": float(np.mean(dv)), "compressed_mean": float(np.mean(cv)),
            "delta": w.diff, "delta_lo": lo, "delta_hi": hi, "n_dense": w.n_a if
            dense_minus_compressed else w.n_b, "n_compressed": w.n_b if dense_minus_compressed
            else w.n_a, "t": w.t, "df": w.df, "p": w.p, "tested": w.tested,
            "significant": w.significant(alpha), "reason": w.reason,
        })
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df)


# --------------------------------------------------------------------------------------------
# 3. calibration, 4. confidence: a metric against the compression level
# --------------------------------------------------------------------------------------------


def metric_vs_compression(df: pd.DataFrame, metric: str, scale: float = 1.0) -> pd.DataFrame:
    """Per task × method × budget × compression point (dense included): mean of
    ``metric × scale`` over seeds with its 95% t-interval."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "budget_rank",
            "metric", "n_seeds", "mean", "lo", "hi", "sd"]
    sub = df[df[metric].notna()] if not df.empty and metric in df else df.iloc[0:0]
    if sub.empty:
        return _empty(cols)
    out = _summarize(sub, [*TASK, "method", "budget", "compression"], metric, scale)
    out["metric"] = metric
    return _sort(out[cols], df)


def ece_vs_compression(df: pd.DataFrame) -> pd.DataFrame:
    """ECE (%, 15 bins, top-label) against the compression level: :func:`metric_vs_compression`
    of ``ece`` × 100."""
    return metric_vs_compression(df, "ece", PERCENT)


def confidence_vs_compression(df: pd.DataFrame) -> pd.DataFrame:
    """The paper's Figures 10–13: mean confidence of the true class over correctly classified
    test samples, ``(1/|C|) Σ_{i∈C} p_{i,y_i}``, and mean ``KL(p_i ‖ u) = Σ_k p_ik log(K p_ik)``
    (nats) over misclassified samples, and the paper's own value of the latter, ``KL(u ‖ p_i)/K``
    (:func:`hiddencost.metrics.paper_kl_uniform_incorrect`, what its Figures 11 and 13 plot),
    against the compression level; the metrics stacked (column ``metric``)."""
    parts = [metric_vs_compression(df, m) for m in
             ("mean_confidence_correct", "kl_to_uniform_incorrect",
              "paper_kl_uniform_incorrect")]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return metric_vs_compression(df, "mean_confidence_correct")
    return pd.concat(parts, ignore_index=True)


def _pooled_bins(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reliability bins of ``runs`` (seeds of one point) pooled, weighted by the counts
    (see :func:`reliability_table`); empty without runs."""
    if not runs:
        return []
    edges = runs[0]["edges"]
    out = []
    for i in range(len(runs[0]["counts"])):
        cnt = sum(int(r["counts"][i]) for r in runs)
        acc = sum(int(r["counts"][i]) * (r["accuracy"][i] or 0.0) for r in runs)
        conf = sum(int(r["counts"][i]) * (r["confidence"][i] or 0.0) for r in runs)
        out.append({"bin": i, "bin_lo": edges[i], "bin_hi": edges[i + 1], "count": cnt,
                    "accuracy": acc / cnt if cnt else math.nan,
                    "confidence": conf / cnt if cnt else math.nan, "n_seeds": len(runs)})
    return out


def reliability_table(df: pd.DataFrame, budget: str | None = None) -> pd.DataFrame:
    """Reliability-diagram data of the dense model and of each family's most compressed point,
    per task × method at ``budget`` (default: the largest budget with reliability data).

    Seeds are pooled: per bin b, ``count_b = Σ_s n_{s,b}``, ``acc_b = Σ_s n_{s,b} acc_{s,b} /
    count_b`` and likewise the mean confidence (NaN for an empty bin).
    """
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "bin", "bin_lo",
            "bin_hi", "count", "accuracy", "confidence", "n_seeds"]
    if df.empty:
        return _empty(cols)
    sub = df[[isinstance(r, dict) and bool(r.get("counts")) for r in df["reliability"]]]
    rows = []
    meta = _meta(df)
    for k, g in sub.groupby([*TASK, "method"], sort=False):
        b = budget or largest_budget(g)
        g = g[g["budget"] == b]
        if not g["is_dense"].any():
            continue
        cell = {**dict(zip([*TASK, "method"], k, strict=True)), "budget": b}
        for comp in _dense_and_most_compressed(g):
            runs = list(g.loc[g["compression"] == comp, "reliability"])
            rows += [{**cell, "compression": comp, **meta[comp], **row}
                     for row in _pooled_bins(runs)]
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df, ["bin"])


# --------------------------------------------------------------------------------------------
# 5. label-mapping inspection
# --------------------------------------------------------------------------------------------

#: Coarse groups of the ImageNet-1k classes by index range (the classes are ordered by WordNet
#: id, so ranges are semantic groups). (first, last, group, kind).
IMAGENET_GROUPS: tuple[tuple[int, int, str, str], ...] = (
    (0, 6, "fish", "animal"), (7, 24, "bird", "animal"), (25, 32, "amphibian", "animal"),
    (33, 68, "reptile", "animal"), (69, 79, "arthropod", "animal"),
    (80, 100, "bird", "animal"), (101, 106, "mammal", "animal"),
    (107, 126, "invertebrate", "animal"), (127, 146, "bird", "animal"),
    (147, 150, "marine mammal", "animal"), (151, 268, "dog", "animal"),
    (269, 280, "wolf/fox", "animal"), (281, 293, "cat", "animal"),
    (294, 299, "mammal", "animal"), (300, 326, "insect", "animal"),
    (327, 329, "invertebrate", "animal"), (330, 364, "mammal", "animal"),
    (365, 384, "primate", "animal"), (385, 388, "mammal", "animal"),
    (389, 397, "fish", "animal"), (398, 923, "artifact", "object"),
    (924, 969, "food", "food"), (970, 980, "landscape", "nature"),
    (981, 983, "person", "person"), (984, 998, "plant/fungus", "nature"),
    (999, 999, "artifact", "object"),
)
#: The ImageNet-1k class names by index: a source name that differs is not ImageNet-1k.
_IMAGENET_NAMES: list[str] = imagenet_class_names()


def imagenet_group(index: int, name: str | None = None) -> tuple[str, str] | None:
    """(group, kind) of ImageNet-1k class ``index`` (e.g. 223 → ("dog", "animal")), or None
    when the index is out of range or ``name`` is not the ImageNet-1k name of ``index`` (the
    source classes are then not ImageNet-1k and cannot be judged this way)."""
    if not 0 <= index < 1000 or (name is not None and _IMAGENET_NAMES[index] != name):
        return None
    for lo, hi, group, kind in IMAGENET_GROUPS:
        if lo <= index <= hi:
            return group, kind
    return None


def closeness(a: int, a_name: str, b: int, b_name: str) -> str:
    """How close two source classes are: ``same class``; ``same group (dog)``; ``same kind
    (animal: dog / cat)``; ``unrelated (dog / artifact)``; ``not judged`` (not ImageNet-1k)."""
    if a == b:
        return "same class"
    ga, gb = imagenet_group(a, a_name), imagenet_group(b, b_name)
    if ga is None or gb is None:
        return "not judged"
    if ga[0] == gb[0]:
        return f"same group ({ga[0]})"
    if ga[1] == gb[1]:
        return f"same kind ({ga[1]}: {ga[0]} / {gb[0]})"
    return f"unrelated ({ga[0]} / {gb[0]})"


def _mapping_cell(g: pd.DataFrame, budget: str | None, seed: int | None
                  ) -> tuple[str, int, str, dict[int, dict[str, Any]]] | None:
    """The budget, seed, dense compression label and dense mapping (target → entry) that a
    task × method's mapping table compares against, or None without such a dense run."""
    dense_g = g[g["is_dense"]]
    if dense_g.empty:
        return None
    b = budget or largest_budget(dense_g)
    dense_g = dense_g[dense_g["budget"] == b]
    if dense_g.empty:
        return None
    s = seed if seed is not None else int(dense_g["seed"].min())
    dense_run = dense_g[dense_g["seed"] == s]
    if dense_run.empty:
        return None
    dmap = {int(m["target"]): m for m in dense_run["label_mapping"].iloc[0]}
    return str(b), s, str(dense_run["compression"].iloc[0]), dmap


def _chosen_targets(dmap: dict[int, dict[str, Any]], maps: dict[str, dict[int, dict[str, Any]]],
                    targets: Sequence[int | str] | None, max_targets: int) -> list[int]:
    """The targets a mapping table shows (see :func:`label_mapping_table`)."""
    if targets is not None:
        names = {str(x) for x in targets}
        return [t for t in dmap if t in targets or dmap[t]["target_name"] in names]
    if len(dmap) <= max_targets:
        return sorted(dmap)
    changed = {t: sum(int(m[t]["source"]) != int(dmap[t]["source"])
                      for m in maps.values() if t in m) for t in dmap}
    return sorted(sorted(dmap, key=lambda t: (-changed[t], t))[:max_targets])


def _mapping_entry(dense: dict[str, Any], m: dict[str, Any]) -> dict[str, Any]:
    """The columns of one model's mapping of a target beside the dense model's."""
    src, name = int(m["source"]), str(m["source_name"])
    d_src, d_name = int(dense["source"]), str(dense["source_name"])
    return {"target_name": str(dense["target_name"]), "source": src, "source_name": name,
            "dense_source": d_src, "dense_source_name": d_name, "same_as_dense": src == d_src,
            "closeness": closeness(d_src, d_name, src, name)}


def label_mapping_table(df: pd.DataFrame, targets: Sequence[int | str] | None = None,
                        max_targets: int = 10, budget: str | None = None,
                        seed: int | None = None) -> pd.DataFrame:
    """Which source class each chosen target class is mapped to, by the dense model and by each
    compressed model, side by side with class names and :func:`closeness`.

    Per task × method with label mappings (RLM/FLM/ILM; LP and FM have none), at ``budget``
    (default the largest with a dense mapping) and ``seed`` (default the smallest with a dense
    run). ``targets`` picks target classes by index or name; by default all targets when there
    are at most ``max_targets``, else the ``max_targets`` targets remapped by the most
    compressed models (ties: lower index).
    """
    cols = [*TASK, "method", "budget", "seed", "target", "target_name", "compression",
            *COMPRESSION_META, "source", "source_name", "dense_source", "dense_source_name",
            "same_as_dense", "closeness"]
    if df.empty:
        return _empty(cols)
    sub = df[[isinstance(m, list) and bool(m) for m in df["label_mapping"]]]
    meta = _meta(df)
    rows = []
    for k, g in sub.groupby([*TASK, "method"], sort=False):
        picked = _mapping_cell(g, budget, seed)
        if picked is None:
            continue
        b, s, dense_comp, dmap = picked
        runs = g[(g["budget"] == b) & (g["seed"] == s) & ~g["is_dense"]]
        maps = {dense_comp: dmap} | {
            c: {int(m["target"]): m for m in lm}
            for c, lm in zip(runs["compression"], runs["label_mapping"], strict=True)}
        cell = {**dict(zip([*TASK, "method"], k, strict=True)), "budget": b, "seed": s}
        for t in _chosen_targets(dmap, maps, targets, max_targets):
            rows += [{**cell, "target": t, "compression": comp, **meta[comp],
                      **_mapping_entry(dmap[t], m[t])}
                     for comp, m in maps.items() if t in m]
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df, ["target"])


# --------------------------------------------------------------------------------------------
# 6. class-wise gains and drops
# --------------------------------------------------------------------------------------------


def _per_class_mean(g: pd.DataFrame) -> np.ndarray:
    """Per-class accuracy (%) of the runs (seeds) in ``g``, mean over seeds (NaN-aware)."""
    arr = np.array([[np.nan if v is None else v for v in p] for p in g["per_class_accuracy"]],
                   dtype=float)
    with np.errstate(all="ignore"):
        return np.nanmean(arr, axis=0) * PERCENT


def _extreme_classes(delta: np.ndarray, k: int) -> list[tuple[str, int, int]]:
    """(kind, rank, class) of the ``k`` most negative (``drop``) and ``k`` most positive
    (``gain``) finite entries of ``delta``; ties by lower class index."""
    valid = [i for i in range(len(delta)) if np.isfinite(delta[i])]
    drops = sorted((i for i in valid if delta[i] < 0), key=lambda i: (delta[i], i))[:k]
    gains = sorted((i for i in valid if delta[i] > 0), key=lambda i: (-delta[i], i))[:k]
    return [(kind, rank, i) for kind, chosen in (("drop", drops), ("gain", gains))
            for rank, i in enumerate(chosen, 1)]


def class_gains_drops(df: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` target classes where each compressed model loses most, and the ``k`` where it
    gains most, against dense: per class, Δ_c = mean_s acc_c(compressed) − mean_s acc_c(dense)
    in pp (per-class test accuracy, means over seeds). ``kind`` is ``drop`` for the most
    negative Δ_c (Δ_c < 0 only) and ``gain`` for the most positive (Δ_c > 0 only); ``rank`` 1
    is the largest change. Per task × method × budget × compressed point."""
    cols = [*TASK, "method", "budget", "compression", *COMPRESSION_META, "budget_rank", "kind",
            "rank", "target", "target_name", "dense_mean", "compressed_mean", "delta",
            "n_dense", "n_compressed"]
    if df.empty:
        return _empty(cols)
    sub = df[[isinstance(p, list) and bool(p) for p in df["per_class_accuracy"]]]
    meta = _meta(df)
    names_by_dataset: dict[str, dict[int, str]] = {}
    rows = []
    for key, d, g in _dense_pairs(sub):
        dm, cm = _per_class_mean(d), _per_class_mean(g)
        if dm.shape != cm.shape:
            continue
        if key[1] not in names_by_dataset:
            names_by_dataset[key[1]] = class_names(df, key[1])
        names = names_by_dataset[key[1]]
        cell = {**dict(zip([*TASK, "method", "budget", "compression"], key, strict=True)),
                **meta[key[4]], "budget_rank": float(g["budget_rank"].iloc[0]),
                "n_dense": len(d), "n_compressed": len(g)}
        rows += [{**cell, "kind": kind, "rank": rank, "target": i,
                  "target_name": names.get(i, f"class {i}"), "dense_mean": float(dm[i]),
                  "compressed_mean": float(cm[i]), "delta": float(cm[i] - dm[i])}
                 for kind, rank, i in _extreme_classes(cm - dm, k)]
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df, ["kind", "rank"])


# --------------------------------------------------------------------------------------------
# 7. prompt evolution and training loss
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# 8. summary table (the paper's Table 1, with intervals)
# --------------------------------------------------------------------------------------------


def _cost_over_cells(g: pd.DataFrame) -> dict[str, Any]:
    """Mean and 95% t-interval over the cells in ``g`` of the accuracy drop (``delta``) and the
    ECE change (``ece_delta``), with the cell counts and the mean dense accuracy and ECE."""
    a, e = mean_ci(g["delta"]), mean_ci(g["ece_delta"])
    return {
        "n_cells": len(g), "n_datasets": g["dataset"].nunique(),
        "n_budgets": g["budget"].nunique(),
        "acc_drop_mean": a.mean, "acc_drop_lo": a.lo, "acc_drop_hi": a.hi,
        "ece_change_mean": e.mean, "ece_change_lo": e.lo, "ece_change_hi": e.hi,
        "dense_accuracy_mean": float(np.mean(g["dense_mean"])),
        "dense_ece_mean": float(np.nanmean(g["ece_dense"].astype(float)))
        if g["ece_dense"].notna().any() else math.nan,
    }


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per transfer method (and ``all`` methods) × compressed point: the mean accuracy drop
    (dense − compressed, pp) and ECE change (compressed − dense, pp) across datasets and
    budgets, with 95% t-intervals over those cells.

    Each cell (task × method × budget) contributes one Δ, the difference of its seed means, so
    a study with one seed still has intervals here: they describe the spread over datasets and
    budgets, not seed noise. ``n_cells`` < 2 gives no interval.
    """
    cols = ["method", "compression", *COMPRESSION_META, "n_cells", "n_datasets", "n_budgets",
            "acc_drop_mean", "acc_drop_lo", "acc_drop_hi", "ece_change_mean", "ece_change_lo",
            "ece_change_hi", "dense_accuracy_mean", "dense_ece_mean"]
    if df.empty:
        return _empty(cols)
    acc = delta_heatmap(df, "accuracy")
    ece = delta_heatmap(df, "ece", dense_minus_compressed=False)
    if acc.empty:
        return _empty(cols)
    keys = [*TASK, "method", "budget", "compression"]
    merged = acc[[*keys, "delta", "dense_mean"]].merge(
        ece[[*keys, "delta", "dense_mean"]].rename(
            columns={"delta": "ece_delta", "dense_mean": "ece_dense"}), on=keys, how="left")
    meta = _meta(df)
    rows = []
    for label, part in [*((m, merged[merged["method"] == m]) for m in
                          dict.fromkeys(merged["method"])), ("all", merged)]:
        rows += [{"method": label, "compression": comp, **meta[comp], **_cost_over_cells(g)}
                 for comp, g in part.groupby("compression", sort=False)]
    out = pd.DataFrame(rows)[cols]
    methods = [*dict.fromkeys(merged["method"]), "all"]
    order = {c: i for i, c in enumerate(compression_order(df))}
    out["_m"] = [methods.index(m) for m in out["method"]]
    out["_c"] = [order.get(c, len(order)) for c in out["compression"]]
    return out.sort_values(["_m", "_c"]).drop(columns=["_m", "_c"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# 8b. cross-modal reprogramming: the paper's Tables 3 and 4
# --------------------------------------------------------------------------------------------


def sequence_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of methods that read sequence tasks (cross-modal reprogramming, ``xmr``)."""
    if df.empty:
        return df
    return df[df["method"].isin(methods_reading("sequence"))]


def crossmodal_table(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The paper's Tables 3–4: per sequence task (``dataset``) × backbone × compression point,
    at the task's largest budget, the test accuracy (%) over seeds: ``mean`` and the sample
    standard deviation ``sd`` (the paper's "mean ± std"; NaN with one seed), with, for a
    compressed point, Δ = dense − compressed (pp) of the same backbone and its two-sided Welch
    test (``p``, ``significant`` at ``alpha``: None when untested)."""
    cols = ["dataset", "backbone", "method", "budget", "compression", *COMPRESSION_META,
            "n_seeds", "mean", "sd", "delta", "p", "significant"]
    seq = sequence_runs(df)
    if seq.empty:
        return _empty(cols)
    return _sort(_largest_budget_accuracy(seq, alpha)[1][cols], df)


def _largest_budget_accuracy(runs: pd.DataFrame, alpha: float
                             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of ``runs`` at each dataset's largest budget, and their accuracy (%) per task ×
    method × budget × compression point over seeds with, for a compressed point, Δ = dense −
    compressed and its Welch test (``delta``, ``p``, ``significant``: None when untested)."""
    top = runs[runs["budget_rank"] == runs.groupby("dataset")["budget_rank"].transform("max")]
    keys = [*TASK, "method", "budget", "compression"]
    acc = _summarize(top, keys, "accuracy", PERCENT)
    test = delta_heatmap(top, "accuracy", alpha)
    if not test.empty:
        acc = acc.merge(test[[*keys, "delta", "p", "significant"]], on=keys, how="left")
    else:
        acc = acc.assign(delta=math.nan, p=math.nan, significant=None)
    acc["significant"] = [None if v is None or v != v else bool(v) for v in acc["significant"]]
    return top, acc


def clip_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of CLIP backbones (the open_clip family)."""
    if df.empty:
        return df
    return df[df["network_family"] == "open_clip"]


def clip_table(df: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """The paper's Table 2: per dataset × CLIP backbone × method × compression point, at the
    dataset's largest budget, test accuracy (%) over seeds (``mean``, 95% t-interval ``lo`` /
    ``hi``), the backbone's parameters (millions, as its weight source measured them) and, for
    a compressed point, Δ = dense − compressed (pp) with its two-sided Welch test."""
    cols = ["dataset", "backbone", "method", "budget", "compression", *COMPRESSION_META,
            "parameters_m", "n_seeds", "mean", "lo", "hi", "delta", "p", "significant"]
    runs = clip_runs(df)
    if runs.empty:
        return _empty(cols)
    top, acc = _largest_budget_accuracy(runs, alpha)
    params = top.groupby("compression", sort=False)["parameters"].first()
    acc["parameters_m"] = [None if _missing_number(params.get(c)) else params.get(c) / 1e6
                           for c in acc["compression"]]
    return _sort(acc[cols], df)


def _missing_number(v: Any) -> bool:
    return v is None or v != v


# --------------------------------------------------------------------------------------------
# 9. upstream fidelity against transfer cost
# --------------------------------------------------------------------------------------------

FIDELITY_METRICS: tuple[str, ...] = ("n_images", "top1_agreement", "top5_agreement", "mean_kl")


def fidelity_table(df: pd.DataFrame, entries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The study's fidelity entries (:mod:`hiddencost.study.fidelity`) matched to the table's
    compressed points: one row per task × compression, with ``top1_agreement`` and
    ``top5_agreement`` in percent, ``mean_kl`` in nats and ``error`` (None when measured).
    Entries are matched on (model, dataset, compression label); unmatched ones are dropped."""
    cols = [*TASK, "compression", *COMPRESSION_META, "model", *FIDELITY_METRICS, "error"]
    if df.empty or not entries:
        return _empty(cols)
    by_key = {(e.get("model"), e.get("dataset"), e.get("compression")): e for e in entries}
    meta = _meta(df)
    rows = []
    points = df[~df["is_dense"]].drop_duplicates([*TASK, "model", "compression"])
    for r in points.itertuples(index=False):
        e = by_key.get((r.model, r.dataset, r.compression))
        if e is None:
            continue
        measured = e.get("error") is None
        row = {"backbone": r.backbone, "dataset": r.dataset, "compression": r.compression,
               **meta[r.compression], "model": r.model, "error": e.get("error")}
        for k in FIDELITY_METRICS:
            v = e.get(k) if measured else None
            row[k] = math.nan if v is None else float(v) * (PERCENT if "agreement" in k else 1)
        rows.append(row)
    if not rows:
        return _empty(cols)
    return _sort(pd.DataFrame(rows)[cols], df)


def fidelity_vs_cost(df: pd.DataFrame, entries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Per task × method × measured compressed point: its upstream fidelity
    (:func:`fidelity_table`) beside its transfer cost, the mean accuracy drop
    ``acc_drop_mean`` = mean over budgets of (dense − compressed seed means, pp, as in
    :func:`delta_heatmap`), over ``n_budgets`` budgets."""
    cols = [*TASK, "method", "compression", *COMPRESSION_META, *FIDELITY_METRICS,
            "acc_drop_mean", "n_budgets"]
    fid = fidelity_table(df, entries)
    if fid.empty:
        return _empty(cols)
    fid = fid[fid["error"].isna()]
    acc = delta_heatmap(df, "accuracy")
    if fid.empty or acc.empty:
        return _empty(cols)
    cost = (acc.groupby([*TASK, "method", "compression"], sort=False)
            .agg(acc_drop_mean=("delta", "mean"), n_budgets=("budget", "nunique"))
            .reset_index())
    out = cost.merge(fid.drop(columns=["model", "error"]), on=[*TASK, "compression"],
                     how="inner")
    if out.empty:
        return _empty(cols)
    return _sort(out[cols], df)


def fidelity_rank_correlation(table: pd.DataFrame) -> pd.DataFrame:
    """Per task × method of a :func:`fidelity_vs_cost` table: Spearman's ρ between the
    accuracy drop and top-1 agreement (``rho_agreement``, negative = less faithful
    compressions cost more) and mean KL (``rho_kl``, positive = the same), over the
    ``n_points`` compressed points; NaN with fewer than 3 points or a constant column."""
    cols = [*TASK, "method", "n_points", "rho_agreement", "rho_kl"]
    if table.empty:
        return _empty(cols)
    rows = []
    for k, g in table.groupby([*TASK, "method"], sort=False):
        row = dict(zip([*TASK, "method"], k, strict=True), n_points=len(g))
        for name, col in (("rho_agreement", "top1_agreement"), ("rho_kl", "mean_kl")):
            x, y = g[col].to_numpy(float), g["acc_drop_mean"].to_numpy(float)
            ok = np.isfinite(x) & np.isfinite(y)
            if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
                row[name] = math.nan
            else:
                row[name] = float(spearmanr(x[ok], y[ok]).statistic)
        rows.append(row)
    return pd.DataFrame(rows)[cols]
