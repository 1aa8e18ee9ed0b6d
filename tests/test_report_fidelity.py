"""Upstream fidelity against transfer cost in the report: matching, costs, rank correlation,
the section, and where the report finds fidelity.json."""

from __future__ import annotations

import json
import math

import pytest
from support import SYNTHETIC
from support.synthetic_records import make_record, tags_of

from hiddencost.report import analyses as an
from hiddencost.report import build_report
from hiddencost.report.build import results_root
from hiddencost.report.table import table_from_records
from hiddencost.study.spec import parse_spec

DENSE = ("dense", "dense", None, None)
S50 = ("magnitude", "magnitude-global-s0.50", 0.5, "sparsity")
S90 = ("magnitude", "magnitude-global-s0.90", 0.9, "sparsity")
W4 = ("quantize", "w4", 4, "bits")
#: accuracy per (compression, budget): drops over the budgets 1 and full are
#: s50 (10 + 20) / 2 = 15 pp, s90 (30 + 40) / 2 = 35 pp, w4 (5 + 5) / 2 = 5 pp
ACC = {DENSE: (0.8, 0.8), S50: (0.7, 0.6), S90: (0.5, 0.4), W4: (0.75, 0.75)}


def entry(comp, agreement, kl, dataset="digits", model="efficientnet_lite0", error=None):
    e = {"model": model, "dataset": dataset, **tags_of(comp), "dense_model": model,
         "images": f"{dataset} test split", "error": error}
    if error is None:
        e.update(n_images=256, top1_agreement=agreement, top5_agreement=min(1.0, agreement + 0.1),
                 mean_kl=kl, max_kl=2 * kl)
    return e


def study_table(methods=("ilm", "lp"), comps=(DENSE, S50, S90, W4)):
    records, tags = [], []
    for comp in comps:
        for method in methods:
            for shot, acc in zip((1, None), ACC[comp], strict=True):
                records.append(make_record(compression=comp, method=method, n_shot=shot,
                                           accuracy=acc))
                tags.append(tags_of(comp))
    return table_from_records(records, tags)


ENTRIES = [entry(S50, 0.6, 1.0), entry(S90, 0.2, 3.0), entry(W4, 0.9, 0.1),
           entry(S50, 0.5, 1.0, dataset="cifar10"),  # no such runs: dropped
           entry(S50, 0.5, 1.0, model="resnet50")]


def test_fidelity_table_matches_model_dataset_and_compression():
    fid = an.fidelity_table(study_table(), ENTRIES)
    assert list(fid["compression"]) == ["magnitude-global-s0.50", "magnitude-global-s0.90", "w4"]
    assert list(fid["top1_agreement"]) == pytest.approx([60.0, 20.0, 90.0])
    assert list(fid["top5_agreement"]) == pytest.approx([70.0, 30.0, 100.0])
    assert list(fid["mean_kl"]) == pytest.approx([1.0, 3.0, 0.1])
    assert fid["error"].isna().all() and set(fid["backbone"]) == {"efficientnet_lite0"}
    assert an.fidelity_table(study_table(), []).empty


def test_fidelity_vs_cost_by_hand():
    cost = an.fidelity_vs_cost(study_table(), ENTRIES)
    ilm = cost[cost["method"] == "ilm"].set_index("compression")
    assert ilm.loc["magnitude-global-s0.50", "acc_drop_mean"] == pytest.approx(15.0)
    assert ilm.loc["magnitude-global-s0.90", "acc_drop_mean"] == pytest.approx(35.0)
    assert ilm.loc["w4", "acc_drop_mean"] == pytest.approx(5.0)
    assert set(ilm["n_budgets"]) == {2}
    assert ilm.loc["w4", "top1_agreement"] == pytest.approx(90.0)
    assert ilm.loc["w4", "compression_name"] == "quantize w4"
    assert len(cost) == 2 * 3  # methods × measured points
    rho = an.fidelity_rank_correlation(cost)
    # ranks: agreement 90 > 60 > 20 while the drop is 5 < 15 < 35, KL 0.1 < 1 < 3
    assert list(rho["rho_agreement"]) == pytest.approx([-1.0, -1.0])
    assert list(rho["rho_kl"]) == pytest.approx([1.0, 1.0])
    assert list(rho["n_points"]) == [3, 3]


