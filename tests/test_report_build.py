"""The whole report: files, page structure, missing data, sources (records, study, store), CLI."""

from __future__ import annotations

import dataclasses
import html.parser
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import typer
from support import SYNTHETIC
from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record, synthetic_records
from typer.testing import CliRunner

from hiddencost.cli.report import app as report_app
from hiddencost.errors import HiddenCostError
from hiddencost.report import build_report
from hiddencost.report.build import ReportError
from hiddencost.report.sections import accuracy, calibration, prompts
from hiddencost.report.table import table_from_db, table_from_records, table_from_spec
from hiddencost.study.results import load_results
from hiddencost.study.spec import parse_spec

SECTIONS = ("findings", "accuracy", "delta", "calibration", "confidence", "mapping", "classes",
            "prompts", "summary")


class _Refs(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.imgs: list[str] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        for key in ("href", "src"):
            if a.get(key):
                self.refs.append(a[key])
        if a.get("id"):
            self.ids.append(a["id"])


def parse_page(index: Path) -> _Refs:
    p = _Refs()
    p.feed(index.read_text())
    return p


def assert_references_resolve(index: Path) -> None:
    """Every href/src is an in-page anchor, an embedded image or an existing relative file."""
    page = parse_page(index)
    for ref in page.refs:
        if ref.startswith("#"):
            assert ref[1:] in page.ids, ref
        elif ref.startswith("data:image/png;base64,"):
            assert len(ref) > 1000
        else:
            assert "://" not in ref and not ref.startswith("/"), ref
            assert (index.parent / ref).is_file(), ref


@pytest.fixture(scope="module")
def synthetic_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    records, tags, folders, keys = synthetic_records(
        methods=("ilm", "lp"), compressions=DEFAULT_COMPRESSIONS[:3], shots=(1, None),
        seeds=(0, 1, 2), epochs=4, artifacts=tmp / "artifacts")
    df = table_from_records(records, tags, keys, folders, study="synthetic")
    return build_report(df, tmp / "out")


def test_report_has_every_section_and_figure_files(synthetic_report):
    index = synthetic_report
    text = index.read_text()
    page = parse_page(index)
    assert all(s in page.ids for s in SECTIONS)
    assert "crossmodal" not in page.ids  # shown only for studies with xmr runs
    assert "could not be drawn" not in text and "skipped" not in text
    assert "one seed" not in text.lower()
    figures = sorted((index.parent / "figures").glob("*.png"))
    # accuracy, Δ, ECE, reliability, confidence ×3 (ours and the paper's KL), mapping,
    # classes, PIEs and lost examples, PIE thumbnails, prompt distance, prompt images, loss,
    # summary
    assert len(figures) == 15 == len(page.imgs)
    for png in figures:
        assert png.with_suffix(".svg").is_file() and png.with_suffix(".csv").is_file()
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert_references_resolve(index)
    # every figure has a caption (a sentence after its bold title)
    assert len(re.findall(r"<figcaption><b>[^<]+\.</b> [A-ZΔL]", text)) == 15
    assert "Figures 11 and 13 plot the reverse divergence" in text
    # the summary table shows intervals
    assert re.search(r"\d+\.\d \[-?\d+\.\d, -?\d+\.\d\]", text)
    assert (index.parent / "tables" / "delta_accuracy.csv").is_file()


def test_svg_has_title_axes_and_legend(synthetic_report):
    svg = next((synthetic_report.parent / "figures").glob("01-*.svg")).read_text()
    for text in ("Accuracy vs data budget", "test accuracy (%)",
                 "data budget (examples per class)", "magnitude 90% sparse", "compression"):
        assert text in svg


def test_csv_behind_figure_is_the_analysis_table(synthetic_report):
    import pandas as pd

    delta = pd.read_csv(next((synthetic_report.parent / "figures").glob("02-delta-*.csv")))
    assert {"delta", "p", "significant", "budget", "compression"} <= set(delta.columns)
    assert len(delta) == 2 * 2 * 2  # methods × compressed points × budgets


def test_one_seed_and_missing_inputs_are_notes_not_crashes(tmp_path):
    # one seed, an LP-only dense run and a compressed VP run without a dense partner
    records = [make_record(method="lp", per_class=[0.5] * 10),
               make_record(method="lp", compression=DEFAULT_COMPRESSIONS[2], accuracy=0.6),
               make_record(method="ilm", compression=DEFAULT_COMPRESSIONS[2])]
    index = build_report(records, tmp_path / "r")
    text = index.read_text()
    assert "one seed per cell: no intervals are shown" in text
    assert "Label mappings: skipped" in text
    assert "could not be drawn" not in text
    assert "(no interval)" in text
    assert_references_resolve(index)


def test_empty_study_page(tmp_path):
    index = build_report([], tmp_path / "r")
    assert "no finished runs yet" in index.read_text()
    assert_references_resolve(index)


def test_runs_without_result_files_use_store_metrics(tmp_path):
    """A study run by the synthetic runner (scalar metrics, no lists): read from the spec and
    from the store alone; analyses that need lists are skipped with notes."""
    from hiddencost.study.driver import run_study

    spec = parse_spec(
        f"name: tiny\nrunner: {SYNTHETIC}\n"
        "compression:\n  - method: none\n  - method: magnitude\n    sparsity: [0.5, 0.9]\n"
        "method: [ilm, lp]\nn_shot: [1, full]\nseed: [0, 1]\nparams:\n  epochs: 2\n")
    run_study(spec, out=tmp_path / "study", progress=False)
    by_spec = table_from_spec(spec, tmp_path / "study")
    by_db = table_from_db(tmp_path / "study" / "study.sqlite")
    assert len(by_spec) == len(by_db) == 3 * 2 * 2 * 2
    assert set(by_spec["compression"]) == {"dense", "magnitude-global-s0.50",
                                           "magnitude-global-s0.90"}
    assert sorted(by_spec["key"]) == sorted(by_db["key"])
    # the report reads a study as load_results does: the same runs in the same order
    assert by_spec["key"].tolist() == load_results(spec, out=tmp_path / "study")["key"].tolist()
    assert by_db["key"].tolist() == load_results(tmp_path / "study" / "study.sqlite")[
        "key"].tolist()
    (tmp_path / "study" / "artifacts" / by_db["key"].iloc[0] / "result.json").unlink()
    again = table_from_db(tmp_path / "study" / "study.sqlite")
    assert again["accuracy"].notna().all()  # the store's scalar metrics stand in
    index = build_report(spec, tmp_path / "r", results=tmp_path / "study")
    text = index.read_text()
    assert "Reliability diagrams" in text and "skipped, no input" in text
    assert "could not be drawn" not in text
    assert_references_resolve(index)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(report_app)

    @app.command()
    def other() -> None:
        """a second command, so that `report` is a subcommand as in the real CLI"""

    return app


def test_cli(tmp_path):
    runner = CliRunner()
    records, tags, folders, keys = synthetic_records(methods=("ilm",), shots=(None,),
                                                     seeds=(0,), epochs=2)
    spec = parse_spec(f"name: clitest\nrunner: {SYNTHETIC}\n"
                      "compression:\n  - method: none\n  - method: magnitude\n"
                      "    sparsity: 0.5\nparams:\n  epochs: 1\n")
    from hiddencost.study.driver import run_study

    run_study(spec, out=tmp_path / "study", progress=False)
    (tmp_path / "clitest.yaml").write_text(spec.to_yaml())
    res = runner.invoke(_app(), ["report", str(tmp_path / "clitest.yaml"), "--results",
                                 str(tmp_path / "study"), "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and (tmp_path / "a" / "index.html").is_file()
    res = runner.invoke(_app(), ["report", "--db", str(tmp_path / "study" / "study.sqlite"),
                                 "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert "results store" in (tmp_path / "b" / "index.html").read_text()
    res = runner.invoke(_app(), ["report", "--out", str(tmp_path / "c")])
    assert res.exit_code == 2 and "--db" in res.output
    res = runner.invoke(_app(), ["report", "--db", str(tmp_path / "nope.sqlite")])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_quickstart_ends_with_the_report(tmp_path, monkeypatch):
    """run_quickstart writes the report of the preset it ran and prints its path (the study
    itself is replaced by synthetic records here; the real run is `hiddencost quickstart`)."""
    from rich.console import Console

    import hiddencost.report
    import hiddencost.study.driver
    from hiddencost import quickstart

    records, tags, *_ = synthetic_records(methods=("ilm",), shots=(10,), seeds=(0,), epochs=2)
    calls = {}
    # what load_results reads from the store the (replaced) study would have written
    results = pd.DataFrame([{**t, "method": "ilm", "n_shot_label": "10", "accuracy": r["accuracy"],
                             "ece": r["ece"], "nll": r["nll"], "sparsity": r["sparsity"],
                             "weight_bits": r["weight_bits"], "wall_time_s": r["wall_time_s"]}
                            for r, t in zip(records, tags, strict=True)])

    def fake_report(source, out, **kw):
        calls.update(source=source, out=Path(out), **kw)
        Path(out).mkdir(parents=True)
        (Path(out) / "index.html").write_text("<html></html>")
        kw["on_findings"](["1. not testable: a claim. Its statistic."])
        return Path(out) / "index.html"

    monkeypatch.setattr(hiddencost.study.driver, "run_preset", lambda *a, **k: records)
    monkeypatch.setattr(quickstart, "load_results", lambda *a, **k: results)
    monkeypatch.setattr(hiddencost.report, "build_report", fake_report)
    console = Console(record=True, width=200)
    quickstart.run_quickstart(tmp_path / "qs", console, epochs=2)
    assert calls["out"] == tmp_path / "qs" / "report" and calls["results"] == tmp_path / "qs"
    assert calls["source"].name == "quickstart" and calls["source"].params["epochs"] == 2
    assert calls["source"].params["save_prompt_history"] is True
    text = console.export_text()
    assert f"report: {tmp_path / 'qs' / 'report' / 'index.html'}" in text
    assert "findings (the paper's claims on this study):\n  1. not testable: a claim." in text
    summary = (tmp_path / "qs" / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("compression,method,n_shot,accuracy,ece,nll,delta_accuracy")
    assert len(summary) == 1 + len(records)


def test_result_records_roundtrip_through_json(tmp_path):
    """Records as written to result.json (JSON, NaN-free) give the same table."""
    records, tags, *_ = synthetic_records(methods=("flm",), shots=(5,), seeds=(0, 1), epochs=2)
    again = [json.loads(json.dumps(r, allow_nan=False)) for r in records]
    a, b = table_from_records(records, tags), table_from_records(again, tags)
    assert a["accuracy"].tolist() == b["accuracy"].tolist()


def _raise(*args, **kwargs):
    raise RuntimeError("boom")


def test_a_failing_section_is_shown_on_the_page_and_raised(tmp_path, monkeypatch):
    """One analysis and one figure fail: the page is still written, each error in its section
    and every other section intact, and build_report raises naming both sections."""
    monkeypatch.setattr(calibration, "ece_vs_compression", _raise)
    monkeypatch.setattr(prompts, "LOSS", dataclasses.replace(prompts.LOSS, draw=_raise))
    records, tags, folders, keys = synthetic_records(
        methods=("ilm",), compressions=DEFAULT_COMPRESSIONS[:2], shots=(None,), seeds=(0, 1),
        epochs=2, artifacts=tmp_path / "artifacts")
    with pytest.raises(ReportError, match="Calibration; Prompt evolution") as err:
        build_report(table_from_records(records, tags, keys, folders), tmp_path / "r")
    index = tmp_path / "r" / "index.html"
    assert isinstance(err.value, HiddenCostError) and err.value.index == index
    assert [title for title, _ in err.value.failures] == ["Calibration", "Prompt evolution"]
    text = index.read_text()
    assert "Calibration: could not be computed (RuntimeError: boom)." in text
    assert "could not be drawn (RuntimeError: boom)." in text
    assert "Some of this report failed: Calibration, Prompt evolution." in text
    page = parse_page(index)
    assert all(s in page.ids for s in SECTIONS)
    assert "Accuracy vs data budget: " in text and "Mean cost of compression" in text
    assert len(page.imgs) >= 5
    assert_references_resolve(index)


def test_cli_exits_2_naming_the_failed_section(tmp_path, monkeypatch):
    spec = parse_spec(f"name: broken\nrunner: {SYNTHETIC}\n"
                      "compression:\n  - method: none\n  - method: magnitude\n"
                      "    sparsity: 0.5\nseed: [0, 1]\nparams:\n  epochs: 1\n")
    from hiddencost.study.driver import run_study

    run_study(spec, out=tmp_path / "study", progress=False)
    monkeypatch.setattr(accuracy, "accuracy_vs_budget", _raise)
    res = CliRunner().invoke(_app(), ["report", "--db", str(tmp_path / "study" / "study.sqlite"),
                                      "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "Accuracy vs data budget" in res.output and "RuntimeError: boom" in res.output
    text = (tmp_path / "r" / "index.html").read_text()
    assert "Accuracy vs data budget: could not be computed" in text
    assert "Summary table" in text


def test_crossmodal_runs_get_the_table3_section(tmp_path):
    dense, sparse = DEFAULT_COMPRESSIONS[0], DEFAULT_COMPRESSIONS[2]
    records = [make_record(dataset=d, method="xmr", n_shot=None, seed=s, compression=c,
                           accuracy=a + 0.01 * s, per_class=[a] * 3, class_names=["ei", "ie", "n"])
               for d in ("splice", "bbc_news") for c, a in ((dense, 0.8), (sparse, 0.6))
               for s in (0, 1, 2)]
    index = build_report(table_from_records(records), tmp_path / "out")
    page = parse_page(index)
    assert "crossmodal" in page.ids
    text = index.read_text()
    assert "81.0 ± 1.0" in text and "61.0 ± 1.0 ▼" in text  # seeds 0.80, 0.81, 0.82
    csv = (tmp_path / "out" / "tables" / "crossmodal.csv").read_text().splitlines()
    assert len(csv) == 1 + 4 and csv[0].startswith("dataset,backbone,method,budget")
