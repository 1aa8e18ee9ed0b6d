"""The public Python API: ``import hiddencost`` is light, the README's "From Python" example
runs as written, and a finished study's results read back (table, report, CLI) without torch,
timm or open_clip ever being imported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
HEAVY = ("torch", "timm", "open_clip", "torchvision")


def _python(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _readme_example() -> str:
    text = README.read_text()
    found = re.search(r"<!-- from-python: run by tests/test_api.py -->\n```python\n(.*?)```",
                      text, re.S)
    assert found, "README lost its From Python example"
    return found.group(1)


def test_import_hiddencost_loads_no_torch(tmp_path):
    out = _python(f"""
        import sys, hiddencost
        assert hiddencost.__version__
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        hiddencost.load_results, hiddencost.build_report, hiddencost.parse_study
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """, tmp_path)
    assert out.splitlines() == ["[]", "[]"]


def test_unknown_public_names_are_attribute_errors():
    import hiddencost

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hiddencost.nope  # noqa: B018


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory) -> Path:
    """The README example, run as written in a fresh folder (a real, tiny study)."""
    root = tmp_path_factory.mktemp("from_python")
    out = _python(_readme_example(), root)
    assert "ILM-VP 2-shot: accuracy" in out
    spec = re.search(r'parse_study\("""\n(.*?)"""\)', _readme_example(), re.S).group(1)
    (root / "tiny.yaml").write_text(spec)
    return root


def test_the_readme_example_ran_and_wrote_a_study_and_a_report(tiny_study):
    assert (tiny_study / "results/tiny/report/index.html").is_file()
    records = sorted((tiny_study / "results/tiny/artifacts").glob("*/result.json"))
    assert len(records) == 4
    cards = {json.loads(p.read_text())["method"]["display_name"] for p in records}
    assert cards == {"ILM-VP", "LP"}


def test_results_and_report_read_back_without_torch(tiny_study):
    out = _python(f"""
        import sys
        import hiddencost as hc
        from hiddencost.cli import app

        by_spec = hc.load_results("tiny.yaml", out="results/tiny")
        by_folder = hc.load_results("results/tiny")
        by_store = hc.load_results("results/tiny/study.sqlite", status=None)
        assert by_spec["key"].tolist() == by_folder["key"].tolist() == by_store["key"].tolist()
        hc.build_report("tiny.yaml", "r1", results="results/tiny", thumbnails=False)
        for args in (["report", "tiny.yaml", "--results", "results/tiny", "--out", "r2",
                      "--no-thumbnails"],
                     ["report", "--db", "results/tiny/study.sqlite", "--out", "r3",
                      "--no-thumbnails"],
                     ["study", "export", "tiny.yaml", "--out", "results/tiny",
                      "--output", "t.csv"]):
            try:
                app(args, standalone_mode=False)
            except SystemExit as exc:
                assert not exc.code, args
        print(len(by_spec), sorted(by_spec["method"].unique()))
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
    """, tiny_study)
    assert out.splitlines()[-2:] == ["4 ['ilm', 'lp']", "[]"]
    for folder in ("r1", "r2", "r3"):
        assert (tiny_study / folder / "index.html").is_file()
    assert (tiny_study / "t.csv").read_text().count("\n") == 5


def test_load_results_columns_and_status(tiny_study):
    from hiddencost.study.results import load_results

    df = load_results(tiny_study / "results/tiny")
    assert {"key", "status", "compression", "method", "n_shot", "n_shot_label", "seed",
            "accuracy", "ece", "sparsity", "network_family", "artifacts"} <= set(df.columns)
    assert set(df["status"]) == {"done"}
    assert set(df["network_family"]) == {"timm"}
    assert df["n_shot_label"].tolist() == ["2"] * 4
    assert load_results(tiny_study / "results/tiny", status="failed").empty
