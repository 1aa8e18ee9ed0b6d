"""Findings: does this study support the paper's claims? One function per claim.

Each claim function takes the report table and returns a :class:`Finding`: a verdict
(``supported``, ``contradicted``, ``mixed`` or ``not testable``), the statistic behind it in one
sentence, the test used, the report sections whose figures show it, and the table of cells the
statistic is computed from (written beside the page, so every verdict can be recomputed).

Tests, chosen for few seeds and few cells:

* **Cell tests** (claims 1, 3, 4, 5, 6, 7, 9). A cell is one (backbone, dataset, method, budget,
  compression) comparison. Its difference is tested across seeds with Welch's two-sided t-test
  (:func:`~hiddencost.report.stats.welch_test`, the test of the Δ heatmaps); the cells of one
  claim are one family of tests whose p-values are Holm-adjusted
  (:func:`~hiddencost.report.stats.holm`). Beside them, a two-sided **sign test** over the
  cells (binomial, p = 1/2, on the cells with a non-zero difference) asks whether the cells
  point the claimed way more often than chance, which few seeds per cell cannot show one cell
  at a time. A directional claim ("dense > compressed") is **supported** when no cell is
  significant against it and at least one is significant for it or the sign test is
  significant its way (the statistic then says that no single cell was), **contradicted** in
  the mirror case, **mixed** otherwise; a claim of no harm ("quantization does not worsen
  ECE") is supported when no cell is significantly worse and the sign test does not say
  "worse". With one seed per cell nothing is tested, the sign test included: the claim is
  **not testable**, and the statistic still says in how many cells the difference points the
  claimed way (descriptive only).
* **Trend tests** (claim 2). Spearman's ρ between the data budget's rank and the cell's Δ (seed
  means), pooled over cells, with its two-sided p-value; the cells are the replicates, so one
  seed suffices, and cells of different tasks are pooled (state and read it as such).

Conventions: Δ accuracy = dense − compressed (pp; > 0 = compression costs), ΔECE = compressed −
dense (pp; > 0 = worse calibrated). "Full data" claims use the study's largest budget. VP means
ILM-VP and FLM-VP (the paper's VP claims); RLM-VP enters the method-order claim only. Sparsity
and quantization points are told apart by their level's unit
(:attr:`~hiddencost.compression.levels.LevelUnit.kind`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import binomtest, spearmanr

from hiddencost.report.common import PERCENT, TASK, delta_heatmap, largest_budget
from hiddencost.report.stats import ALPHA, holm, welch_test
from hiddencost.report.table import level_unit

__all__ = ["CLAIMS", "Finding", "findings", "findings_table"]

Verdict = Literal["supported", "contradicted", "mixed", "not testable"]
#: The paper's methods, family-qualified (a run's ``method_id``): its claims are about ILM-VP,
#: FLM-VP, RLM-VP and LP on CNN classifiers (timm), not CLIP's methods of the same names.
ILM_VP, FLM_VP, RLM_VP, LP = "timm/ilm", "timm/flm", "timm/rlm", "timm/lp"
VP_METHODS = (ILM_VP, FLM_VP)
UNTESTED = "descriptive only: no cell could be tested, e.g. one seed per cell"
CELL_TEST = ("Welch t-test across seeds per cell, Holm-adjusted over the claim's cells, "
             f"α = {ALPHA}")


@dataclass(frozen=True)
class Finding:
    """One claim's verdict, its statistic (a sentence), the test, the report sections that show
    it (anchors), and the cells behind the statistic."""

    number: int
    claim: str
    verdict: Verdict
    statistic: str
    test: str
    sections: tuple[str, ...]
    cells: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


@dataclass(frozen=True)
class _Count:
    """A directional cell test: cells, cells pointing the claimed way, tested cells, cells
    significant for and against the claim after Holm, and the sign test over the cells
    (``sign_p``: two-sided binomial p of ``pointing`` among the cells with a non-zero
    difference; NaN without tested cells)."""

    n: int
    pointing: int
    tested: int
    sig_for: int
    sig_against: int
    sign_p: float = math.nan

    @property
    def sign_for(self) -> bool:
        return self.sign_p < ALPHA and self.pointing > self.n / 2

    @property
    def sign_against(self) -> bool:
        return self.sign_p < ALPHA and self.pointing < self.n / 2

    def sign_text(self) -> str:
        return f"sign test over cells p = {self.sign_p:.2g}"


def _count(cells: pd.DataFrame) -> tuple[_Count, pd.DataFrame]:
    """Holm over the tested cells of ``cells`` (columns ``diff`` in the claimed direction, ``p``)
    and the counts; the table gains ``p_holm`` and ``significant``."""
    cells = cells.copy()
    cells["p_holm"] = holm(cells["p"].astype(float)) if len(cells) else []
    sig = cells["p_holm"].astype(float) < ALPHA
    cells["significant"] = sig
    diff = cells["diff"].astype(float)
    tested = int(cells["p"].astype(float).notna().sum())
    nonzero = int((diff != 0).sum())
    sign_p = (float(binomtest(int((diff > 0).sum()), nonzero).pvalue)
              if tested and nonzero else math.nan)
    return _Count(len(cells), int((diff > 0).sum()), tested, int((sig & (diff > 0)).sum()),
                  int((sig & (diff < 0)).sum()), sign_p), cells


def _directional(c: _Count, what: str) -> tuple[Verdict, str]:
    """The verdict of a directional claim and its statistic (``what``: the claimed inequality
    as text, e.g. "Δ > 0")."""
    base = f"{what} in {c.pointing} of {c.n} cells"
    if c.tested == 0:
        return "not testable", f"{base} ({UNTESTED})"
    stat = (f"{base}, {c.sign_text()}; of {c.tested} tested, {c.sig_for} significant for the "
            f"claim and {c.sig_against} against it (Holm-adjusted p < {ALPHA})")
    if not c.sig_against and (c.sig_for or c.sign_for):
        return "supported", stat + ("" if c.sig_for else "; no single cell significant")
    if not c.sig_for and (c.sig_against or c.sign_against):
        return "contradicted", stat + ("" if c.sig_against else "; no single cell significant")
    return "mixed", stat + ("" if c.sig_for or c.sig_against else "; no cell significant")


def _no_harm(c: _Count, what: str) -> tuple[Verdict, str]:
    """The verdict of "does not happen": ``diff`` > 0 is the change the claim rules out
    (``what``, e.g. "ΔECE > 0")."""
    base = f"{what} in {c.pointing} of {c.n} cells"
    if c.tested == 0:
        return "not testable", f"{base} ({UNTESTED})"
    stat = (f"{base}, {c.sign_text()}; of {c.tested} tested, {c.sig_for} significantly so and "
            f"{c.sig_against} significantly the other way (Holm-adjusted p < {ALPHA})")
    if not c.sig_for and not c.sign_for:
        return "supported", stat + f"; in no cell is {what} significant"
    return ("contradicted" if not c.sig_against else "mixed"), stat


def _missing(number: int, claim: str, why: str, sections: tuple[str, ...]) -> Finding:
    return Finding(number, claim, "not testable", f"not testable here: {why}", "—", sections)


def _methods(df: pd.DataFrame, ids: tuple[str, ...]) -> pd.DataFrame:
    """The runs of ``df`` whose family-qualified method is one of ``ids``."""
    return df[df["method_id"].isin(ids)] if not df.empty else df


def _name(method_id: str) -> str:
    """``timm/ilm`` → ``ilm``: the name the paper's comparisons were written with."""
    return method_id.split("/", 1)[1]


