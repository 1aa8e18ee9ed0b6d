"""Neural Magic SparseML / SparseZoo checkpoints: GMP-pruned ResNet-18/34/50 and VGG-11/16/19.

SparseML's ``save_model`` writes ``{"state_dict": ..., "optimizer"?: ..., "recipe"?: str,
"epoch"?: int, "arch_key"?: str}`` (github.com/neuralmagic/sparseml,
``src/sparseml/pytorch/utils/model.py``). Its ResNet (``pytorch/models/classification/resnet.py``)
names tensors differently from torchvision::

    input.conv.weight, input.bn.*                       -> conv1.weight, bn1.*
    sections.<s>.<b>.conv<c>.weight, .bn<c>.*           -> layer<s+1>.<b>.conv<c>.weight, .bn<c>.*
    sections.<s>.<b>.identity.conv.weight               -> layer<s+1>.<b>.downsample.0.weight
    sections.<s>.<b>.identity.bn.*                      -> layer<s+1>.<b>.downsample.1.*
    classifier.fc.weight, classifier.fc.bias            -> fc.weight, fc.bias

(its ReLU wrappers and the classifier's softmax hold no tensors). Its VGG
(``sections.<s>.<b>.conv``, ``classifier.mlp.<i>``; torchvision's names are accepted too) is
renamed by
:mod:`hiddencost.zoo.vgg_layout`. The paper's code loaded its SparseZoo VGG files into
torchvision's VGG with ``strict=False``, which loads nothing from SparseML's names; here every
key is mapped. The remap is total: any other key is an error naming it. Pruned weights are
stored already zeroed (no masks).

Claims. When the checkpoint embeds its recipe (YAML, possibly as the front matter of a markdown
recipe between ``---`` lines), every ``GMPruningModifier`` / ``MagnitudePruningModifier``
(``!``-tagged YAML mappings) with a ``final_sparsity`` and ``params`` (SparseML names, or
``__ALL__`` / ``__ALL_PRUNABLE__``) is a per-layer claim: each listed weight must be that sparse
(within 0.01). The tag ``gmp-sparsezoo-s<NN>`` adds an overall claim. The tag ``gmp-sparsezoo``
without a number requires a recipe in the file. Assumption (not confirmed on a published file,
none is reachable here): SparseZoo's PyTorch ``model.pth`` files follow ``save_model``'s layout.
SparseZoo models are fetched with the ``sparsezoo`` client from stubs such as
``zoo:cv/classification/resnet_v1-18/pytorch/sparseml/imagenet/pruned-moderate``
(https://sparsezoo.neuralmagic.com); pass the downloaded ``model.pth``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from hiddencost.checkpoints import (
    extract_state_dict,
    load_state_dict_strict,
    read_checkpoint_object,
    remap_keys,
    shorten,
    strip_prefix,
)
from hiddencost.compression.measure import layer_sparsities
from hiddencost.errors import HiddenCostError
from hiddencost.zoo.common import ZooLoadReport, ZooSpec, resnet_rules
from hiddencost.zoo.vgg_layout import is_timm_vgg, remap_vgg, vgg_key_map

__all__ = ["SPARSEML_RULES", "load_sparseml", "recipe_claims", "remap_sparseml"]

#: ``(regex, replacement)`` rules from SparseML ResNet names to timm / torchvision ResNet names;
#: ``{s}`` is the section, renumbered (SparseML sections are 0-based, torchvision layers 1-based).
_RULES = resnet_rules("input", r"sections\.(\d)\.(\d+)", r"conv(\d)\.weight", r"bn(\d)",
                      "identity", r"classifier\.fc", "layer{s}")


def _renumbered(template: str):
    def expand(match: re.Match) -> str:
        new = match.expand(template)
        return new.replace("{s}", str(int(match.group(1)) + 1)) if "{s}" in new else new
    return expand


#: The rules as :func:`hiddencost.checkpoints.remap_keys` takes them.
SPARSEML_RULES = [(pattern, _renumbered(template)) for pattern, template in _RULES]
RECIPE_TOLERANCE = 0.01


def remap_sparseml(state: dict, source: str) -> dict:
    """Rename SparseML keys to timm's (SparseML sections are 0-based, torchvision layers 1-based).

    The remap is total: a key no rule matches is an error naming it.
    """
    return remap_keys(state, SPARSEML_RULES, source)[0]


def _sparseml_name(name: str) -> str:
    """One SparseML tensor name to ours (used for recipe ``params``)."""
    mapped = remap_sparseml({name: None}, "recipe")
    return next(iter(mapped))


def _recipe_yaml(recipe: str) -> Any:
    import yaml

    text = recipe
    parts = re.split(r"^---\s*$", recipe, flags=re.MULTILINE)
    if len(parts) >= 3 and not parts[0].strip():
        text = parts[1]

    class _Loader(yaml.SafeLoader):
        pass

    def _tagged(loader, suffix, node):  # "!GMPruningModifier" -> {"__modifier__": ..., ...}
        if isinstance(node, yaml.MappingNode):
            data = loader.construct_mapping(node, deep=True)
        else:
            data = {}
        return {"__modifier__": suffix, **data}

    _Loader.add_multi_constructor("!", _tagged)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise HiddenCostError(f"the checkpoint's recipe is not valid YAML: {exc}") from None


def _modifiers(node: Any) -> list[dict]:
    found: list[dict] = []
    if isinstance(node, dict):
        if "__modifier__" in node:
            found.append(node)
        for value in node.values():
            found.extend(_modifiers(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_modifiers(value))
    return found


def recipe_claims(recipe: str, prunable: list[str],
                  rename: Callable[[str], str] | None = None) -> dict[str, float]:
    """Per-weight final sparsities a SparseML recipe claims, keyed by our weight names.

    Pruning modifiers are those whose tag ends in ``PruningModifier`` and have a numeric
    ``final_sparsity``; ``params`` of ``__ALL__`` / ``__ALL_PRUNABLE__`` mean all ``prunable``.
    Regex params (``re:...``) are matched against SparseML names mapped to ours; ``rename``
    maps one SparseML name to ours (default: the ResNet rules).
    """
    rename = rename or _sparseml_name
    claims: dict[str, float] = {}
    for mod in _modifiers(_recipe_yaml(recipe)):
        if not str(mod["__modifier__"]).endswith("PruningModifier"):
            continue
        final = mod.get("final_sparsity")
        params = mod.get("params")
        if not isinstance(final, (int, float)) or params is None:
            continue
        params = [params] if isinstance(params, str) else list(params)
        targets: list[str] = []
        for p in params:
            if p in ("__ALL__", "__ALL_PRUNABLE__"):
                targets.extend(prunable)
            elif str(p).startswith("re:"):
                pattern = re.compile(str(p)[3:])
                targets.extend(k for k in prunable if pattern.fullmatch(k))
            else:
                targets.append(rename(str(p)))
        for t in targets:
            claims[t] = float(final)
    return claims


def load_sparseml(model: nn.Module, path: str | Path, spec: ZooSpec | None = None,
                  mask: None = None) -> ZooLoadReport:
    """Load a SparseML ResNet checkpoint into a timm ResNet strictly; return the report.

    When the file embeds a recipe, each weight it prunes must have the recipe's final sparsity
    (within 0.01); the error names the offending weights. ``claimed_sparsity`` in the report is
    then the weighted mean of the per-layer claims over all conv/linear weights (unlisted layers
    count as dense).
    """
    source = str(path)
    obj = read_checkpoint_object(path)
    state = strip_prefix(extract_state_dict(obj, source, wrappers=("state_dict",)), "module.",
                         repeated=True)
    vgg = is_timm_vgg(model)
    state = remap_vgg(state, model, source) if vgg else remap_sparseml(state, source)
    load_state_dict_strict(model, state, source)
    notes: list[str] = []
    if isinstance(obj, dict) and isinstance(obj.get("arch_key"), str):
        notes.append(f"arch_key: {obj['arch_key']}")
    recipe = obj.get("recipe") if isinstance(obj, dict) else None
    claimed: float | None = None
    if isinstance(recipe, str) and recipe.strip():
        measured = layer_sparsities(model)
        prunable = [f"{k}.weight" for k in measured]
        vgg_names = vgg_key_map(model) if vgg else {}
        claims = recipe_claims(recipe, prunable,
                               (lambda n: vgg_names.get(n, n)) if vgg else None)
        unknown = [k for k in claims if k.removesuffix(".weight") not in measured]
        if unknown:
            raise HiddenCostError(
                f"checkpoint {source}: its recipe prunes tensors the model lacks: "
                f"{shorten(unknown)}"
            )
        bad = [
            f"{k} ({measured[k.removesuffix('.weight')]:.3f} vs {v:.3f})"
            for k, v in claims.items()
            if abs(measured[k.removesuffix(".weight")] - v) > RECIPE_TOLERANCE
        ]
        if bad:
            raise HiddenCostError(
                f"checkpoint {source}: measured sparsity does not match its recipe's "
                f"final_sparsity for: {shorten(bad, 4)}"
            )
        if claims:
            sizes = {n: m.weight.numel() for n, m in model.named_modules() if n in measured}
            total = sum(sizes.values())
            claimed = sum(claims.get(f"{n}.weight", 0.0) * s for n, s in sizes.items()) / total
            notes.append(f"recipe claims a final sparsity for {len(claims)} weights")
    return ZooLoadReport.measure(
        model, name=spec.name if spec else "sparseml", format="sparseml", files=[source],
        claimed_sparsity=claimed, claim_source="recipe" if claimed is not None else "",
        n_remapped_keys=len(state), notes=notes,
    )
