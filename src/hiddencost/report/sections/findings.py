"""The findings section: the paper's claims tested on this study
(:mod:`hiddencost.report.findings`), as a table linking each claim to the sections that show it,
and as the plain-text lines ``hiddencost report`` prints."""

from __future__ import annotations

import pandas as pd

import hiddencost.report.findings as fd
from hiddencost.report.builder import SectionSpec, Task, _Builder
from hiddencost.report.html import Section, TableItem

_VERDICT_CLASS = {"supported": "supported", "contradicted": "contradicted", "mixed": "mixed",
                  "not testable": "untestable"}


def finding_lines(found: list[fd.Finding]) -> list[str]:
    """The findings as plain text, one line per claim."""
    return [f"{f.number}. {f.verdict}: {f.claim}. {f.statistic}." for f in found]


def findings_text(lines: list[str]) -> str:
    """The block ``hiddencost report`` and the quickstart print: a heading and the lines."""
    return "\n".join(["findings (the paper's claims on this study):", *(f"  {x}" for x in lines)])


def _fill_findings(b: _Builder, s: Section, tasks: list[Task]) -> None:
    found = fd.findings(b.df)
    b.findings = found
    path = b.save_table("findings", fd.findings_table(found))
    for f in found:
        b.save_table(f"findings_{f.number}", f.cells)
    titles = b.titles
    shown = pd.DataFrame({
        "claim": [f"{f.number}. {f.claim}" for f in found],
        "verdict": [f.verdict for f in found],
        "statistic": [f.statistic for f in found],
        "figures": [", ".join(titles[a] for a in f.sections) for f in found]})
    links = pd.DataFrame({"claim": None, "verdict": None, "statistic": None,
                          "figures": [[(titles[a], f"#{a}") for a in f.sections]
                                      for f in found]})
    classes = pd.DataFrame({"claim": "", "verdict": [_VERDICT_CLASS[f.verdict] for f in found],
                            "statistic": "", "figures": ""})
    s.items.append(TableItem(
        "Does this study support the paper's claims?",
        "Cell tests: Welch's t-test across seeds per cell (the Δ heatmaps' test), Holm-adjusted "
        "over the cells of each claim, α = 0.05, beside a two-sided sign test over the cells; "
        "the budget trend: Spearman's ρ pooled over cells. A directional claim is supported "
        "when no cell is significant against it and a cell, or the sign test, is significant "
        "its way; a claim of no harm when no cell is significantly worse and the sign test "
        "does not say worse (absence of evidence, not proof of absence). Cells need two or "
        "more seeds on each side to be tested; a claim with no tested cell is not testable "
        "(its statistic is descriptive). Each claim's cells, with their p and Holm-adjusted p, "
        "are in tables/findings_<number>.csv.",
        shown, path, cell_classes=classes, cell_links=links))


SECTION = SectionSpec(
    "findings", "Findings: the paper's claims, tested on this study",
    "For each claim of the paper and its supplement, whether this study's runs "
    "support it, with the statistic behind the verdict and the sections whose "
    "figures show it.", _fill_findings)