def test_unmeasured_entries_and_too_few_points():
    entries = [entry(S50, 0.6, 1.0), entry(S90, None, None, error="OSError: no file")]
    df = study_table()
    fid = an.fidelity_table(df, entries)
    s90 = fid[fid["compression"] == "magnitude-global-s0.90"].iloc[0]
    assert s90["error"] == "OSError: no file" and math.isnan(s90["top1_agreement"])
    cost = an.fidelity_vs_cost(df, entries)
    assert set(cost["compression"]) == {"magnitude-global-s0.50"}
    rho = an.fidelity_rank_correlation(cost)
    assert rho["rho_agreement"].isna().all() and list(rho["n_points"]) == [1, 1]
    # a compressed point without a dense partner has no cost
    no_dense = study_table(comps=(S50, S90))
    assert an.fidelity_vs_cost(no_dense, ENTRIES).empty


def test_report_section_with_and_without_fidelity(tmp_path):
    df = study_table()
    index = build_report(df, tmp_path / "with", fidelity=[*ENTRIES, entry(
        ("magnitude", "magnitude-global-s0.95", 0.95, "sparsity"), None, None,
        error="x")])
    text = index.read_text()
    assert 'id="fidelity"' in text and "Upstream fidelity vs transfer cost" in text
    assert "agreement constant): ILM-VP -1.00 / 1.00; LP -1.00 / 1.00." in text
    assert "could not be drawn" not in text
    figs = sorted((tmp_path / "with" / "figures").glob("*fidelity*.png"))
    assert len(figs) == 1
    svg = figs[0].with_suffix(".svg").read_text()
    for label in ("top-1 agreement with dense (%)", "mean accuracy drop", "quantize w4", "LP"):
        assert label in svg
    assert (tmp_path / "with" / "tables" / "fidelity_vs_cost.csv").is_file()
    assert "90.0" in text and "35.0" in text  # w4 agreement, s90 ILM drop in the table
    plain = build_report(df, tmp_path / "without").read_text()
    assert "Fidelity: not recorded for this study" in plain


def test_report_reads_fidelity_json_beside_the_study(tmp_path):
    from hiddencost.study.driver import run_study
    from hiddencost.study.fidelity import (
        FIDELITY_FILE,
        FidelityEntry,
        read_fidelity,
        write_fidelity,
    )

    spec = parse_spec(
        f"name: fid\nrunner: {SYNTHETIC}\n"
        "compression:\n  - method: none\n  - method: magnitude\n    sparsity: 0.5\n"
        "params:\n  epochs: 1\n")
    out = tmp_path / "study"
    run_study(spec, out=out, progress=False)
    assert not (out / FIDELITY_FILE).exists()  # a custom runner: no fidelity by default
    assert results_root(spec, out) == out
    assert results_root(str(out / "study.sqlite")) == out
    assert results_root(f"sqlite:///{out / 'study.sqlite'}") == out
    assert results_root([make_record()]) is None
    model = json.loads(next((out / "artifacts").glob("*/result.json")).read_text())
    measured = {**entry(S50, 0.25, 2.0, model=model["config"]["model"]),
                "dense_mean_confidence": 0.8, "compressed_mean_confidence": 0.6}
    write_fidelity(out, "fid", 256, [FidelityEntry.from_json(measured)])
    assert read_fidelity(out)[0].metrics.top1_agreement == 0.25
    text = build_report(spec, tmp_path / "r", results=out).read_text()
    assert "Fidelity and mean accuracy drop" in text and "25.0" in text
    by_db = build_report(str(out / "study.sqlite"), tmp_path / "r2").read_text()
    assert "Fidelity and mean accuracy drop" in by_db
