"""The compressed-model artifact that ``hiddencost compress`` writes and ``--checkpoint`` reads.

Two files side by side (``out/model.safetensors`` and ``out/model.json``; the path of either, or
of their folder, names the artifact):

- ``model.safetensors``: the compressed model's full state dict (safetensors: no code).
- ``model.json``: plain data, enough to rebuild the architecture before a strict load::

    {"format": "hiddencost-compressed-model", "version": 1,
     "base_model": "efficientnet_lite0.in1k", "timm_arch": "tf_efficientnet_lite0",
     "num_classes": 1000, "recipe": "gmp", "recipe_config": {...},
     "structure": {module: {"attrs": {...}, "tensors": {name: shape}}} | null,
     "restructure": {a compression spec that replaces layers, e.g. low rank} (when there is one),
     "activation_quantization": {"bits": 8, "layers": [names]} | null,
     "report": {"n_zero_weights": ..., "n_prunable_weights": ..., "measured_sparsity": ...,
                "n_params": ..., "weight_bits": ...}, "sha256": "<of model.safetensors>"}

``structure`` lists, for every module whose integer attributes (``out_channels``,
``num_features``, ``groups``, ...) or tensor shapes differ from the freshly built base model
(structured pruning), the new values; loading builds the base model, applies them (empty tensors
of the recorded shapes), wraps the recorded layers with activation quantizers, loads the state
dict strictly and checks the file hash, the exact zero count and, for quantized weights, the
number of distinct values per output channel (at most ``2^bits``).

Artifacts are a registered weight source (:mod:`hiddencost.weights`): a checkpoint path with
this JSON beside it is read here, before the plain state-dict source.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from hiddencost.checkpoints import load_state_dict_strict, read_state_dict
from hiddencost.compression import apply_compression, compression_or_error
from hiddencost.compression.measure import max_distinct_values_per_channel, sparsity_counts
from hiddencost.compression.quantization import ActivationFakeQuant, QuantizedInput
from hiddencost.errors import HiddenCostError
from hiddencost.model_table import BackboneEntry, build_network, table_entry
from hiddencost.weights import (
    PRIORITY_ARTIFACT,
    LoadedWeights,
    WeightRequest,
    register_weight_source,
)

__all__ = [
    "ARTIFACT_FORMAT",
    "apply_structure",
    "artifact_metadata_path",
    "capture_structure",
    "existing_artifact",
    "load_artifact",
    "save_artifact",
]

ARTIFACT_FORMAT = "hiddencost-compressed-model"
ARTIFACT_VERSION = 1
_WEIGHTS = "model.safetensors"


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.is_dir():
        return path / _WEIGHTS, path / "model.json"
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    return path, path.with_suffix(".json")


def existing_artifact(folder: str | Path) -> Path | None:
    """The first file of an artifact already in ``folder`` (weights or JSON), or None: what
    ``compress`` refuses to replace unless told to."""
    found = [p for p in _paths(Path(folder) / _WEIGHTS) if p.exists()]
    return found[0] if found else None


def artifact_metadata_path(path: str | Path) -> Path | None:
    """The JSON of the artifact ``path`` names, or None if ``path`` is not an artifact."""
    weights, meta = _paths(path)
    if not meta.is_file() or not weights.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return meta if isinstance(data, dict) and data.get("format") == ARTIFACT_FORMAT else None


def _int_attrs(module: nn.Module) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in vars(module).items():
        if k.startswith("_") or isinstance(v, bool):
            continue
        if isinstance(v, int):
            out[k] = v
        elif isinstance(v, tuple) and v and all(isinstance(x, int) and not isinstance(x, bool)
                                                for x in v):
            out[k] = list(v)
    return out


def _tensor_shapes(module: nn.Module) -> dict[str, list[int]]:
    tensors = dict(module.named_parameters(recurse=False))
    tensors.update(dict(module.named_buffers(recurse=False)))
    return {k: list(v.shape) for k, v in tensors.items() if v is not None}


def capture_structure(model: nn.Module, base: nn.Module) -> dict[str, dict[str, Any]]:
    """Modules of ``model`` whose int attributes or tensor shapes differ from ``base``'s.

    Both must have the same module names (structured pruning changes sizes, not the graph).
    """
    base_modules = dict(base.named_modules())
    structure: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if name not in base_modules:
            raise HiddenCostError(f"module {name!r} does not exist in the base architecture")
        ref = base_modules[name]
        attrs = {k: v for k, v in _int_attrs(module).items() if _int_attrs(ref).get(k) != v}
        shapes = {k: v for k, v in _tensor_shapes(module).items()
                  if _tensor_shapes(ref).get(k) != v}
        if attrs or shapes:
            structure[name] = {"attrs": attrs, "tensors": shapes}
    return structure


def _narrower(shape: Any, full: torch.Size) -> bool:
    """Whether ``shape`` (from JSON) is a list of as many sizes as ``full`` has, holding at most
    as many numbers (grouped convolutions may trade one dimension for another)."""
    return (isinstance(shape, list) and len(shape) == len(full)
            and all(type(n) is int and n >= 0 for n in shape)
            and math.prod(shape) <= full.numel())


def apply_structure(model: nn.Module, structure: dict[str, dict[str, Any]]) -> nn.Module:
    """Resize ``model``'s modules as ``structure`` records (attributes set, tensors replaced by
    zeros of the recorded shapes, to be filled by a strict load). Returns ``model``. A recorded
    shape larger than the architecture's is refused before it is allocated."""
    modules = dict(model.named_modules())
    for name, change in structure.items():
        if name not in modules:
            raise HiddenCostError(f"structure names a module the architecture lacks: {name!r}")
        module = modules[name]
        for attr, value in change.get("attrs", {}).items():
            current = getattr(module, attr, None)
            setattr(module, attr, tuple(value) if isinstance(current, tuple) else value)
        params = dict(module.named_parameters(recurse=False))
        buffers = dict(module.named_buffers(recurse=False))
        for tname, shape in change.get("tensors", {}).items():
            current = params.get(tname, buffers.get(tname))
            if current is not None and not _narrower(shape, current.shape):
                # checked before anything of that shape is allocated (a crafted JSON)
                raise HiddenCostError(
                    f"structure gives {name}.{tname} the shape {shape}, larger than the "
                    f"architecture's {list(current.shape)} (structured pruning only removes)")
            if tname in params:
                old = params[tname]
                setattr(module, tname, nn.Parameter(
                    torch.zeros(shape, dtype=old.dtype), requires_grad=old.requires_grad))
            elif tname in buffers and buffers[tname] is not None:
                module.register_buffer(tname, torch.zeros(shape, dtype=buffers[tname].dtype))
            else:
                raise HiddenCostError(
                    f"structure names a tensor {name}.{tname} that does not exist")
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _quantized_layers(model: nn.Module) -> tuple[int | None, list[str]]:
    wrapped = [(n, m) for n, m in model.named_modules() if isinstance(m, QuantizedInput)]
    if not wrapped:
        return None, []
    bits = {m.quantizer.bits for _, m in wrapped}
    if len(bits) != 1:
        raise HiddenCostError("activation quantizers with mixed bit-widths cannot be saved")
    return bits.pop(), [n for n, _ in wrapped]


