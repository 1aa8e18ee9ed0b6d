"""The docs site builds offline with warnings as errors, its reference covers every command
and public function, and the examples run as written."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import typer.main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-4000:]  # a broken link or missing page fails
    return out


def _ids(page: Path) -> set[str]:
    return set(re.findall(r'id="([^"]+)"', page.read_text(encoding="utf-8")))


def _commands(command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path] if path else []
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            found += _commands(sub, (*path, name))
    return found


def test_every_cli_command_is_in_the_reference(site):
    from hiddencost.cli import app

    ids = _ids(site / "reference" / "cli" / "index.html")
    commands = _commands(typer.main.get_command(app))
    assert len(commands) >= 19
    missing = ["hiddencost " + " ".join(c) for c in commands
               if "-".join(("hiddencost", *c)) not in ids]
    assert not missing, f"commands missing from docs/reference/cli.md: {missing}"


def test_every_public_name_and_module_function_is_in_the_api_reference(site):
    import hiddencost

    ids = _ids(site / "reference" / "api" / "index.html")
    for name, target in hiddencost._API.items():
        module, _, attr = target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        where = f"{obj.__module__}.{obj.__qualname__}"
        assert where in ids or target.replace(":", ".") in ids, f"hiddencost.{name} ({where})"
    # a module shown whole shows every public function defined in it
    text = (ROOT / "docs" / "reference" / "api.md").read_text()
    modules = [m for m in re.findall(r"^::: ([\w.]+)$", text, re.M)
               if inspect.ismodule(_resolve(m))]
    assert {"hiddencost.report.analyses", "hiddencost.metrics"} <= set(modules)
    for module in modules:
        mod = importlib.import_module(module)
        public = [n for n, f in inspect.getmembers(mod, inspect.isfunction)
                  if not n.startswith("_") and f.__module__ == module]
        missing = [n for n in public if f"{module}.{n}" not in ids]
        assert not missing, f"{module}: {missing} missing from the API reference"


def _resolve(dotted: str):
    try:
        return importlib.import_module(dotted)
    except ImportError:
        module, _, attr = dotted.rpartition(".")
        return getattr(importlib.import_module(module), attr)


def test_presets_and_record_schema_pages_are_generated_from_the_code(site):
    from hiddencost.records import RunRecord
    from hiddencost.study.catalog import preset_names

    presets = (site / "reference" / "presets" / "index.html").read_text()
    for name in preset_names():
        assert f"<code>{name}</code>" in presets, name
    record = (site / "reference" / "record" / "index.html").read_text()
    for field in RunRecord.model_fields:
        assert f"<code>{field}</code>" in record, field


def test_the_site_loads_nothing_from_the_internet(site):
    index = (site / "index.html").read_text()
    assert "fonts.googleapis" not in index and "fonts.gstatic" not in index
    srcs = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"', index)
    assert not srcs, srcs


@pytest.mark.parametrize("example", sorted(p.name for p in (ROOT / "examples").glob("*.py")))
def test_examples_run_as_written(example, tmp_path):
    source = (ROOT / "examples" / example).read_text()
    ast.parse(source)  # jupytext percent format is plain Python
    assert "# %%" in source
    done = subprocess.run([sys.executable, str(ROOT / "examples" / example)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    if example == "one_run.py":
        assert re.search(r"hidden cost \(dense - pruned accuracy\): [+-]\d\.\d{3}", done.stdout)
        assert "digit 0 -> ImageNet" in done.stdout
    if example == "results_in_pandas.py":
        png = tmp_path / "example-results" / "budget-demo" / "accuracy_vs_budget.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(re.findall(r"^\d+ +(dense|magnitude\S*) +(ilm|lp) ", done.stdout, re.M)) == 8


def _command_lines() -> list[tuple[str, str]]:
    """(file, command line) of every `hiddencost …` command the README and the docs show, in
    code blocks and inline code (continuation lines joined)."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in re.findall(r"(?:^\$? ?|`)(hiddencost (?:[a-z][\w-]*)[^`\n#]*)", text, re.M):
            found.append((path.relative_to(ROOT).as_posix(), line.strip()))
    return found


def test_every_command_the_docs_show_exists_with_the_options_it_uses():
    from hiddencost.cli import app

    root = typer.main.get_command(app)
    lines = _command_lines()
    assert len(lines) > 40
    wrong = []
    for where, line in lines:
        words = line.split()[1:]
        command, path = root, ["hiddencost"]
        # typer vendors its own click: a group is what has subcommands
        while words and hasattr(command, "commands") and words[0] in command.commands:
            command = command.commands[words.pop(0)]
            path.append(command.name)
        if hasattr(command, "commands") and words and not words[0].startswith("-") \
                and not getattr(command, "invoke_without_command", False):
            wrong.append(f"{where}: {line!r}: no command {words[0]!r}")
            continue
        options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        for word in words:
            flag = word.split("=")[0]
            if flag.startswith("--") and flag not in options and flag != "--help":
                wrong.append(f"{where}: {line!r}: {' '.join(path)} has no {flag}")
    assert not wrong, "\n".join(wrong)
