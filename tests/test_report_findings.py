"""The report's Findings: each claim on synthetic records whose answer is known (supported,
contradicted, mixed, not testable), Holm's adjustment by hand, and the section on the page."""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Callable

import pytest
from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record, tags_of

from hiddencost.report import build_report
from hiddencost.report.findings import (
    claim_confidence,
    claim_finetuning_recovers,
    claim_low_data,
    claim_method_order,
    claim_quantization_calibration,
    claim_ranking,
    claim_sparsity_calibration,
    claim_vp_cost,
    claim_vp_vs_lp,
    findings,
)
from hiddencost.report.stats import holm
from hiddencost.report.table import table_from_records

DENSE, MAG50, MAG90, W4 = DEFAULT_COMPRESSIONS
NOISE = {0: -0.01, 1: 0.0, 2: 0.01}  # per seed: sd 0.01, so 20-point effects are significant
SCALE = {c[1]: 1.0 + 0.5 * i for i, c in enumerate(DEFAULT_COMPRESSIONS)}  # unequal per point


def _table(value: Callable[..., float], methods=("ilm",), comps=(DENSE, MAG50),
           shots=(10, None), seeds=(0, 1, 2), **metrics: Callable[..., float]):
    """A report table from ``value(method, comp, shot)`` = accuracy (plus seed noise), and
    optional ``ece`` / ``confidence_correct`` / ``kl_incorrect`` functions of the same."""
    records, tags = [], []
    for comp in comps:
        for method in methods:
            for shot in shots:
                for seed in seeds:
                    noise = NOISE[seed] * SCALE[comp[1]]
                    extra = {k: f(method, comp, shot) + noise / 10 for k, f in metrics.items()}
                    records.append(make_record(
                        method=method, compression=comp, n_shot=shot, seed=seed,
                        accuracy=value(method, comp, shot) + noise, **extra))
                    tags.append(tags_of(comp))
    return table_from_records(records, tags)


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 → 3·0.01, max(0.03, 2·0.03), max(0.06, 1·0.04); NaN untouched
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.5, math.nan])[1]) and holm([0.9, 0.8]) == [1.0, 1.0]


@pytest.mark.parametrize("compressed, verdict", [(0.6, "supported"), (0.95, "contradicted")])
def test_vp_cost_supported_and_contradicted(compressed, verdict):
    df = _table(lambda m, c, s: 0.8 if c is DENSE else compressed)
    f = claim_vp_cost(df)
    assert f.verdict == verdict
    assert "of 2 tested" in f.statistic and "Holm" in f.statistic
    assert "sign test over cells p = 0.5" in f.statistic
    assert len(f.cells) == 2 and set(f.cells["significant"]) == {True}


def test_vp_cost_mixed_and_not_testable():
    # 50% sparse is 20 points worse, 4-bit 15 points better: significant both ways
    df = _table(lambda m, c, s: {"dense": 0.7, "magnitude-global-s0.50": 0.5, "w4": 0.85}[c[1]],
                comps=(DENSE, MAG50, W4))
    assert claim_vp_cost(df).verdict == "mixed"
    # within noise everywhere: mixed, and the statistic says no cell is significant
    flat = _table(lambda m, c, s: 0.7 + (0.001 if c is DENSE else 0.0))
    assert claim_vp_cost(flat).verdict == "mixed"
    assert "no cell significant" in claim_vp_cost(flat).statistic
    one = _table(lambda m, c, s: 0.8 if c is DENSE else 0.6, seeds=(1,))
    f = claim_vp_cost(one)
    assert f.verdict == "not testable"
    assert f.statistic == ("Δ > 0 in 2 of 2 cells (descriptive only: no cell could be tested, "
                           "e.g. one seed per cell)")
    lp_only = _table(lambda m, c, s: 0.8, methods=("lp",))
    assert claim_vp_cost(lp_only).verdict == "not testable"
    assert "no ILM-VP/FLM-VP runs" in claim_vp_cost(lp_only).statistic


def test_the_sign_test_supports_what_no_single_cell_shows():
    # 0.4 points better dense in each of 12 cells, within seed noise (sd 1-1.5 points): no cell
    # is significant, but 12 of 12 pointing the same way is (sign test p = 2/4096)
    shots = (1, 2, 5, 10, 20, None)
    df = _table(lambda m, c, s: 0.7 + (0.004 if c is DENSE else 0.0), comps=(DENSE, MAG50, W4),
                shots=shots)
    f = claim_vp_cost(df)
    assert f.verdict == "supported"
    assert "sign test over cells p = 0.00049" in f.statistic
    assert "no single cell significant" in f.statistic
    assert not f.cells["significant"].any()


