"""The report: a study's results as the paper's analyses, figures and one HTML page.

- :mod:`~hiddencost.report.table`: a study's done runs as a tidy pandas table;
- :mod:`~hiddencost.report.order`: the display order of compression points and budgets;
- :mod:`~hiddencost.report.stats`: means with 95% t-intervals, Welch's t-test;
- :mod:`~hiddencost.report.common`: what the analyses of several sections share (sorting,
  means over seeds, the Δ test);
- :mod:`~hiddencost.report.sections`: one module per section of the page, with its analysis
  (returning the table behind its figure), its figures and how it fills the page;
- :mod:`~hiddencost.report.analyses`: every analysis under one name;
- :mod:`~hiddencost.report.findings`: the paper's claims tested on the study;
- :mod:`~hiddencost.report.figures`: one function per figure (matplotlib), PNG + SVG + CSV;
- :mod:`~hiddencost.report.builder`: what every section uses to add figures and tables;
- :mod:`~hiddencost.report.html`: the self-contained page;
- :func:`build_report` (:mod:`~hiddencost.report.build`): all of it,
  ``build_report(spec_or_db, "report/") → report/index.html``
  (raising :class:`~hiddencost.report.build.ReportError` after writing a page with failed
  sections).
"""

from hiddencost.report.build import ReportError, build_report, findings_text

__all__ = ["ReportError", "build_report", "findings_text"]