def _kind(df: pd.DataFrame) -> pd.Series:
    return pd.Series([level_unit(u).kind if not d else "dense"
                      for u, d in zip(df["unit"], df["is_dense"], strict=True)], index=df.index)


def _delta_cells(df: pd.DataFrame, metric: str, dense_minus_compressed: bool = True
                 ) -> pd.DataFrame:
    """The Δ cells of ``metric`` (:func:`delta_heatmap`) with ``diff`` = its Δ, and ``kind``."""
    t = delta_heatmap(df, metric, dense_minus_compressed=dense_minus_compressed)
    if t.empty:
        return t
    t = t.rename(columns={"delta": "diff"})
    t["kind"] = [level_unit(u).kind for u in t["unit"]]
    return t


# --------------------------------------------------------------------------------------------
# the claims
# --------------------------------------------------------------------------------------------

C1 = "Compression costs VP accuracy: dense > compressed under ILM-VP and FLM-VP"


def claim_vp_cost(df: pd.DataFrame) -> Finding:
    """Claim 1: Δ accuracy (dense − compressed) > 0 per VP cell."""
    sections = ("delta", "accuracy")
    t = _delta_cells(_methods(df, VP_METHODS), "accuracy")
    if t.empty:
        return _missing(1, C1, "no ILM-VP/FLM-VP runs of both a dense and a compressed backbone",
                        sections)
    c, cells = _count(t)
    verdict, stat = _directional(c, "Δ > 0")
    return Finding(1, C1, verdict, stat, CELL_TEST, sections, cells)


