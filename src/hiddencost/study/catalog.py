"""The preset catalog: ready-made studies, runnable as ``hiddencost study run NAME``.

Every preset is a YAML file in ``hiddencost/study/presets/`` (``hiddencost study show-preset
NAME`` prints one to copy and edit):

- ``quickstart``: the offline quickstart (``hiddencost quickstart`` runs it and reports);
- ``quickstart-crossmodal``: its cross-modal twin, EfficientNet-Lite0 reprogrammed to DNA and
  news text (``hiddencost quickstart --crossmodal``);
- ``smoke``: two tiny offline runs, to check an installation or a cluster;
- ``paper-*``: the grids of *Uncovering the Hidden Cost of Model Compression* (arXiv
  2308.14969). They need the torchvision datasets (``--data-root``) and, for checkpoint
  families, the released compressed checkpoints under ``--checkpoint-root``.

:func:`load_spec` reads what a command line names: a study file, or else a preset.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hiddencost.errors import HiddenCostError
from hiddencost.study.spec import StudySpec, parse_spec

QUICKSTART = "quickstart"
#: The offline cross-modal quickstart (``hiddencost quickstart --crossmodal``).
QUICKSTART_CROSSMODAL = "quickstart-crossmodal"
_PRESETS = resources.files("hiddencost.study") / "presets"


def _preset_files() -> dict[str, str]:
    return {
        entry.name.removesuffix(".yaml"): entry.name
        for entry in _PRESETS.iterdir()
        if entry.name.endswith(".yaml")
    }


def preset_names() -> list[str]:
    """All preset names: the quickstart first, then the others alphabetically."""
    return sorted(_preset_files(), key=lambda name: (name != QUICKSTART, name))


def load_preset(name: str, check: bool = True) -> StudySpec:
    """The preset called ``name``; unknown names raise a one-line error listing the known.
    ``check``: see :func:`~hiddencost.study.spec.parse_spec`."""
    files = _preset_files()
    if name not in files:
        raise HiddenCostError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    text = (_PRESETS / files[name]).read_text(encoding="utf-8")
    return parse_spec(text, source=f"preset {name}", default_name=name, check=check)


def load_spec(source: str | Path, check: bool = True) -> StudySpec:
    """Load a study file, or a preset when ``source`` names one (``NAME`` or ``preset:NAME``)
    and is not a file. ``check``: see :func:`~hiddencost.study.spec.parse_spec` (off to read
    a finished study's results without torch)."""
    path = Path(source)
    if path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise HiddenCostError(f"cannot read {path}: {exc}") from None
        stem = "".join(c if c.isalnum() or c in "_.-" else "-" for c in path.stem) or "study"
        return parse_spec(text, source=str(path), default_name=stem, check=check)
    name = str(source).removeprefix("preset:")
    if name in preset_names():
        return load_preset(name, check)
    raise HiddenCostError(f"study file {source} does not exist and is not a preset "
                          f"(presets: {', '.join(preset_names())})")