def test_low_data_trend():
    shots = (1, 5, 10, 50, None)
    rank = {1: 0, 5: 1, 10: 2, 50: 3, None: 4}
    falls = _table(lambda m, c, s: 0.8 if c is DENSE else 0.8 - 0.3 + 0.05 * rank[s],
                   comps=(DENSE, MAG50, MAG90), shots=shots)
    f = claim_low_data(falls)
    assert f.verdict == "supported" and f.statistic.startswith("Spearman ρ(N, Δ) = -1.00")
    rises = _table(lambda m, c, s: 0.8 if c is DENSE else 0.8 - 0.05 * rank[s],
                   comps=(DENSE, MAG50, MAG90), shots=shots)
    assert claim_low_data(rises).verdict == "contradicted"
    single = _table(lambda m, c, s: 0.7, shots=(10,))
    assert claim_low_data(single).verdict == "not testable"


def test_vp_pays_more_than_lp():
    # ILM loses 20 points to compression, LP 5: supported; the reverse: contradicted
    df = _table(lambda m, c, s: 0.8 - (0 if c is DENSE else 0.2 if m == "ilm" else 0.05),
                methods=("ilm", "lp"))
    f = claim_vp_vs_lp(df)
    assert f.verdict == "supported" and "Δ_ILM > Δ_LP in 2 of 2 cells" in f.statistic
    assert list(f.cells["delta_ilm"]) == pytest.approx([20.0, 20.0])
    rev = _table(lambda m, c, s: 0.8 - (0 if c is DENSE else 0.05 if m == "ilm" else 0.2),
                 methods=("ilm", "lp"))
    assert claim_vp_vs_lp(rev).verdict == "contradicted"
    assert claim_vp_vs_lp(_table(lambda m, c, s: 0.8)).verdict == "not testable"


def test_finetuning_recovers_the_cost():
    # ILM loses 20 points to compression, FT 2: supported (Δ_FT < Δ_ILM); the reverse: not
    df = _table(lambda m, c, s: 0.8 - (0 if c is DENSE else 0.2 if m == "ilm" else 0.02),
                methods=("ilm", "ft"))
    f = claim_finetuning_recovers(df)
    assert f.verdict == "supported" and "Δ_FT < Δ_ILM in 2 of 2 cells" in f.statistic
    assert list(f.cells["delta_ft"]) == pytest.approx([2.0, 2.0])
    rev = _table(lambda m, c, s: 0.8 - (0 if c is DENSE else 0.02 if m == "ilm" else 0.2),
                 methods=("ilm", "ft"))
    assert claim_finetuning_recovers(rev).verdict == "contradicted"
    assert claim_finetuning_recovers(_table(lambda m, c, s: 0.8)).verdict == "not testable"


def test_calibration_claims():
    # sparsity raises ECE by 10 points at full data; 4-bit leaves it alone
    ece = {"dense": 0.05, "magnitude-global-s0.50": 0.15, "magnitude-global-s0.90": 0.25,
           "w4": 0.05}
    df = _table(lambda m, c, s: 0.7, comps=DEFAULT_COMPRESSIONS, ece=lambda m, c, s: ece[c[1]])
    sparse = claim_sparsity_calibration(df)
    assert sparse.verdict == "supported" and sparse.statistic.startswith("At N = full")
    assert "Spearman ρ(compression level, ΔECE) = 1.00" in sparse.statistic
    quant = claim_quantization_calibration(df)
    assert quant.verdict == "supported" and "in no cell is ΔECE > 0 significant" in quant.statistic
    worse = _table(lambda m, c, s: 0.7, comps=(DENSE, W4),
                   ece=lambda m, c, s: 0.05 if c is DENSE else 0.2)
    assert claim_quantization_calibration(worse).verdict == "contradicted"
    assert claim_sparsity_calibration(worse).verdict == "not testable"


def test_confidence_claim():
    conf = {"dense": 0.8, "magnitude-global-s0.50": 0.8, "w4": 0.6}
    kl = {"dense": 1.0, "magnitude-global-s0.50": 1.0, "w4": 0.5}
    df = _table(lambda m, c, s: 0.7, comps=(DENSE, MAG50, W4),
                confidence_correct=lambda m, c, s: conf[c[1]],
                kl_incorrect=lambda m, c, s: kl[c[1]])
    f = claim_confidence(df)
    assert f.verdict == "supported", f.statistic
    assert f.statistic.count(": supported") == 4
    # the opposite of the paper: quantization raises both, sparsity lowers both
    up = _table(lambda m, c, s: 0.7, comps=(DENSE, MAG50, W4),
                confidence_correct=lambda m, c, s: {"dense": 0.6, "w4": 0.9}.get(c[1], 0.4),
                kl_incorrect=lambda m, c, s: {"dense": 1.0, "w4": 1.5}.get(c[1], 0.5))
    assert claim_confidence(up).verdict == "contradicted"
    # quantization as the paper says, sparsity lowering them too: half of it holds
    half = _table(lambda m, c, s: 0.7, comps=(DENSE, MAG50, W4),
                  confidence_correct=lambda m, c, s: 0.8 if c is DENSE else 0.6,
                  kl_incorrect=lambda m, c, s: 1.0 if c is DENSE else 0.5)
    assert claim_confidence(half).verdict == "mixed"
    assert claim_confidence(_table(lambda m, c, s: 0.7)).verdict == "not testable"


