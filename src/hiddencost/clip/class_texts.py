"""Class texts: the names a CLIP method puts in its templates.

``readable`` (the default) are the dataset's class names made readable
(:func:`hiddencost.clip.text.readable`: ``"AnnualCrop"`` → ``"Annual Crop"``). ``reference`` are
the texts of the code behind the paper's Table 2, where they differ — for three of its seven
CLIP datasets:

- **EuroSAT**: the folder names lower-cased (``"annualcrop"``, ``"herbaceousvegetation"``);
- **GTSRB**: ILM-VP's own label map, lower-cased with ``_`` as spaces (``"30 speed"``,
  ``"no overtaking general"``);
- **Caltech101**: the class indices ``"0"`` … ``"100"`` (a bug of that code, but Table 2 came
  from it).

For every other dataset the reference's texts are the readable names. Pure data and one lookup:
no torch, no open_clip.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hiddencost.errors import HiddenCostError

#: ILM-VP's GTSRB label map (``data/const.py``), in label order, as its ``refine_classnames``
#: turns it into text (lower case, ``_`` and ``-`` as spaces).
GTSRB_REFERENCE = (
    "20 speed", "30 speed", "50 speed", "60 speed", "70 speed", "80 speed", "80 lifted",
    "100 speed", "120 speed", "no overtaking general", "no overtaking trucks",
    "right of way crossing", "right of way general", "give way", "stop", "no way general",
    "no way trucks", "no way one way", "attention general", "attention left turn",
    "attention right turn", "attention curvy", "attention bumpers", "attention slippery",
    "attention bottleneck", "attention construction", "attention traffic light",
    "attention pedestrian", "attention children", "attention bikes", "attention snowflake",
    "attention deer", "lifted general", "turn right", "turn left", "turn straight",
    "turn straight right", "turn straight left", "turn right down", "turn left down",
    "turn circle", "lifted no overtaking general", "lifted no overtaking trucks",
)

#: The reference's texts from a dataset's class names, for the datasets where they differ.
REFERENCE_TEXTS: dict[str, Callable[[Sequence[str]], list[str]]] = {
    "eurosat": lambda names: [n.lower() for n in names],
    "gtsrb": lambda names: list(GTSRB_REFERENCE),
    "caltech101": lambda names: [str(i) for i in range(len(names))],
}
#: The datasets whose reference texts differ from the readable names.
CLASS_TEXTS: tuple[str, ...] = tuple(REFERENCE_TEXTS)


def class_texts(dataset: str, class_names: Sequence[str], which: str) -> list[str]:
    """The class texts of ``dataset`` (its registry name) under ``which`` (``readable`` or
    ``reference``, see the module docstring), one per class in label order."""
    if which not in ("readable", "reference"):
        raise HiddenCostError(f"unknown class_texts {which!r}; use readable or reference")
    make = REFERENCE_TEXTS.get(dataset) if which == "reference" else None
    if make is None:
        return list(class_names)
    texts = make(class_names)
    if len(texts) != len(class_names):
        raise HiddenCostError(f"the reference's {dataset} texts name {len(texts)} classes; the "
                              f"dataset has {len(class_names)}")
    return texts
