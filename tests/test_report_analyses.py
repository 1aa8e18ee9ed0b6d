"""Each analysis of the report on small synthetic result tables whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from support.synthetic_records import make_record, tags_of, write_prompts

from hiddencost.records import METRIC_FIELDS, RunRecord
from hiddencost.report import analyses as an
from hiddencost.report import figures as fg
from hiddencost.report.stats import mean_ci, welch_test
from hiddencost.report.table import (
    LISTS,
    METRICS,
    level_label,
    severity,
    table_from_records,
    unit_axis_label,
)

DENSE = ("dense", "dense", None, None)
S50 = ("magnitude", "magnitude-global-s0.50", 0.5, "sparsity")
S90 = ("magnitude", "magnitude-global-s0.90", 0.9, "sparsity")
W4 = ("quantize", "w4", 4, "bits")


def table(specs, with_tags=True, artifacts=None):
    """``specs``: list of (compression, make_record kwargs)."""
    records = [make_record(compression=c, **kw) for c, kw in specs]
    tags = [tags_of(c) for c, _ in specs] if with_tags else None
    return table_from_records(records, tags, artifacts=artifacts)


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


def test_table_flattens_records_and_derives_tags():
    df = table([(DENSE, {"n_shot": None}), (S90, {"n_shot": 10, "seed": 2}),
                (W4, {"method": "lp"})], with_tags=False)
    assert list(df["budget"]) == ["full", "10", "10"]
    assert df.loc[0, "budget_rank"] == math.inf and df.loc[1, "seed"] == 2
    assert list(df["family"]) == ["dense", "magnitude", "quantize"]
    assert list(df["compression"]) == ["dense", "magnitude-global-s0.90", "w4"]
    assert list(df["compression_name"]) == ["dense", "magnitude 90% sparse", "quantize w4"]
    assert list(df["is_dense"]) == [True, False, False]
    assert df.loc[1, "severity"] == pytest.approx(0.9)
    assert df.loc[2, "label_mapping"] is None and isinstance(df.loc[0, "reliability"], dict)
    assert set(df["backbone"]) == {"efficientnet_lite0"}


def test_severity_orders_levels_of_every_unit():
    assert severity("dense", None, None) == 0.0
    assert severity("m", 0.9, "sparsity") > severity("m", 0.5, "sparsity")
    assert severity("lth", 11.5, "remaining_percent") > severity("lth", 79.1, "remaining_percent")
    assert severity("q", 2, "bits") > severity("q", 4, "bits") > 0
    assert severity("acdc", 90, "sparsity_percent") == pytest.approx(0.9)
    assert math.isnan(severity("x", "high", "level"))


def test_table_units_read_through_level_unit():
    """Units as the study tags them: each enum unit as LevelUnit says; no unit (dense) and an
    unknown unit from an older store read as ``level``, without failing."""
    assert level_label(0.9, "sparsity") == "90% sparse"
    assert level_label(11.571, "remaining_percent") == "11.571% remaining"
    assert level_label(4, "bits") == "4-bit" and level_label(0.9, None) == "0.9"
    assert unit_axis_label("bits") == "bit-width (bits)"
    assert unit_axis_label(None) == unit_axis_label("level") == "compression level (level)"
    assert severity("lth", 2, "rounds") == 2.0 and level_label(2, "rounds") == "2"
    assert unit_axis_label("rounds") == "compression level (level)"
    assert severity("zoo", "moderate", "variant") != severity("zoo", "moderate", "variant")


def test_table_takes_run_records_and_their_json_alike():
    records = [make_record(compression=c, seed=s) for c in (DENSE, S90, W4) for s in (0, 1)]
    assert all(isinstance(r, RunRecord) for r in records)
    typed = table_from_records(records)
    as_json = table_from_records([r.to_json() for r in records])
    mixed = table_from_records([r if i % 2 else r.to_json() for i, r in enumerate(records)])
    flat = [c for c in typed.columns if c not in (*LISTS, "settings")]  # dict cells: compare
    for other in (as_json, mixed):
        assert typed[flat].equals(other[flat])
        for col in (*LISTS, "settings"):
            assert typed[col].tolist() == other[col].tolist()
    assert list(typed["compression_name"]) == ["dense"] * 2 + ["magnitude 90% sparse"] * 2 + [
        "quantize w4"] * 2


def test_metric_columns_are_the_record_fields():
    fields = RunRecord.model_fields
    assert METRICS[:len(METRIC_FIELDS)] == METRIC_FIELDS
    assert {"sparsity", "weight_bits", "activation_bits", "final_train_loss"} <= set(METRICS)
    assert set(METRICS) <= set(fields) and set(LISTS) <= set(fields)
    assert "schema_version" not in METRICS
    row = table([(W4, {"accuracy": 0.7})]).iloc[0]
    assert row["accuracy"] == 0.7 and row["weight_bits"] == 4.0 and row["n_test"] == 450.0


def test_differing_settings_split_the_backbone():
    df = table([(DENSE, {"epochs": 5, "losses": [1, 1, 1, 1, 1]}), (DENSE, {"losses": [1.0]})])
    assert list(df["backbone"]) == ["efficientnet_lite0 (epochs=5)",
                                    "efficientnet_lite0 (epochs=1)"]
    assert df.attrs["varying_settings"] == ["epochs"]


# --------------------------------------------------------------------------------------------
# 1. accuracy vs budget
# --------------------------------------------------------------------------------------------


def test_accuracy_vs_budget_means_and_intervals_over_seeds():
    accs = {(DENSE, 1): [0.5, 0.52, 0.55], (DENSE, None): [0.9, 0.91, 0.93],
            (S90, 1): [0.3, 0.35, 0.32], (S90, None): [0.7, 0.72, 0.69]}
    specs = [(c, {"n_shot": n, "seed": s, "accuracy": a})
             for (c, n), vals in accs.items() for s, a in enumerate(vals)]
    t = an.accuracy_vs_budget(table(specs))
    assert len(t) == 4
    assert list(t["compression"]) == ["dense", "dense", "magnitude-global-s0.90",
                                      "magnitude-global-s0.90"]
    assert list(t["budget"]) == ["1", "full", "1", "full"]
    for row in t.itertuples():
        comp = DENSE if row.compression == "dense" else S90
        ref = mean_ci([100 * a for a in accs[(comp, None if row.budget == "full" else 1)]])
        assert (row.mean, row.lo, row.hi, row.n_seeds) == pytest.approx(
            (ref.mean, ref.lo, ref.hi, 3))


def test_one_seed_has_no_interval():
    t = an.accuracy_vs_budget(table([(DENSE, {}), (S50, {})]))
    assert t["n_seeds"].eq(1).all() and t["lo"].isna().all() and t["hi"].isna().all()
    assert an.max_seeds(table([(DENSE, {}), (S50, {})])) == 1


# --------------------------------------------------------------------------------------------
# 2. Δ heatmaps with significance marks
# --------------------------------------------------------------------------------------------

DENSE_ACC = [0.80, 0.82, 0.84]
CLEAR_DROP = [0.60, 0.62, 0.64]  # Δ = 20 pp, far beyond the seed noise
NO_DROP = [0.79, 0.85, 0.81]  # Δ = 0.33 pp, within the noise


def heatmap_table():
    specs = [(DENSE, {"seed": s, "accuracy": a, "n_shot": 10}) for s, a in enumerate(DENSE_ACC)]
    specs += [(S90, {"seed": s, "accuracy": a, "n_shot": 10}) for s, a in enumerate(CLEAR_DROP)]
    specs += [(S50, {"seed": s, "accuracy": a, "n_shot": 10}) for s, a in enumerate(NO_DROP)]
    return table(specs)


def test_delta_heatmap_cells_are_known_differences_with_welch_tests():
    t = an.delta_heatmap(heatmap_table()).set_index("compression")
    assert t.loc["magnitude-global-s0.90", "delta"] == pytest.approx(20.0)
    assert t.loc["magnitude-global-s0.50", "delta"] == pytest.approx(
        100 * (np.mean(DENSE_ACC) - np.mean(NO_DROP)))
    ref = welch_test([100 * a for a in DENSE_ACC], [100 * a for a in NO_DROP])
    assert t.loc["magnitude-global-s0.50", "p"] == pytest.approx(ref.p)
    assert fg.significance(t.loc["magnitude-global-s0.90", "significant"]) is True
    assert fg.significance(t.loc["magnitude-global-s0.50", "significant"]) is False
    lo, hi = t.loc["magnitude-global-s0.90", ["delta_lo", "delta_hi"]]
    assert lo < 20.0 < hi


def _hatched(fig) -> int:
    return sum(1 for ax in fig.axes for p in ax.patches if p.get_hatch())


def test_heatmap_figure_marks_exactly_the_insignificant_cells():
    t = an.delta_heatmap(heatmap_table())
    fig = fg.plot_delta_heatmap(t, "test")
    assert _hatched(fig) == 1  # magnitude 50%: not significant → marked
    texts = [x.get_text() for ax in fig.axes for x in ax.texts]
    assert "+20.0" in texts and any(x.endswith("n.s.") for x in texts)
    # the significant cell is not marked
    assert not any(x.startswith("+20.0") and "n.s." in x for x in texts)


def test_heatmap_with_one_seed_tests_nothing_and_marks_nothing():
    t = an.delta_heatmap(table([(DENSE, {"accuracy": 0.8}), (S90, {"accuracy": 0.5})]))
    assert t.loc[0, "delta"] == pytest.approx(30.0)
    assert not t.loc[0, "tested"] and fg.significance(t.loc[0, "significant"]) is None
    assert "fewer than 2" in t.loc[0, "reason"]
    assert _hatched(fg.plot_delta_heatmap(t, "one seed")) == 0


def test_delta_without_dense_is_empty():
    assert an.delta_heatmap(table([(S90, {}), (S50, {})])).empty
    assert an.summary_table(table([(S90, {}), (S50, {})])).empty


# --------------------------------------------------------------------------------------------
# 3. calibration, 4. confidence
# --------------------------------------------------------------------------------------------


def test_ece_and_confidence_vs_compression():
    specs = [(c, {"seed": s, "ece": e, "confidence_correct": cc, "kl_incorrect": kl})
             for c, vals in ((DENSE, [(0.02, 0.9, 1.5), (0.04, 0.8, 1.3)]),
                             (S90, [(0.10, 0.6, 0.5), (0.14, 0.5, 0.7)]))
             for s, (e, cc, kl) in enumerate(vals)]
    df = table(specs)
    ece = an.ece_vs_compression(df).set_index("compression")
    assert ece.loc["dense", "mean"] == pytest.approx(3.0)
    assert ece.loc["magnitude-global-s0.90", "mean"] == pytest.approx(12.0)
    conf = an.confidence_vs_compression(df)
    got = {(r.metric, r.compression): r.mean for r in conf.itertuples()}
    assert got[("mean_confidence_correct", "dense")] == pytest.approx(0.85)
    assert got[("kl_to_uniform_incorrect", "magnitude-global-s0.90")] == pytest.approx(0.6)


def test_reliability_pools_seeds_and_picks_dense_and_most_compressed():
    df = table([(c, {"seed": s, "accuracy": a, "ece": 0.05, "n_shot": n})
                for c in (DENSE, S50, S90) for s, a in enumerate([0.7, 0.8])
                for n in (10, None)])
    # seed 0: acc 0.7, conf 0.75 → bin 11; seed 1: acc 0.8, conf 0.85 → bin 12 (15 bins)
    t = an.reliability_table(df)
    assert set(t["compression"]) == {"dense", "magnitude-global-s0.90"}
    assert set(t["budget"]) == {"full"}
    d = t[(t["compression"] == "dense") & (t["method"] == "ilm")].set_index("bin")
    assert d["count"].sum() == 900 and d.loc[11, "count"] == 450
    assert d.loc[11, "accuracy"] == pytest.approx(0.7)
    assert d.loc[12, "confidence"] == pytest.approx(0.85)
    assert math.isnan(d.loc[0, "accuracy"])


# --------------------------------------------------------------------------------------------
# 5. label mappings
# --------------------------------------------------------------------------------------------


def test_closeness_of_imagenet_classes():
    assert an.imagenet_group(223, "schipperke") == ("dog", "animal")
    assert an.imagenet_group(478, "carton") == ("artifact", "object")
    assert an.closeness(223, "schipperke", 478, "carton") == "unrelated (dog / artifact)"
    assert an.closeness(223, "schipperke", 151, "Chihuahua") == "same group (dog)"
    assert an.closeness(223, "schipperke", 281, "tabby") == "same kind (animal: dog / cat)"
    assert an.closeness(5, "x", 5, "x") == "same class"
    assert an.closeness(3, "not an imagenet name", 478, "carton") == "not judged"


def test_label_mapping_side_by_side():
    names = ["Bombay", "Persian", "pug"]
    dense_map = [223, 281, 254]  # schipperke, tabby, pug
    sparse_map = [478, 283, 254]  # carton, Persian cat, pug
    df = table([(DENSE, {"mapping": dense_map, "class_names": names}),
                (S90, {"mapping": sparse_map, "class_names": names}),
                (DENSE, {"method": "lp", "per_class": [0.5] * 3})])
    t = an.label_mapping_table(df)
    assert set(t["method"]) == {"ilm"}  # LP has no label mapping
    bombay = t[(t["target_name"] == "Bombay")].set_index("compression")
    assert bombay.loc["dense", "source_name"] == "schipperke"
    assert bombay.loc["magnitude-global-s0.90", "source_name"] == "carton"
    assert not bombay.loc["magnitude-global-s0.90", "same_as_dense"]
    assert bombay.loc["magnitude-global-s0.90", "closeness"] == "unrelated (dog / artifact)"
    persian = t[(t["target_name"] == "Persian")].set_index("compression")
    assert persian.loc["magnitude-global-s0.90", "closeness"] == "same group (cat)"
    pug = t[(t["target_name"] == "pug")].set_index("compression")
    assert pug.loc["magnitude-global-s0.90", "same_as_dense"]
    only = an.label_mapping_table(df, targets=["Bombay"])
    assert set(only["target_name"]) == {"Bombay"}


def test_label_mapping_picks_the_most_remapped_targets_when_many():
    k = 12
    dense_map = list(range(k))
    moved = dense_map.copy()
    moved[7], moved[11] = 500, 501
    df = table([(DENSE, {"mapping": dense_map}), (S90, {"mapping": moved})])
    t = an.label_mapping_table(df, max_targets=2)
    assert sorted(set(t["target"])) == [7, 11]


# --------------------------------------------------------------------------------------------
# 6. class-wise gains and drops
# --------------------------------------------------------------------------------------------


def test_class_gains_and_drops_are_the_known_classes():
    dense = [0.9] * 8
    comp = [0.9, 0.5, 0.6, 0.95, 0.9, 0.2, 1.0, 0.85]  # Δ: 0 −40 −30 +5 0 −70 +10 −5
    df = table([(DENSE, {"per_class": dense, "seed": s}) for s in (0, 1)]
               + [(S90, {"per_class": comp, "seed": s}) for s in (0, 1)])
    t = an.class_gains_drops(df, k=3)
    drops = t[t["kind"] == "drop"].sort_values("rank")
    gains = t[t["kind"] == "gain"].sort_values("rank")
    assert list(drops["target"]) == [5, 1, 2]
    assert list(drops["delta"]) == pytest.approx([-70.0, -40.0, -30.0])
    assert list(gains["target"]) == [6, 3]  # only two classes gained
    assert list(gains["delta"]) == pytest.approx([10.0, 5.0])
    assert drops["target_name"].iloc[0] == "5"
    assert (t["n_dense"] == 2).all()


# --------------------------------------------------------------------------------------------
# 7. prompts and losses
# --------------------------------------------------------------------------------------------


def prompt_table(tmp_path, history=True):
    canvas, epochs = 8, 3
    specs, arts = [], []
    for comp, scale in ((DENSE, 0.0), (S90, 1.0)):
        for seed in (0, 1):
            folder = tmp_path / f"{comp[1]}-{seed}"
            # δ_e = scale·(seed + 1)·e everywhere → distance to dense = scale·(seed+1)·e·√(3·8·8)
            deltas = np.stack([np.full((3, canvas, canvas), scale * (seed + 1) * e, np.float32)
                               for e in range(1, epochs + 1)])
            write_prompts(folder, deltas)
            if not history:
                (folder / "prompt_history.safetensors").unlink()
            specs.append((comp, {"seed": seed, "losses": [3.0, 2.0, 1.0 + scale]}))
            arts.append(folder)
    records = [make_record(compression=c, **kw) for c, kw in specs]
    for r in records:
        r.config.update(canvas_size=canvas, inner_size=4)
    return table_from_records(records, [tags_of(c) for c, _ in specs], artifacts=arts)


def test_prompt_distance_per_epoch(tmp_path):
    t = an.prompt_distance(prompt_table(tmp_path))
    assert list(t["epoch"]) == [1, 2, 3] and set(t["source"]) == {"history"}
    norm = math.sqrt(3 * 8 * 8)
    for row in t.itertuples():
        ref = mean_ci([1 * row.epoch * norm, 2 * row.epoch * norm])
        assert (row.mean, row.lo, row.hi) == pytest.approx((ref.mean, ref.lo, ref.hi))


def test_prompt_distance_falls_back_to_final_prompts(tmp_path):
    t = an.prompt_distance(prompt_table(tmp_path, history=False))
    assert list(t["epoch"]) == [3] and set(t["source"]) == {"final"}
    assert t["mean"].iloc[0] == pytest.approx(1.5 * 3 * math.sqrt(192))


def test_prompt_snapshots_are_images_with_the_image_area_blank(tmp_path):
    t = an.prompt_snapshots(prompt_table(tmp_path), n_epochs=2)
    assert list(t["epoch"].unique()) == [1, 3]
    assert set(t["compression"]) == {"dense", "magnitude-global-s0.90"}
    img = t[(t["compression"] == "dense")]["image"].iloc[0]
    assert img.shape == (8, 8, 3)
    assert np.allclose(img[2:6, 2:6], 1.0)  # inner 4 at offset ⌊(8−4+1)/2⌋ = 2: white
    assert np.allclose(img[0, 0], 0.5)  # dense δ = 0 → sigmoid 0.5 on the border
    assert an.prompt_mask(8, 4).sum() == 64 - 16


def test_loss_trajectories(tmp_path):
    t = an.loss_trajectories(prompt_table(tmp_path))
    last = t[t["epoch"] == 3].set_index("compression")["mean"]
    assert last["dense"] == pytest.approx(1.0) and last["magnitude-global-s0.90"] == 2.0


# --------------------------------------------------------------------------------------------
# 8. summary
# --------------------------------------------------------------------------------------------


def test_summary_table_means_over_cells():
    specs = []
    for n, (d, c) in {1: (0.6, 0.5), 10: (0.8, 0.75), None: (0.9, 0.9)}.items():
        for s in (0, 1):
            specs.append((DENSE, {"n_shot": n, "seed": s, "accuracy": d, "ece": 0.05}))
            specs.append((S90, {"n_shot": n, "seed": s, "accuracy": c, "ece": 0.08}))
    t = an.summary_table(table(specs))
    row = t[(t["method"] == "ilm")].iloc[0]
    ref = mean_ci([10.0, 5.0, 0.0])
    assert row["n_cells"] == 3 and row["n_budgets"] == 3
    assert (row["acc_drop_mean"], row["acc_drop_lo"], row["acc_drop_hi"]) == pytest.approx(
        (ref.mean, ref.lo, ref.hi))
    assert row["ece_change_mean"] == pytest.approx(3.0)
    assert list(t["method"]) == ["ilm", "all"]


def test_analyses_on_an_empty_table_are_empty():
    df = table_from_records([])
    for fn in (an.accuracy_vs_budget, an.delta_heatmap, an.ece_vs_compression,
               an.reliability_table, an.confidence_vs_compression, an.label_mapping_table,
               an.class_gains_drops, an.prompt_distance, an.prompt_snapshots,
               an.loss_trajectories, an.summary_table):
        assert fn(df).empty, fn.__name__


# --------------------------------------------------------------------------------------------
# cross-modal reprogramming: the paper's Tables 3-4
# --------------------------------------------------------------------------------------------


def test_crossmodal_table_by_hand():
    from hiddencost.report.build import crossmodal_shown

    specs = [(DENSE, {"dataset": "splice", "method": "xmr", "n_shot": None, "seed": s,
                      "accuracy": a, "per_class": [a] * 3}) for s, a in enumerate((.80, .82, .84))]
    specs += [(S90, {"dataset": "splice", "method": "xmr", "n_shot": None, "seed": s,
                     "accuracy": a, "per_class": [a] * 3}) for s, a in enumerate((.70, .71, .72))]
    # a smaller budget of the same task and an image run: neither is in the table
    specs += [(DENSE, {"dataset": "splice", "method": "xmr", "n_shot": 10, "accuracy": 0.5,
                       "per_class": [0.5] * 3}), (DENSE, {"method": "ilm"})]
    t = an.crossmodal_table(table(specs))
    assert list(t["compression"]) == ["dense", "magnitude-global-s0.90"]
    assert set(t["budget"]) == {"full"} and set(t["method"]) == {"xmr"}
    assert t["mean"].tolist() == pytest.approx([82.0, 71.0])
    assert t["sd"].tolist() == pytest.approx([2.0, 1.0])  # sample sd, as the paper's "± std"
    assert t.loc[1, "delta"] == pytest.approx(11.0) and t.loc[1, "significant"] is True
    assert t.loc[1, "p"] == pytest.approx(welch_test([80, 82, 84], [70, 71, 72]).p)
    assert t.loc[0, "significant"] is None  # dense is the reference
    shown = crossmodal_shown(t)
    assert list(shown.columns) == ["task", "efficientnet_lite0 · dense",
                                   "efficientnet_lite0 · magnitude 90% sparse"]
    assert shown.iloc[0].tolist() == ["splice", "82.0 ± 2.0", "71.0 ± 1.0 ▼"]
    assert an.crossmodal_table(table([(DENSE, {"method": "ilm"})])).empty


def test_a_methods_own_default_does_not_split_the_backbone():
    from support.synthetic_records import make_record

    from hiddencost.report.table import table_from_records

    ilm = make_record(method="ilm").to_json()
    ft = make_record(method="lp").to_json()
    ft["config"]["lr"] = 1e-4  # another method's protocol learning rate
    df = table_from_records([ilm, ft])
    assert list(df["backbone"]) == ["efficientnet_lite0"] * 2
    assert not df.attrs["varying_settings"]
