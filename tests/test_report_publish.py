"""The report folder: built fresh and swapped in, never deleting what the report did not write."""

from __future__ import annotations

import json

import pytest
from support.synthetic_records import DEFAULT_COMPRESSIONS, make_record
from typer.testing import CliRunner

import hiddencost.report.build as build
from hiddencost.errors import HiddenCostError
from hiddencost.report import build_report
from hiddencost.report.publish import MANIFEST

RECORDS = [make_record(method="lp", per_class=[0.5] * 10),
           make_record(method="lp", compression=DEFAULT_COMPRESSIONS[2], accuracy=0.6)]


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_manifest_lists_every_file_the_report_wrote(tmp_path):
    index = build_report(RECORDS, tmp_path / "r")
    assert index == tmp_path / "r" / "index.html"
    listed = json.loads((tmp_path / "r" / MANIFEST).read_text())["files"]
    assert sorted(listed) == sorted(set(_files(tmp_path / "r")) - {MANIFEST})
    assert "index.html" in listed and any(f.startswith("figures/") for f in listed)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]  # no staging folder left


def test_a_new_report_replaces_only_the_previous_reports_files(tmp_path):
    out = tmp_path / "r"
    build_report(RECORDS, out)
    (out / "notes.txt").write_text("mine")
    (out / "tables" / "mine.csv").write_text("a,b\n")
    (out / "figures" / "99-old-figure.png").write_bytes(b"old")  # not the report's: kept
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["files"].append("figures/77-gone.png")  # a file only the old report had
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "figures" / "77-gone.png").write_bytes(b"x")
    build_report([], out)  # the empty page: no figures at all
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "tables" / "mine.csv").read_text() == "a,b\n"
    assert (out / "figures" / "99-old-figure.png").read_bytes() == b"old"
    assert not (out / "figures" / "77-gone.png").exists()
    assert json.loads((out / MANIFEST).read_text())["files"] == ["index.html",
                                                                 "tables/findings.csv"]
    assert not list((out / "figures").glob("0*"))  # the previous report's figures are gone
    assert "no finished runs yet" in (out / "index.html").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_a_folder_the_report_did_not_write_is_refused_untouched(tmp_path):
    out = tmp_path / "mine"
    (out / "tables").mkdir(parents=True)
    (out / "tables" / "accuracy.csv").write_text("my data")
    (out / "index.html").write_text("my page")
    before = _files(out)
    with pytest.raises(HiddenCostError, match="not written by `hiddencost report`"):
        build_report(RECORDS, out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_file_of_yours_at_a_name_the_report_writes_is_never_overwritten(tmp_path):
    out = tmp_path / "r"
    build_report([], out)
    (out / MANIFEST).write_text(json.dumps({"files": []}))  # index.html is now yours
    before = _files(out)
    with pytest.raises(HiddenCostError, match="previous report did not write"):
        build_report([], out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_an_interrupted_report_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    out = tmp_path / "r"
    build_report(RECORDS, out)
    before = _files(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(build, "render_page", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_report(RECORDS, out)
    assert _files(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_cli_refuses_a_foreign_folder_before_reading_the_study(tmp_path):
    from hiddencost.cli import app

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    res = CliRunner().invoke(app, ["report", "--db", str(tmp_path / "nope.sqlite"),
                                   "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "not written by `hiddencost report`" in res.output
    assert (tmp_path / "out" / "keep.txt").read_text() == "x"
