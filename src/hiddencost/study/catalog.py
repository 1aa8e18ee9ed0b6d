"""The preset catalog: ready-made studies, runnable as ``hiddencost study run NAME``.

- ``quickstart``: the offline quickstart, built from the constants of
  :mod:`hiddencost.quickstart` so the two cannot drift apart.
- ``paper-*``: the grids of *Uncovering the Hidden Cost of Model Compression* (arXiv
  2308.14969), shipped as YAML files in ``hiddencost/study/presets/``. They need the
  torchvision datasets (``--data-root``) and, for checkpoint families, the released compressed
  checkpoints under ``--checkpoint-root``; ``hiddencost study show-preset NAME`` prints one as
  YAML to copy and edit.
"""

from __future__ import annotations

from importlib import resources

from hiddencost.errors import HiddenCostError
from hiddencost.study.spec import StudySpec, parse_spec

QUICKSTART = "quickstart"


def _preset_files() -> dict[str, str]:
    folder = resources.files("hiddencost.study") / "presets"
    return {
        entry.name.removesuffix(".yaml"): entry.name
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    }


def preset_names() -> list[str]:
    """All preset names: the quickstart first, then the YAML presets alphabetically."""
    return [QUICKSTART, *sorted(_preset_files())]


def quickstart_spec() -> StudySpec:
    """The quickstart as a study: exactly the runs of
    :func:`hiddencost.quickstart.quickstart_configs`, in the same order."""
    from hiddencost import quickstart as qs

    return StudySpec(
        name=QUICKSTART,
        description=("Offline quickstart: EfficientNet-Lite0 (dense, magnitude 50%/90%, 4-bit "
                     "weights) → digits by ILM/FLM/RLM-VP and LP at 10-shot and full data"),
        model=["efficientnet_lite0"],
        dataset=["digits"],
        compression=[
            {"method": c.method, **c.model_dump(mode="json", exclude_defaults=True)}
            for c in qs.QUICKSTART_COMPRESSIONS
        ],
        method=list(qs.QUICKSTART_METHODS),
        n_shot=list(qs.QUICKSTART_SHOTS),
        seed=[0],
        params={
            "epochs": qs.QUICKSTART_EPOCHS,
            "canvas_size": qs.QUICKSTART_CANVAS,
            "inner_size": qs.QUICKSTART_INNER,
            "lp_image_size": qs.QUICKSTART_LP_SIZE,
            "save_prompt_history": qs.QUICKSTART_SAVE_PROMPT_HISTORY,
        },
    )


def load_preset(name: str) -> StudySpec:
    """The preset called ``name``; unknown names raise a one-line error listing the known."""
    if name == QUICKSTART:
        return quickstart_spec()
    files = _preset_files()
    if name not in files:
        raise HiddenCostError(f"unknown preset {name!r}; presets: {', '.join(preset_names())}")
    text = (resources.files("hiddencost.study") / "presets" / files[name]).read_text()
    return parse_spec(text, source=f"preset {name}", default_name=name)
