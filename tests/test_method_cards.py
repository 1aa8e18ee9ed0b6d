"""Methods own their behaviour: label mappings are registered strategies, a transfer method says
how it is shown and what it costs, and no module outside a method's own branches on its name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from hiddencost.prompting.catalog import METHOD_TABLES, method_card
from hiddencost.prompting.label_mapping import random_mapping
from hiddencost.prompting.mappings import MAPPINGS
from hiddencost.prompting.methods import (
    METHODS,
    CrossModalOptions,
    TransferSettings,
    VPOptions,
    Work,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "hiddencost"
#: The modules that define methods and mappings: the only ones that may name them.
OWNERS = {"prompting/methods.py", "prompting/clip_methods.py", "prompting/mappings.py",
          "prompting/catalog.py"}


def _names() -> set[str]:
    return {n for table in METHOD_TABLES.values() for n in table} | set(MAPPINGS.names())


def _branches_on_names(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines where a method name is compared with (``==``, ``!=``, ``in``) or is the key of a
    dict literal: what an ``if method == "ilm"`` chain or a name → value table looks like."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c for part in (node.left, *node.comparators) for c in ast.walk(part)
                      if isinstance(c, ast.Constant)]
            lines += [c.lineno for c in consts if c.value in names]
        elif isinstance(node, ast.Dict):
            lines += [k.lineno for k in node.keys
                      if isinstance(k, ast.Constant) and k.value in names]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "isin":
            lines += [c.lineno for a in node.args for c in ast.walk(a)
                      if isinstance(c, ast.Constant) and c.value in names]
    return lines


def test_no_module_outside_a_methods_own_branches_on_its_name():
    names = _names()
    found = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel in OWNERS:
            continue
        found += [f"{rel}:{line}" for line in _branches_on_names(ast.parse(path.read_text()),
                                                                  names)]
    assert found == []


def test_the_checker_sees_a_branch_on_a_name():
    tree = ast.parse('if cfg.method == "ilm":\n    pass\nx = {"flm": 1}\ny = df.isin(("rlm",))')
    assert _branches_on_names(tree, {"ilm", "flm", "rlm"}) == [1, 3, 4]


def test_every_method_has_a_display_name_and_a_marker():
    for family, table in METHOD_TABLES.items():
        for name in table:
            card = method_card(name, family)
            assert card.id == f"{family}/{name}"
            assert card.display_name and card.marker


def test_ilm_is_shown_as_what_it_is_on_each_family():
    assert method_card("ilm", "timm").display_name == "ILM-VP"
    assert method_card("ilm", "open_clip").display_name == "ILM-TP-VP"
    assert method_card("lp", "timm").learns_prompt is False
    assert method_card("vp", "open_clip").learns_prompt is True


@pytest.mark.parametrize(("name", "recomputed"), [
    ("ilm", [0, 2, 4]),  # mapping_interval 2 over 6 epochs
    ("flm", [0]),
    ("rlm", []),
    ("fm", []),
])
def test_mapping_strategies_say_when_they_recompute(name, recomputed):
    mapping = MAPPINGS.get(name)
    assert [e for e in range(6) if mapping.recomputes(e, 2)] == recomputed


def test_rlm_starts_from_its_seeded_random_mapping_and_the_others_from_arange():
    assert torch.equal(MAPPINGS.get("rlm").initial(20, 4, 3, False, 1),
                       random_mapping(20, 4, 3, False, 1))
    for name in ("flm", "ilm", "fm"):
        assert MAPPINGS.get(name).initial(20, 4, 3, False, 1) is None
    assert MAPPINGS.get("fm").fully_connected


def test_fm_refuses_several_sources_per_target():
    with pytest.raises(Exception, match="mapping_num 2 has no meaning for fm"):
        MAPPINGS.get("fm").check(20, 4, False, 2)


def _settings(**kw) -> TransferSettings:
    base = dict(epochs=5, lr=0.01, batch_size=8, seed=0, canvas_size=64, inner_size=32,
                lp_image_size=96)
    return TransferSettings(**{**base, **kw})


def test_work_is_what_each_method_puts_through_the_backbone():
    s = _settings(options=VPOptions(mapping_interval=2))
    # ILM, k = 2 over 5 epochs: mapping passes at epochs 0, 2, 4 → 3 forwards of n = 10
    assert METHODS.get("ilm").work(s, 10, 100, 40) == Work(64, 50, 3 * 10 + 40)
    assert METHODS.get("flm").work(s, 10, 100, 40) == Work(64, 50, 10 + 40)
    assert METHODS.get("rlm").work(s, 10, 100, 40) == Work(64, 50, 40)
    assert METHODS.get("lp").work(s, 10, 100, 40) == Work(96, 0, 140, shared_forward=True)
    # xmr: max_steps 3 × batch 8 = 24 < 5 · 10
    xmr = _settings(options=CrossModalOptions(max_steps=3))
    assert METHODS.get("xmr").work(xmr, 10, 100, 40) == Work(64, 24, 40)