def test_method_order_claim():
    good = _table(lambda m, c, s: {"ilm": 0.8, "flm": 0.7, "rlm": 0.5}[m],
                  methods=("ilm", "flm", "rlm"))
    f = claim_method_order(good)
    assert f.verdict == "supported" and set(f.cells["comparison"]) == {"ilm − flm", "flm − rlm"}
    bad = _table(lambda m, c, s: {"ilm": 0.5, "flm": 0.7, "rlm": 0.8}[m],
                 methods=("ilm", "flm", "rlm"))
    assert claim_method_order(bad).verdict == "contradicted"


def test_ranking_is_descriptive():
    df = _table(lambda m, c, s: {"dense": 0.8, "magnitude-global-s0.50": 0.6, "w4": 0.75}[c[1]],
                comps=(DENSE, MAG50, W4))
    f = claim_ranking(df)
    assert f.verdict == "not testable"
    assert "magnitude High (+20.0 pp)" in f.statistic and "quantize" in f.statistic
    assert list(f.cells["family"]) == ["magnitude", "quantize"]


def test_report_has_findings_first_with_csv_and_cli_text(tmp_path):
    df = _table(lambda m, c, s: {"ilm": 0.8, "flm": 0.7, "lp": 0.9}[m]
                - (0 if c is DENSE else 0.2), methods=("ilm", "flm", "lp"),
                comps=(DENSE, MAG50, W4), seeds=(0, 1))
    printed: list[str] = []
    index = build_report(df, tmp_path / "r", on_findings=printed.extend)
    page = index.read_text()
    assert page.index('id="findings"') < page.index('id="accuracy"')
    assert "supported" in page and 'href="#delta"' in page
    rows = list(csv.DictReader(open(tmp_path / "r" / "tables" / "findings.csv")))
    assert [int(r["claim_number"]) for r in rows] == list(range(1, 10))
    assert rows[0]["verdict"] == "supported"
    # each verdict's cells are in their own CSV, so the statistic can be recomputed
    cells = list(csv.DictReader(open(tmp_path / "r" / "tables" / "findings_1.csv")))
    assert len(cells) == 8  # 2 VP methods × 2 compressions × 2 budgets
    p = [float(c["p"]) for c in cells]
    assert [float(c["p_holm"]) for c in cells] == pytest.approx(holm(p))
    significant_for = sum(float(c["p_holm"]) < 0.05 and float(c["diff"]) > 0 for c in cells)
    assert f"{significant_for} significant for the claim" in rows[0]["statistic"]
    assert printed and printed[0].startswith("1. supported")
    assert [f.number for f in findings(df)] == list(range(1, 10))


REAL = """
name: real-findings
model: [efficientnet_lite0]
dataset: [digits]
compression: [{method: none}, {method: magnitude, sparsity: 0.5}]
method: [ilm, lp]
n_shot: [1, 2]
seed: [0, 1]
params: {epochs: 1, canvas_size: 32, inner_size: 16, lp_image_size: 32}
"""


@pytest.mark.slow  # 22 s on this CPU: the claims are tested above on tables of known values
def test_findings_on_a_real_two_seed_study(tmp_path):
    """The genuine EfficientNet-Lite0 on digits, 16 tiny runs: `hiddencost report` prints the
    findings, claims 1 and 3 are tested (two seeds), and the CSV behind claim 1 recomputes."""
    from typer.testing import CliRunner

    from hiddencost.cli import app

    spec = tmp_path / "real.yaml"
    spec.write_text(REAL)
    out = tmp_path / "out"
    runner = CliRunner()
    ran = runner.invoke(app, ["study", "run", str(spec), "--out", str(out), "--device", "cpu",
                              "--no-progress", "--no-fidelity"])
    assert ran.exit_code == 0, ran.output
    shown = runner.invoke(app, ["report", str(spec), "--results", str(out), "--out",
                                str(tmp_path / "report")])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "findings (the paper's claims on this study):" in text
    assert re.search(r"1\. \w+: Compression costs VP accuracy.* of [12] tested", text)  # 2 cells
    rows = list(csv.DictReader(open(tmp_path / "report" / "tables" / "findings.csv")))
    assert rows[0]["verdict"] in {"supported", "contradicted", "mixed"}
    assert rows[2]["verdict"] in {"supported", "contradicted", "mixed"}  # claim 3 is tested
    cells = list(csv.DictReader(open(tmp_path / "report" / "tables" / "findings_1.csv")))
    assert [float(c["p_holm"]) for c in cells] == pytest.approx(
        holm([float(c["p"]) for c in cells]))


def test_the_findings_demo_preset_has_two_seeds_per_cell():
    from hiddencost.study.catalog import load_preset
    from hiddencost.study.spec import expand

    spec = load_preset("findings-demo")
    assert spec.seed == [0, 1] and len(expand(spec)) == 96
    assert {"ilm", "flm", "rlm", "lp"} == set(spec.method)
