"""Build the report: run every section (:mod:`hiddencost.report.sections`), write
``index.html``.

Layout of the output folder::

    index.html                 the page (figures embedded; opens from disk)
    figures/NN-<name>.{png,svg,csv}   each figure and the table behind it
    tables/<analysis>.csv      each analysis over all tasks, methods and budgets
    .hiddencost-report.json    the list of files the report wrote

The report is built in a fresh folder and swapped in (:mod:`hiddencost.report.publish`): an
interrupted report leaves the previous one whole, and files the report did not write are kept.
A figure whose inputs are absent is replaced by a note saying why. A section whose analysis
fails, or a figure that cannot be drawn, shows its error on the page, and the rest of the report
is still written; :func:`build_report` then raises :class:`ReportError` naming every failed
section, so ``hiddencost report`` exits non-zero instead of passing off a broken page.

The sections are data (:data:`SECTIONS`: anchor, title, intro and the function that fills it),
and so are the figures drawn once per task (:class:`TaskFigure`: file name, title, caption
template and drawing function); each section's module holds its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

import hiddencost.report.table as tb
from hiddencost.errors import HiddenCostError
from hiddencost.report.builder import Draw, SectionSpec, Task, TaskFigure, _Builder
from hiddencost.report.html import Note, Section, render_page
from hiddencost.report.order import budget_order, compression_order
from hiddencost.report.publish import check_target, publish
from hiddencost.report.sections import SECTIONS
from hiddencost.report.sections.accuracy import ACCURACY
from hiddencost.report.sections.calibration import ECE, RELIABILITY
from hiddencost.report.sections.classes import CLASSES
from hiddencost.report.sections.clip import clip_shown
from hiddencost.report.sections.confidence import CONFIDENCE, KL, KL_PAPER
from hiddencost.report.sections.crossmodal import crossmodal_shown
from hiddencost.report.sections.delta import DELTA
from hiddencost.report.sections.fidelity import FIDELITY
from hiddencost.report.sections.findings import finding_lines, findings_text
from hiddencost.report.sections.mapping import MAPPING
from hiddencost.report.sections.prompts import LOSS, PROMPT_DISTANCE, PROMPT_IMAGES
from hiddencost.report.table import (
    is_store_source,
    iter_tasks,
    load_table,
    missing_results_warning,
)
from hiddencost.study.catalog import load_spec
from hiddencost.study.fidelity_file import read_fidelity
from hiddencost.study.layout import StudyPaths
from hiddencost.study.spec import StudySpec
from hiddencost.study.store import StoreLocation

#: The assembly's names, and the section modules' names that callers import from here.
__all__ = [
    "ACCURACY", "CLASSES", "CONFIDENCE", "DELTA", "ECE", "FIDELITY", "KL", "KL_PAPER", "LOSS",
    "MAPPING", "PROMPT_DISTANCE", "PROMPT_IMAGES", "RELIABILITY", "SECTIONS", "Draw",
    "ReportError", "SectionSpec", "Task", "TaskFigure", "build_report", "build_sections",
    "clip_shown", "crossmodal_shown", "finding_lines", "findings_text", "results_root",
]


class ReportError(HiddenCostError):
    """Sections of a report failed. The page was written all the same, each failed section
    showing its error; ``index`` is the page and ``failures`` holds (section, message) pairs."""

    def __init__(self, index: Path, failures: list[tuple[str, str]]) -> None:
        self.index = index
        self.failures = list(failures)
        sections = list(dict.fromkeys(title for title, _ in failures))
        super().__init__(
            f"the report was written to {index}, but {len(sections)} of its sections failed "
            f"({'; '.join(sections)}): " + " ".join(msg for _, msg in failures)
            + " Each error is also shown in its section of the page.")


def _build_section(b: _Builder, spec: SectionSpec, tasks: list[Task]) -> Section:
    """One section; if its analysis fails, the section shows the error (after whatever it had
    added) and the failure is recorded."""
    s = Section(spec.anchor, spec.title, spec.intro)
    try:
        spec.fill(b, s, tasks)
    except Exception as exc:  # any analysis error: recorded, raised once the page is written
        b.fail(s, f"{spec.title}: could not be computed ({type(exc).__name__}: {exc}).")
    return s


def _page_notes(df: pd.DataFrame, b: _Builder) -> list[Note]:
    """Notes at the top of the page: no runs, one seed, no dense runs, varying settings."""
    notes: list[Note] = []
    if df.empty:
        notes.append(Note("The study has no finished runs yet: every section is empty."))
    elif b.one_seed:
        notes.append(Note(
            "This study has one seed per cell: no intervals are shown and no significance test "
            "is possible. Run more seeds (e.g. seed: [0, 1, 2]) to get both.", "info"))
    if not df.empty and not df["is_dense"].any():
        notes.append(Note("No dense runs: every comparison against dense is skipped."))
    missing = missing_results_warning(df)
    if missing:
        notes.append(Note(missing[0].upper() + missing[1:] + "."))
    varying = df.attrs.get("varying_settings") or []
    if varying:
        notes.append(Note("Runs differ in " + ", ".join(varying) + ": the backbone names "
                          "carry these settings so that only like runs are compared.", "info"))
    return notes


def build_sections(df: pd.DataFrame, out: Path, fidelity: list[dict[str, Any]] | None = None,
                   thumbnails: bool = True) -> tuple[list[Section], list[Note], _Builder]:
    """Every section of the report (files written under ``out``), page-level notes, and the
    builder (whose ``failures`` lists the failed sections, if any). ``fidelity``: the study's
    fidelity entries (:func:`hiddencost.study.fidelity.read_fidelity`); ``thumbnails``: see
    :func:`build_report`."""
    b = _Builder(df, out, fidelity, {spec.anchor: spec.title for spec in SECTIONS}, thumbnails)
    tasks = list(iter_tasks(df)) if not df.empty else []
    sections = [_build_section(b, spec, tasks) for spec in SECTIONS
                if spec.shown is None or spec.shown(df)]
    notes = _page_notes(df, b)
    if b.failures:
        failed = ", ".join(dict.fromkeys(title for title, _ in b.failures))
        notes.insert(0, Note(f"Some of this report failed: {failed}. Each failed section shows "
                             "its error below; the rest is complete.", "error"))
    return sections, notes, b


def _meta(df: pd.DataFrame, source: str) -> list[tuple[str, str]]:
    if df.empty:
        return [("source", source), ("runs", "0 done")]
    names = dict(zip(df["compression"], df["compression_name"], strict=True))
    return [
        ("source", source),
        ("runs", f"{len(df)} done"),
        ("backbones", ", ".join(dict.fromkeys(df["backbone"]))),
        ("datasets", ", ".join(dict.fromkeys(df["dataset"]))),
        ("methods", ", ".join(label for label, _ in tb.method_styles(df).values())),
        ("compression", ", ".join(names[c] for c in compression_order(df))),
        ("data budgets", ", ".join(budget_order(df)) + " (examples per class)"),
        ("seeds", ", ".join(str(s) for s in sorted(set(df["seed"])))),
        ("generated", time.strftime("%Y-%m-%d %H:%M")),
    ]


def results_root(source: Any, results: str | Path | None = None,
                 store: str | Path | None = None) -> Path | None:
    """The output folder of a report source (where ``fidelity.json`` lives): the study's
    folder for a spec, YAML file or preset, the store's folder for a SQLite file, else None."""
    if isinstance(source, StudySpec):
        return StudyPaths.resolve(source, results, store).root
    if not isinstance(source, str | Path):
        return None
    text = str(source)
    if is_store_source(text):
        path = StoreLocation.parse(text).path
        return None if path is None else path.parent
    return StudyPaths.resolve(load_spec(text, check=False), results, store).root


