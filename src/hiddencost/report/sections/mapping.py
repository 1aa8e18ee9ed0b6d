"""The label-mapping section: the source (ImageNet) class each target class is mapped to by
the dense and by the compressed models, and how close the two sources are."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

import hiddencost.report.figures as fg
from hiddencost.imagenet import imagenet_class_names
from hiddencost.report.builder import SectionSpec, Task, TaskFigure, _Builder, _of, _slug
from hiddencost.report.common import COMPRESSION_META, TASK, _empty, _meta, _sort, largest_budget
from hiddencost.report.html import Note, Section, TableItem

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


def _dense_reference(g: pd.DataFrame, budget: str | None, seed: int | None
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
        picked = _dense_reference(g, budget, seed)
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


MAPPING = TaskFigure(
    "mapping", "Label mappings",
    "For each target class (rows), the source class it is mapped to by the dense model and "
    "by each compressed model (columns), one table per method at the largest budget and first "
    "seed; colour = closeness to the dense model's source.", fg.plot_label_mapping)
_CLOSE_CLASS = {"same class": "same", "same group": "group", "same kind": "kind",
                "unrelated": "unrelated", "not judged": "unjudged"}


def _mapping_cell(m: pd.DataFrame) -> tuple[str, str]:
    """(text, CSS class) of one model's mapping of one target; empty when it has none."""
    if m.empty:
        return "", ""
    r = m.iloc[0]
    text = f"{r['source_name']} (#{r['source']})"
    if not r["same_as_dense"]:
        text += f" — {r['closeness']}"
    cls = next((v for k, v in _CLOSE_CLASS.items() if str(r["closeness"]).startswith(k)), "")
    return text, cls


def _mapping_html(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mapping table of one method (rows = targets, columns = models) and its cells'
    CSS classes (closeness colours)."""
    comps = list(dict.fromkeys(t["compression"]))
    names = dict(zip(t["compression"], t["compression_name"], strict=True))
    rows, classes = [], []
    for _target, g in t.groupby("target", sort=False):
        row = {"target class": g["target_name"].iloc[0]}
        cls = {"target class": ""}
        for comp in comps:
            row[names[comp]], cls[names[comp]] = _mapping_cell(g[g["compression"] == comp])
        rows.append(row)
        classes.append(cls)
    return pd.DataFrame(rows), pd.DataFrame(classes)


def _mapping_tables(b: _Builder, s: Section, task: Task, tt: pd.DataFrame) -> None:
    """One HTML table per method of ``task`` with how many targets each model remapped."""
    for method, g in tt.groupby("method", sort=False):
        changed = []
        for _comp, gc in g[~g["family"].eq("dense")].groupby("compression", sort=False):
            n = int((~gc["same_as_dense"]).sum())
            changed.append(f"{gc['compression_name'].iloc[0]}: {n}/{len(gc)} remapped")
        table, classes = _mapping_html(g)
        csv = b.save_table(f"label_mapping-{_slug(task[0])}-{_slug(task[1])}-{method}", g)
        s.items.append(TableItem(
            f"{b.label(method)} on {task[1]} (budget {g['budget'].iloc[0]}, seed "
            f"{g['seed'].iloc[0]})",
            "Target class → source class (ImageNet index) per model; where a compressed model "
            "differs from dense, the closeness of the two sources. "
            + ("; ".join(changed) + "." if changed else ""),
            table, csv, classes))


def _fill_mapping(b: _Builder, s: Section, tasks: list[Task]) -> None:
    t = label_mapping_table(b.df)
    b.save_table("label_mapping", t)
    if t.empty:
        s.items.append(Note("Label mappings: skipped, no dense and compressed runs with a "
                            "one-to-one label mapping (RLM, FLM or ILM) at a common budget and "
                            "seed."))
        return
    for task in tasks:
        b.task_figure(s, MAPPING, task, t)
        _mapping_tables(b, s, task, _of(t, task))


SECTION = SectionSpec(
    "mapping", "Label-mapping inspection",
    "Which source (ImageNet) class each target class is mapped to by the dense and "
    "by the compressed models (RLM/FLM/ILM; LP and FM-VP learn no one-to-one "
    "mapping). Closeness of a compressed model's source to the dense model's is "
    "judged from ImageNet-1k's class order, which groups classes by WordNet "
    "(dogs 151–268, cats 281–293, artifacts 398–923, …): same class, same group "
    "(e.g. two dog breeds), same kind (e.g. two animals), or unrelated. The groups "
    "are coarse: all 526 man-made objects form one 'artifact' group, so two "
    "artifacts count as the same group however different they are.", _fill_mapping)
