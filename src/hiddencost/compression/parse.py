"""The text forms of a compression setting, turned into :data:`CompressionSpec` fields.

Two forms besides YAML mappings, both read here and nowhere else:

- the **short form** (``hiddencost fidelity --compressed``, study files, labels):
  ``dense``; ``magnitude:0.9`` / ``random:0.5`` (global scope), ``magnitude-layer:0.5`` (per-layer
  scope), a percentage ``magnitude:90%``; ``w4``, ``a8``, ``w4a4`` (weight / activation bits);
  ``nm:2:4`` / ``wanda-nm:2:4`` (N:M by magnitude / Wanda), ``wanda:0.5``, ``gptq:4``,
  ``lowrank:0.25``; the labels the library prints (``magnitude-global-s0.90``, ``nm2:4``,
  ``wanda-s0.50``, ``gptq-w4``, ``lowrank-r0.25``) are accepted too. A sparsity is a
  fraction in (0, 1) or a percentage with ``%``: ``magnitude:1.5`` is an error, never 1.5%.
- the **flags** of ``hiddencost run`` (``--prune``, ``--sparsity``, ``--weight-bits``, ...).

The result is a dict of fields that :func:`hiddencost.compression.spec.parse_compression`
validates into one of the variants.
"""

from __future__ import annotations

import re
from typing import Any

from hiddencost.errors import HiddenCostError

__all__ = ["flag_fields", "short_form_fields"]

_PRUNE = re.compile(r"(magnitude|random)(?:-(global|layer))?(?::|-s)(\d*\.?\d+)(%?)")
_BITS = re.compile(r"(?:w(\d))?(?:a(\d))?")
_NM = re.compile(r"(wanda-)?nm:?(\d+):(\d+)")
_WANDA = re.compile(r"wanda(?::|-s)(\d*\.?\d+)(%?)")
_GPTQ = re.compile(r"gptq(?::|-w)(\d)")
_LOWRANK = re.compile(r"lowrank(?::|-r)(\d*\.?\d+)")
_FORMS = ("dense, magnitude:0.9, magnitude:90%, random:0.5, magnitude-layer:0.5, w4, a8, w4a4, "
          "nm:2:4, wanda-nm:2:4, wanda:0.5, gptq:4 or lowrank:0.25")


def _sparsity(value: str, percent: bool, text: str) -> float:
    x = float(value)
    if percent:
        return x / 100
    if x >= 1:
        raise HiddenCostError(f"compression {text!r}: sparsity {value} is not a fraction in "
                              f"(0, 1); write {x / 100:g} or {value}%")
    return x


def short_form_fields(text: str) -> dict[str, Any]:
    """``"magnitude:0.9"`` → ``{"method": "magnitude", "scope": "global", "sparsity": 0.9}``
    (see the module docstring for every form); an unreadable text is a one-line error."""
    t = text.strip().lower()
    if t in ("dense", "none"):
        return {"method": "none"}
    m = _PRUNE.fullmatch(t)
    if m:
        return {"method": m.group(1), "scope": m.group(2) or "global",
                "sparsity": _sparsity(m.group(3), bool(m.group(4)), text)}
    m = _NM.fullmatch(t)
    if m:
        return {"method": "nm", "n": int(m.group(2)), "m": int(m.group(3)),
                "score": "wanda" if m.group(1) else "magnitude"}
    m = _WANDA.fullmatch(t)
    if m:
        return {"method": "wanda", "sparsity": _sparsity(m.group(1), bool(m.group(2)), text)}
    m = _GPTQ.fullmatch(t)
    if m:
        return {"method": "gptq", "weight_bits": int(m.group(1))}
    m = _LOWRANK.fullmatch(t)
    if m:
        return {"method": "lowrank", "rank_ratio": float(m.group(1))}
    m = _BITS.fullmatch(t)
    if m and (m.group(1) or m.group(2)):
        return {"method": "quantize",
                "weight_bits": int(m.group(1)) if m.group(1) else None,
                "activation_bits": int(m.group(2)) if m.group(2) else None}
    raise HiddenCostError(f"cannot read compression {text!r}; use {_FORMS}")


def flag_fields(
    prune: str = "none", sparsity: float = 0.0, scope: str = "global",
    weight_bits: int | None = None, activation_bits: int | None = None,
    exclude_first_conv: bool = False, exclude_classifier: bool = False, seed: int = 0,
) -> dict[str, Any]:
    """The fields that ``hiddencost run``'s compression flags describe (validated later)."""
    quantized = weight_bits is not None or activation_bits is not None
    if prune not in ("none", "magnitude", "random"):
        raise HiddenCostError(f"unknown --prune {prune!r}; use none, magnitude or random")
    if prune != "none" and quantized:
        raise HiddenCostError("use either --prune or --weight-bits/--activation-bits, not both")
    if prune == "none" and sparsity:
        raise HiddenCostError("--sparsity needs --prune magnitude or --prune random")
    if prune != "none" and not 0.0 < sparsity < 1.0:
        raise HiddenCostError(f"--sparsity must be in (0, 1) for pruning, got {sparsity}")
    excl = {"exclude_first_conv": exclude_first_conv, "exclude_classifier": exclude_classifier}
    if quantized:
        return {"method": "quantize", "weight_bits": weight_bits,
                "activation_bits": activation_bits, **excl}
    if prune == "none":
        return {"method": "none"}
    fields = {"method": prune, "sparsity": sparsity, "scope": scope, **excl}
    return fields | ({"seed": seed} if prune == "random" else {})