def _parsed(source: Any) -> Any:
    """``source`` with a study file or preset name parsed (once, for the table and fidelity)."""
    if isinstance(source, str | Path) and not is_store_source(str(source)):
        return load_spec(str(source), check=False)  # reading results: no resolution
    return source


def _page_title(loaded: Any, df: pd.DataFrame, title: str | None) -> tuple[str, str | None]:
    """(page title, study name or None)."""
    name = loaded.name if isinstance(loaded, StudySpec) else (
        str(df["study"].dropna().iloc[0]) if not df.empty and df["study"].notna().any()
        else None)
    return title or f"hiddencost report{': ' + name if name else ''}", name


def build_report(source: Any, out: str | Path, *, results: str | Path | None = None,
                 store: str | Path | None = None, title: str | None = None,
                 embed: bool = True, label: str | None = None,
                 fidelity: list[dict[str, Any]] | None = None,
                 on_warning: Callable[[str], None] | None = None,
                 on_findings: Callable[[list[str]], None] | None = None,
                 thumbnails: bool = True) -> Path:
    """Write the report of ``source`` into ``out`` and return the path of ``index.html``.

    ``source`` is a study spec (with its results folder ``results``, default
    ``hiddencost-results/<name>``, and optional ``store``), a study YAML file or preset name,
    a results store file (``.sqlite``), a list of result records, or a table from
    :func:`hiddencost.report.table.load_table`. ``title`` and ``label`` (the source line of the
    page's header) default to the study's name and the source; ``embed=False`` references the
    PNG files instead of embedding them. ``fidelity`` (entries of
    :mod:`hiddencost.study.fidelity`) defaults to the ``fidelity.json`` of the source's folder
    (:func:`results_root`), if there is one. ``on_warning`` receives each page-level warning
    (e.g. done runs whose ``result.json`` is gone) as one line; ``on_findings`` the findings
    as plain-text lines (:func:`finding_lines`). ``thumbnails`` shows the top PIEs' test
    images, read through the dataset registry: the one part of the report that loads torch.

    Raises :class:`ReportError` after writing the page when a section failed.
    """
    check_target(Path(out))  # before reading anything
    loaded = _parsed(source)
    df = load_table(loaded, results=results, store=store)
    missing = missing_results_warning(df)
    if missing and on_warning is not None:
        on_warning(missing)
    if fidelity is None:
        root = results_root(loaded, results, store)
        fidelity = [e.to_json() for e in read_fidelity(root)] if root is not None else []
    page_title, name = _page_title(loaded, df, title)
    label = label or (str(source) if isinstance(source, str | Path) else (
        f"study {name}" if name else f"{len(df)} result records"))

    def write(folder: Path) -> _Builder:
        sections, notes, builder = build_sections(df, folder, fidelity, thumbnails)
        (folder / "index.html").write_text(
            render_page(page_title, _meta(df, label), notes, sections, folder, embed=embed),
            encoding="utf-8")
        return builder

    builder = publish(Path(out), write)
    index = Path(out) / "index.html"
    if on_findings is not None and builder.findings:
        on_findings(finding_lines(builder.findings))
    if builder.failures:
        raise ReportError(index, builder.failures)
    return index
