"""MkDocs hooks: the reference pages that are generated from the code, so they cannot drift.

A page holds a marker comment where the generated Markdown goes:

- ``<!-- cli-reference -->``: every command of the ``hiddencost`` typer app, its usage,
  arguments and options (typer's own Markdown generator, ``typer.cli.get_docs_for_click``);
- ``<!-- presets -->``: every study preset and score-card suite, its description and YAML;
- ``<!-- record-schema -->``: every field of :class:`hiddencost.records.RunRecord`, its type
  and default.
"""

from __future__ import annotations

from typing import Any

import typer
import typer.cli
import typer.main


def cli_markdown() -> str:
    """The whole command line as Markdown (headings from level 2)."""
    from hiddencost.cli import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="hiddencost")
    text = typer.cli.get_docs_for_click(obj=command, ctx=ctx, name="hiddencost", indent=1,
                                        title="`hiddencost`")
    # typer writes "--out PATH: help  [default: x]"; keep it, but drop rich markup brackets
    return text.replace("[required]", "(required)")


def presets_markdown() -> str:
    """Each study preset and score-card suite with its description and its YAML."""
    from importlib import resources

    import yaml

    from hiddencost.study.catalog import preset_names

    parts = ["## Study presets\n",
             "Run one with `hiddencost study run NAME`; `hiddencost study list-presets` lists "
             "them. Each is the YAML below, shipped in the package.\n"]
    folder = resources.files("hiddencost.study") / "presets"
    for name in preset_names():
        text = (folder / f"{name}.yaml").read_text(encoding="utf-8")
        about = yaml.safe_load(text).get("description", "")
        parts.append(f"### `{name}`\n\n{about}\n\n```yaml\n{text.rstrip()}\n```\n")
    parts.append("## Score-card suites\n\n`hiddencost card --suite NAME` (see the score-card "
                 "guide).\n")
    suites = resources.files("hiddencost.card") / "suites"
    for path in sorted(p.name for p in suites.iterdir() if p.name.endswith(".yaml")):
        text = (suites / path).read_text(encoding="utf-8")
        parts.append(f"### `{path.removesuffix('.yaml')}`\n\n```yaml\n{text.rstrip()}\n```\n")
    return "\n".join(parts)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("hiddencost.records.", "").replace(
        "hiddencost.compression.report.", "")


def record_markdown() -> str:
    """A table of :class:`~hiddencost.records.RunRecord`'s fields: name, type, default."""
    from pydantic_core import PydanticUndefined

    from hiddencost.records import RunRecord

    rows = ["| field | type | default |", "|---|---|---|"]
    for name, field in RunRecord.model_fields.items():
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "required"
        elif field.default_factory is not None:
            default = f"`{field.default_factory()!r}`"
        else:
            default = f"`{field.default!r}`"
        kind = _type_name(field.annotation).replace("|", "\\|")
        rows.append(f"| `{name}` | `{kind}` | {default} |")
    return "\n".join(rows) + "\n"


MARKERS = {"<!-- cli-reference -->": cli_markdown, "<!-- presets -->": presets_markdown,
           "<!-- record-schema -->": record_markdown}


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown
