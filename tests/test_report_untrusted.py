"""What the report reads from files it did not write: class names are shown as text (figures,
CSVs), and a store's run keys never lead outside its artifacts folder."""

from __future__ import annotations

import csv
import shutil
import sqlite3

import pandas as pd
import pytest
from support import SYNTHETIC
from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record
from typer.testing import CliRunner

from hiddencost.cli import app
from hiddencost.report import build_report
from hiddencost.spreadsheet import safe_cell, safe_table

NAMES = ["$\\frac{1}{0}$", '=HYPERLINK("http://x","y")', "$\\foo$", "@SUM(A1)", "-1", "+x",
         "plain", "\tTAB", "-0.5e3", "a$b"]


def test_safe_cell_by_hand():
    assert safe_cell("=1+1") == "'=1+1"
    assert safe_cell("@x") == "'@x" and safe_cell("+x") == "'+x" and safe_cell("\tx") == "'\tx"
    assert safe_cell("-1") == "-1" and safe_cell("-0.5e3") == "-0.5e3"  # numbers stay numbers
    assert safe_cell("a=b") == "a=b" and safe_cell(-1) == -1 and safe_cell(None) is None
    table = safe_table(pd.DataFrame({"=name": ["=x", "y"], "v": [-1.0, 2.0]}))
    assert list(table.columns) == ["'=name", "v"]
    assert table["'=name"].tolist() == ["'=x", "y"] and table["v"].tolist() == [-1.0, 2.0]


@pytest.mark.filterwarnings("ignore:Glyph 9")  # the tab in a name has no glyph: shown as a box
def test_names_with_math_and_formulas_neither_break_nor_run(tmp_path):
    dense = [0.9, 0.8, 0.7, 0.6, 0.5, 0.9, 0.8, 0.7, 0.6, 0.5]
    records = [make_record(per_class=dense, class_names=NAMES, seed=s) for s in (0, 1)] + [
        make_record(per_class=[a - 0.1 * (i % 3) for i, a in enumerate(dense)],
                    compression=DEFAULT_COMPRESSIONS[2], class_names=NAMES, seed=s)
        for s in (0, 1)]
    index = build_report(records, tmp_path / "r")  # a failed section would raise ReportError
    page = index.read_text()
    assert "could not be computed" not in page and "could not be drawn" not in page
    svgs = "".join(p.read_text() for p in (tmp_path / "r" / "figures").glob("*.svg"))
    assert "$\\frac{1}{0}$" in svgs  # drawn as the text it is, not typeset
    cells = [c for p in (tmp_path / "r").rglob("*.csv")
             for row in csv.reader(p.open(newline="")) for c in row]
    assert "'=HYPERLINK(\"http://x\",\"y\")" in cells and "'@SUM(A1)" in cells
    assert not any(c.startswith(("=", "@", "+", "\t")) for c in cells)


def test_a_store_key_naming_a_folder_outside_artifacts_is_refused(tmp_path):
    from hiddencost.study.driver import run_study
    from hiddencost.study.spec import parse_spec

    spec = parse_spec(f"name: keys\nrunner: {SYNTHETIC}\nparams:\n  epochs: 1\n")
    run_study(spec, out=tmp_path / "study", progress=False)
    db = tmp_path / "study" / "study.sqlite"
    with sqlite3.connect(db) as con:
        (key,) = con.execute("SELECT key FROM runs").fetchone()
        con.execute("UPDATE runs SET key = ? WHERE key = ?", ("../../outside", key))
    shutil.copytree(tmp_path / "study" / "artifacts" / key, tmp_path / "outside")
    res = CliRunner().invoke(app, ["report", "--db", str(db), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2, res.output
    assert "run key '../../outside'" in res.output and "not a plain folder name" in res.output
    assert not (tmp_path / "r").exists()
