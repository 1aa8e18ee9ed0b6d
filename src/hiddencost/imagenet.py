"""The ImageNet-1k class names, read from the copy that ships inside torchvision without
importing torchvision (which loads torch): reading a study's results stays torch-free.

torchvision keeps the names as a literal list, ``_IMAGENET_CATEGORIES`` in
``torchvision/models/_meta.py``; this module parses that file (no code of it runs). Written by
hand because no package ships the list in a torch-free form.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from hiddencost.errors import HiddenCostError

_LIST = "_IMAGENET_CATEGORIES"


@functools.cache
def _names() -> tuple[str, ...]:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise HiddenCostError("the ImageNet class names come from torchvision, which is not "
                              "installed: pip install torchvision")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "_meta.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == _LIST for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    raise HiddenCostError(f"{path} has no {_LIST}: this torchvision keeps the ImageNet class "
                          "names elsewhere")


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in index order (as torchvision ships them)."""
    return list(_names())