def _report(model: nn.Module, weight_bits: int | None) -> dict[str, Any]:
    zeros, total = sparsity_counts(model)
    return {
        "n_zero_weights": zeros,
        "n_prunable_weights": total,
        "measured_sparsity": zeros / total if total else 0.0,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "weight_bits": weight_bits,
        "max_distinct_values_per_channel": (
            max_distinct_values_per_channel(model) if weight_bits is not None else None),
    }


def _table_entry(name: str) -> BackboneEntry:
    entry = table_entry(name)
    if entry is None:
        raise HiddenCostError(f"artifacts are made from registered backbones, not {name!r}")
    return entry


def _wrap_inputs(model: nn.Module, layers: list[str], bits: int) -> None:
    """Put a ``bits``-bit activation quantizer in front of each named layer."""
    for name in layers:
        parent, _, child = name.rpartition(".")
        holder = model.get_submodule(parent) if parent else model
        setattr(holder, child, QuantizedInput(getattr(holder, child), bits))


def save_artifact(
    model: nn.Module,
    out: str | Path,
    base_model: str,
    recipe: str,
    recipe_config: dict[str, Any] | None = None,
    weight_bits: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` as an artifact into folder ``out``; returns the ``.safetensors`` path.

    ``base_model`` is the registered backbone the model was compressed from; the architecture
    changes (structured pruning) are captured against a fresh build of it.
    """
    entry = _table_entry(base_model)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights, meta = _paths(out)
    base = _restructured(build_network(entry), (extra or {}).get("restructure"))
    bits, layers = _quantized_layers(model)
    if bits is not None:  # compare structure against a base with the same wrappers
        _wrap_inputs(base, layers, bits)
    structure = capture_structure(model, base)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    data = {
        "format": ARTIFACT_FORMAT,
        "version": ARTIFACT_VERSION,
        "base_model": entry.name,
        "timm_arch": entry.timm_arch,
        "num_classes": entry.cfg.num_classes,
        "recipe": recipe,
        "recipe_config": recipe_config or {},
        "structure": structure or None,
        "activation_quantization": {"bits": bits, "layers": layers} if bits is not None else None,
        "report": _report(model, weight_bits),
        "sha256": None,  # of the weights, once written
        **(extra or {}),
    }
    # both files through temporary names, renamed into place weights first: an interrupted
    # save leaves no half-written file (at worst new weights beside the old JSON, which the
    # sha256 check refuses)
    tmp_weights, tmp_meta = (p.with_name(f".{p.name}.{os.getpid()}.tmp") for p in (weights, meta))
    try:
        save_file(state, str(tmp_weights))
        data["sha256"] = _sha256(tmp_weights)
        tmp_meta.write_text(json.dumps(data, indent=2, allow_nan=False))
        os.replace(tmp_weights, weights)
        os.replace(tmp_meta, meta)
    finally:
        tmp_weights.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return weights


def load_artifact(
    path: str | Path, expected_model: str | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and strictly load an artifact; returns ``(model in eval mode, its JSON)``.

    ``expected_model`` (a registry name) must equal the artifact's ``base_model`` when given.
    Errors (one line): missing files, foreign format or version, hash mismatch, keys or shapes
    that do not fit, a zero count or weight-level count different from the JSON's.
    """
    weights, meta_path = _paths(path)
    meta = _read_metadata(path, expected_model)
    if meta.get("sha256") and _sha256(weights) != meta["sha256"]:
        raise HiddenCostError(f"{weights} does not match the sha256 recorded in {meta_path.name}")
    model = _restructured(build_network(_table_entry(meta["base_model"]),
                                        num_classes=meta["num_classes"]), meta.get("restructure"))
    quant = meta.get("activation_quantization")
    if quant:
        _wrap_inputs(model, quant["layers"], int(quant["bits"]))
    if meta.get("structure"):
        apply_structure(model, meta["structure"])
    load_state_dict_strict(model, read_state_dict(weights), str(weights))
    for q in model.modules():
        if isinstance(q, ActivationFakeQuant):
            q._calibrated = None  # re-read from the loaded buffers
    _check_report(model, meta.get("report", {}), f"{weights}", meta_path.name)
    return model.eval(), meta


def _restructured(model: nn.Module, restructure: dict[str, Any] | None) -> nn.Module:
    """``model`` with the module replacements of the artifact's ``restructure`` spec (low rank):
    the same layers replaced as when it was compressed (their shapes depend on the spec and the
    architecture only), to be filled by the strict load."""
    if restructure:
        apply_compression(model, compression_or_error(restructure))
    return model


def _read_metadata(path: str | Path, expected_model: str | None) -> dict[str, Any]:
    """The artifact's JSON, checked for format, version and (optionally) its base model."""
    weights, meta_path = _paths(path)
    if artifact_metadata_path(path) is None:
        raise HiddenCostError(f"{path} is not a hiddencost compressed model (no {meta_path.name} "
                              f"with format {ARTIFACT_FORMAT!r} beside {weights.name})")
    meta = json.loads(meta_path.read_text())
    if meta.get("version") != ARTIFACT_VERSION:
        raise HiddenCostError(f"{meta_path}: unsupported artifact version {meta.get('version')!r}")
    entry = _table_entry(meta["base_model"])
    if expected_model is not None:
        expected = _table_entry(expected_model).name
        if expected != entry.name:
            raise HiddenCostError(
                f"{weights} was compressed from {entry.name}, not {expected}; pass --model "
                f"{entry.name}"
            )
    return meta


def _check_report(model: nn.Module, report: dict[str, Any], weights: str, meta_name: str) -> None:
    """The loaded model must hold exactly the zeros (and weight levels) the JSON records."""
    zeros, total = sparsity_counts(model)
    if (zeros, total) != (report.get("n_zero_weights"), report.get("n_prunable_weights")):
        raise HiddenCostError(
            f"{weights}: {zeros} of {total} weights are zero, {meta_name} records "
            f"{report.get('n_zero_weights')} of {report.get('n_prunable_weights')}"
        )
    bits = report.get("weight_bits")
    if bits is not None and max_distinct_values_per_channel(model) > 2 ** int(bits):
        raise HiddenCostError(f"{weights}: weights take more than 2^{bits} values per channel")


class ArtifactWeights:
    """The weight source of ``hiddencost compress`` artifacts (a checkpoint with its JSON)."""

    name = "artifact"
    reads_mask = False

    def accepts(self, request: WeightRequest) -> bool:
        return (request.checkpoint is not None and request.entry.checkpoint_format is None
                and artifact_metadata_path(request.checkpoint) is not None)

    def load(self, request: WeightRequest) -> LoadedWeights:
        model, meta = load_artifact(request.checkpoint,  # type: ignore[arg-type]
                                    expected_model=request.entry.name)
        return LoadedWeights(model, f"artifact:{request.checkpoint}", meta)


register_weight_source(ArtifactWeights(), PRIORITY_ARTIFACT)