C2 = "The cost is larger at low data budgets: Δ falls as N grows"


def claim_low_data(df: pd.DataFrame) -> Finding:
    """Claim 2: Spearman ρ(budget rank, Δ) < 0 over the VP cells."""
    sections = ("delta",)
    t = _delta_cells(_methods(df, VP_METHODS), "accuracy")
    if t.empty or t["budget"].nunique() < 2:
        return _missing(2, C2, "needs VP cells at two or more data budgets", sections)
    x, y = t["budget_rank"].to_numpy(float), t["diff"].to_numpy(float)
    if len(t) < 3 or np.ptp(y) == 0:
        return _missing(2, C2, "fewer than 3 cells, or Δ constant", sections)
    res = spearmanr(x, y)
    rho, p = float(res.statistic), float(res.pvalue)
    stat = (f"Spearman ρ(N, Δ) = {rho:.2f}, p = {p:.3g}, over {len(t)} cells at "
            f"{t['budget'].nunique()} budgets (cells pooled across tasks and compressions)")
    verdict: Verdict = ("supported" if rho < 0 and p < ALPHA else
                        "contradicted" if rho > 0 and p < ALPHA else "mixed")
    if verdict == "mixed":
        stat += "; not significant"
    return Finding(2, C2, verdict, stat, "Spearman rank correlation, two-sided", sections,
                   t.assign(rho=rho, p_spearman=p))


C3 = "VP pays more than LP: Δ under ILM-VP > Δ under LP, same backbone and cell"


def _per_seed_delta(df: pd.DataFrame, method: str) -> pd.DataFrame:
    """Per (task, budget, compression, seed): dense − compressed accuracy (pp) of ``method``,
    dense and compressed runs paired by seed (same few-shot subset)."""
    sub = _methods(df, (method,))
    keys = [*TASK, "budget", "seed"]
    dense = sub[sub["is_dense"]].groupby(keys)["accuracy"].mean()
    comp = sub[~sub["is_dense"]].groupby([*keys, "compression"])["accuracy"].mean().reset_index()
    comp["dense"] = [dense.get(tuple(r[k] for k in keys), math.nan) for _, r in comp.iterrows()]
    comp["delta"] = (comp["dense"] - comp["accuracy"]) * PERCENT
    return comp.dropna(subset=["delta"])


def _delta_comparison(df: pd.DataFrame, more: str, less: str) -> pd.DataFrame:
    """Per (task, budget, compression) with runs of both methods: Welch on the per-seed Δ of
    method ``more`` against method ``less`` (``diff`` = mean Δ_more − mean Δ_less)."""
    a, b = _per_seed_delta(df, more), _per_seed_delta(df, less)
    keys = [*TASK, "budget", "compression"]
    b_cells = dict(iter(b.groupby(keys, sort=False)))
    rows = []
    for k, g in a.groupby(keys, sort=False):
        h = b_cells.get(k)
        if h is None:
            continue
        w = welch_test(g["delta"], h["delta"])
        rows.append({**dict(zip(keys, k, strict=True)), f"delta_{_name(more)}":
                     float(g["delta"].mean()), f"delta_{_name(less)}": float(h["delta"].mean()),
                     "diff": w.diff, "p": w.p, f"n_seeds_{_name(more)}": w.n_a,
                     f"n_seeds_{_name(less)}": w.n_b})
    return pd.DataFrame(rows)


def _pays_more(df: pd.DataFrame, number: int, claim: str, more: str, less: str,
               names: str, what: str) -> Finding:
    """A claim that method ``more`` pays more for compression than ``less`` (``names``: both,
    as the verdict says them): :func:`_delta_comparison` per cell, :func:`_directional` on
    ``what``."""
    sections = ("delta", "summary")
    if df.empty or not {more, less} <= set(df["method_id"]):
        return _missing(number, claim, f"needs both {names} runs", sections)
    rows = _delta_comparison(df, more, less)
    if rows.empty:
        return _missing(number, claim, f"no cell has both {names} runs of dense and compressed "
                        "backbones", sections)
    c, cells = _count(rows)
    verdict, stat = _directional(c, what)
    return Finding(number, claim, verdict, stat,
                   CELL_TEST + " (on the per-seed Δ of each method)", sections, cells)


def claim_vp_vs_lp(df: pd.DataFrame) -> Finding:
    """Claim 3: per (task, budget, compression), Welch on the per-seed Δ of ILM-VP vs LP."""
    return _pays_more(df, 3, C3, ILM_VP, LP, "ILM-VP and LP", "Δ_ILM > Δ_LP")


def _ece_claim(df: pd.DataFrame, number: int, claim: str, kind: str,
               judge: Callable[[_Count, str], tuple[Verdict, str]]) -> Finding:
    """Claims 4 and 5: ΔECE (compressed − dense) per VP cell of ``kind`` at the largest
    budget."""
    sections = ("calibration",)
    t = _delta_cells(_methods(df, VP_METHODS), "ece", dense_minus_compressed=False)
    budget = largest_budget(df)
    if not t.empty:
        t = t[(t["kind"] == kind) & (t["budget"] == budget)]
    if t.empty:
        return _missing(number, claim, f"no {kind} point with VP runs at the largest budget",
                        sections)
    c, cells = _count(t)
    verdict, stat = judge(c, "ΔECE > 0")
    # the trend over levels, each (task, method) series starting from dense at (0, 0)
    origins = t.groupby([*TASK, "method"]).ngroups
    x = np.concatenate([t["severity"].to_numpy(float), np.zeros(origins)])
    y = np.concatenate([t["diff"].to_numpy(float), np.zeros(origins)])
    if len(x) >= 3 and np.ptp(x) > 0 and np.ptp(y) > 0:
        stat += (f"; Spearman ρ(compression level, ΔECE) = {spearmanr(x, y).statistic:.2f} "
                 "(dense at 0)")
    return Finding(number, claim, verdict, f"At N = {budget}: {stat}", CELL_TEST, sections,
                   cells)


C4 = "Sparsity worsens calibration: ECE rises with sparsity (full data)"
C5 = "Quantization does not worsen calibration: ECE stays the same or falls as bits drop"


def claim_sparsity_calibration(df: pd.DataFrame) -> Finding:
    """Claim 4: ΔECE > 0 per sparse VP cell at the largest budget."""
    return _ece_claim(df, 4, C4, "sparsity", _directional)


def claim_quantization_calibration(df: pd.DataFrame) -> Finding:
    """Claim 5: no quantized VP cell significantly worse calibrated at the largest budget."""
    return _ece_claim(df, 5, C5, "quantization", _no_harm)


C6 = ("Confidence: under quantization, confidence when correct and KL to uniform when wrong "
      "fall as bits drop; under sparsity they do not")


def claim_confidence(df: pd.DataFrame) -> Finding:
    """Claim 6: four parts at the largest budget over VP cells: for quantized points
    dense − compressed > 0 (they fall) for both metrics; for sparse points no significant
    fall. Supported when all four parts hold, contradicted when none does and one is
    contradicted, mixed otherwise. KL is ours, KL(p ‖ u)."""
    sections = ("confidence",)
    budget = largest_budget(df)
    parts: list[tuple[str, Verdict, str]] = []
    tables = []
    for metric, name in (("mean_confidence_correct", "confidence when correct"),
                         ("kl_to_uniform_incorrect", "KL(p ‖ u) when wrong")):
        t = _delta_cells(_methods(df, VP_METHODS), metric)
        if t.empty:
            continue
        t = t[t["budget"] == budget]
        for kind, judge in (("quantization", _directional), ("sparsity", _no_harm)):
            part = t[t["kind"] == kind]
            if part.empty:
                continue
            c, cells = _count(part)
            verdict, stat = judge(c, "a fall")
            parts.append((f"{kind}, {name}", verdict, stat))
            tables.append(cells.assign(metric=metric))
    if len(parts) < 4 or any(v == "not testable" for _, v, _ in parts):
        why = ("needs quantized and sparse points with VP runs at the largest budget"
               if len(parts) < 4 else "one seed per cell, no test")
        return _missing(6, C6, why, sections)
    verdicts = [v for _, v, _ in parts]
    verdict: Verdict = ("supported" if all(v == "supported" for v in verdicts) else
                        "contradicted" if "supported" not in verdicts
                        and "contradicted" in verdicts else "mixed")
    stat = f"At N = {budget}: " + "; ".join(f"{p}: {v} ({s})" for p, v, s in parts)
    return Finding(6, C6, verdict, stat, CELL_TEST, sections, pd.concat(tables))


C7 = "Method order: ILM-VP ≥ FLM-VP ≥ RLM-VP"


def claim_method_order(df: pd.DataFrame) -> Finding:
    """Claim 7: per (task, compression, budget), accuracy of ILM − FLM and FLM − RLM (pp),
    Welch across seeds, one Holm family over both comparisons."""
    sections = ("accuracy",)
    rows = []
    for k, g in df.groupby([*TASK, "compression", "budget"], sort=False) if not df.empty else []:
        by = {m: _methods(g, (m,))["accuracy"] * PERCENT for m in (ILM_VP, FLM_VP, RLM_VP)}
        for hi, lo in ((ILM_VP, FLM_VP), (FLM_VP, RLM_VP)):
            if by[hi].empty or by[lo].empty:
                continue
            w = welch_test(by[hi], by[lo])
            rows.append({**dict(zip([*TASK, "compression", "budget"], k, strict=True)),
                         "comparison": f"{_name(hi)} − {_name(lo)}", "diff": w.diff, "p": w.p})
    if not rows:
        return _missing(7, C7, "needs two of ILM-VP, FLM-VP, RLM-VP on the same cells", sections)
    c, cells = _count(pd.DataFrame(rows))
    verdict, stat = _directional(c, "Better-ranked method ahead")
    return Finding(7, C7, verdict, stat, CELL_TEST, sections, cells)


C8 = "Table 1's ranking of compression methods by mean accuracy drop (High / Moderate / Low)"


def claim_ranking(df: pd.DataFrame) -> Finding:
    """Claim 8: the study's compression families ranked by mean VP Δ (descriptive: the
    paper's own ranking is not encoded, so no verdict beyond the recomputed ranking)."""
    sections = ("summary",)
    t = _delta_cells(_methods(df, VP_METHODS), "accuracy")
    if t.empty or t["family"].nunique() < 2:
        return _missing(8, C8, "needs two or more compression families with VP runs", sections)
    means = t.groupby("family", sort=False)["diff"].mean().sort_values(ascending=False)
    tiers = np.array_split(np.arange(len(means)), 3)
    label = {}
    for name, idx in zip(("High", "Moderate", "Low"), tiers, strict=True):
        for i in idx:
            label[means.index[i]] = name
    ranking = ", ".join(f"{f} {label[f]} ({v:+.1f} pp)" for f, v in means.items())
    stat = (f"not testable here: the paper's Table 1 ranking is not encoded in hiddencost, so "
            f"only this study's ranking is given: {ranking}")
    cells = means.rename("mean_delta").reset_index().assign(tier=lambda d: d["family"].map(label))
    return Finding(8, C8, "not testable", stat, "mean of the VP cells' Δ per family, tiers "
                   "by rank thirds", sections, cells)


C9 = ("Fine-tuning recovers the cost: Δ under FT < Δ under ILM-VP, same backbone and cell "
      "(Iofinova et al., CVPR'22, for fine-tuning with the mask kept; not a claim of the paper)")
FT = "timm/ft"


def claim_finetuning_recovers(df: pd.DataFrame) -> Finding:
    """Claim 9: per (task, budget, compression), Welch on the per-seed Δ of ILM-VP vs FT
    (``diff`` > 0: fine-tuning pays less than visual prompting)."""
    return _pays_more(df, 9, C9, ILM_VP, FT, "ILM-VP and FT", "Δ_FT < Δ_ILM")


#: The claims in the paper's order, then the literature's it builds on.
CLAIMS: tuple[Callable[[pd.DataFrame], Finding], ...] = (
    claim_vp_cost, claim_low_data, claim_vp_vs_lp, claim_sparsity_calibration,
    claim_quantization_calibration, claim_confidence, claim_method_order, claim_ranking,
    claim_finetuning_recovers,
)


def findings(df: pd.DataFrame) -> list[Finding]:
    """Every claim's finding for the report table ``df``."""
    return [claim(df) for claim in CLAIMS]


def findings_table(found: Sequence[Finding]) -> pd.DataFrame:
    """One row per claim: number, claim, verdict, statistic, test, sections."""
    return pd.DataFrame([{"claim_number": f.number, "claim": f.claim, "verdict": f.verdict,
                          "statistic": f.statistic, "test": f.test,
                          "sections": " ".join(f.sections)} for f in found])
