"""Lottery tickets in open_lth's layout (facebookresearch/open_lth), read and written.

Layout (as open_lth's ``lottery`` runner writes it, one folder per pruning level)::

    <run>/replicate_<r>/level_<k>/main/
        model_ep<E>_it<I>.pth   # torch.save(model.state_dict()): the wrapped model's state dict
        mask.pth                # torch.save({name: int tensor of 0/1}) for every prunable tensor
        sparsity_report.json    # {"total": n_weights, "unpruned": n_kept} (floats)

Keys carry open_lth's ``model.`` prefix, because its ImageNet ``Model`` holds the torchvision
ResNet as ``self.model`` (``model.conv1.weight``, ``model.layer1.0.conv1.weight``, ...,
``model.fc.weight``). The prunable tensors are the weights of every ``Conv2d`` and ``Linear``
(the classifier included), and a mask must exist for each of them. At level ``k`` the folder holds
the rewound start (``model_ep0_it0.pth`` or the rewinding step) and the trained end of the level
(the largest ``ep``/``it``); the ticket is ``weights * mask``. timm's ResNet keys equal
torchvision's, so after removing ``model.`` the keys fit ``timm.create_model("resnet50")``.

``sparse_global`` pruning removes ``ceil(0.2 * remaining)`` weights per level (20% by default),
so level ``k`` keeps about ``0.8^k`` of the weights: the tag ``lth-l<k>`` claims a sparsity of
``1 - 0.8^k``. Tickets made with another fraction use the tag ``lth`` (claim from the mask only).

No public download exists for ImageNet open_lth tickets; pass the local files.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from hiddencost.checkpoints import (
    extract_state_dict,
    load_state_dict_strict,
    read_checkpoint_object,
    shorten,
)
from hiddencost.compression.pruning import prunable_layers
from hiddencost.errors import HiddenCostError
from hiddencost.zoo.common import ZooLoadReport, ZooSpec, check_mask_claim, fold_masks

__all__ = [
    "MODEL_PREFIX",
    "find_level_files",
    "load_open_lth",
    "save_open_lth_level",
]

MODEL_PREFIX = "model."
_MODEL_FILE = re.compile(r"model_ep(\d+)_it(\d+)\.pth")


def _step_of(path: Path) -> tuple[int, int]:
    match = _MODEL_FILE.fullmatch(path.name)
    return (int(match.group(1)), int(match.group(2))) if match else (-1, -1)


def find_level_files(path: str | Path, mask: str | Path | None = None) -> tuple[Path, Path]:
    """Resolve ``(weights file, mask file)`` from a model file or a level folder.

    A folder means its trained end (the ``model_ep<E>_it<I>.pth`` with the largest step); the mask
    defaults to ``mask.pth`` beside the weights.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(
            (p for p in path.iterdir() if _MODEL_FILE.fullmatch(p.name)), key=_step_of
        )
        if not candidates:
            raise HiddenCostError(f"{path} holds no open_lth model_ep<E>_it<I>.pth file")
        weights = candidates[-1]
    else:
        weights = path
    mask_path = Path(mask) if mask is not None else weights.parent / "mask.pth"
    if not mask_path.is_file():
        raise HiddenCostError(
            f"open_lth mask {str(mask_path)!r} does not exist (expected beside the weights)"
        )
    return weights, mask_path


def _strip_model_prefix(state: dict[str, torch.Tensor], source: str) -> OrderedDict:
    bad = [k for k in state if not k.startswith(MODEL_PREFIX)]
    if bad:
        raise HiddenCostError(
            f"{source} is not in open_lth's layout: keys without the '{MODEL_PREFIX}' prefix: "
            f"{shorten(bad)}"
        )
    return OrderedDict((k[len(MODEL_PREFIX):], v) for k, v in state.items())


def _check_report(report_path: Path, claimed: float, source: str) -> None:
    if not report_path.is_file():
        return
    try:
        data = json.loads(report_path.read_text())
        reported = 1.0 - float(data["unpruned"]) / float(data["total"])
    except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise HiddenCostError(f"{report_path} is not an open_lth sparsity report: {exc}") from None
    if abs(reported - claimed) > 1e-6:
        raise HiddenCostError(
            f"{source}: sparsity_report.json says {reported:.6f} but the mask is "
            f"{claimed:.6f} sparse"
        )


def load_open_lth(
    model: nn.Module,
    path: str | Path,
    spec: ZooSpec | None = None,
    mask: str | Path | None = None,
) -> ZooLoadReport:
    """Load an open_lth ticket (weights x mask) into ``model`` strictly; return the report.

    Every prunable layer of ``model`` (conv/linear weight) must have a mask of its weight's shape
    holding only 0/1, and the mask must cover nothing else; the weights must carry the ``model.``
    prefix. After ``w <- w * m`` the weights' zero fraction must equal the mask's; a
    ``sparsity_report.json`` beside the mask must agree with it.
    """
    weights_path, mask_path = find_level_files(path, mask)
    source = str(weights_path)
    state = _strip_model_prefix(
        extract_state_dict(read_checkpoint_object(weights_path), source), source
    )
    masks = _strip_model_prefix(
        extract_state_dict(read_checkpoint_object(mask_path), str(mask_path)), str(mask_path)
    )
    prunable = [f"{n}.weight" for n, _ in prunable_layers(model)]
    missing = [k for k in prunable if k not in masks]
    extra = [k for k in masks if k not in prunable]
    if missing:
        raise HiddenCostError(
            f"open_lth mask {mask_path} lacks prunable tensors: {shorten(missing)}")
    if extra:
        raise HiddenCostError(
            f"open_lth mask {mask_path} has entries that are not prunable tensors: {shorten(extra)}"
        )
    fold_masks(state, masks, source)
    load_state_dict_strict(model, state, source)
    claimed = check_mask_claim(model.state_dict(), masks, source)
    _check_report(mask_path.parent / "sparsity_report.json", claimed, source)
    return ZooLoadReport.measure(
        model, name=spec.name if spec else "open_lth", format="open_lth",
        files=[str(weights_path), str(mask_path)], claimed_sparsity=claimed,
        claim_source="mask.pth", n_remapped_keys=len(state),
    )


def save_open_lth_level(
    level_dir: str | Path,
    masks: dict[str, torch.Tensor],
    states: dict[str, dict[str, torch.Tensor]],
) -> Path:
    """Write one level folder in open_lth's layout.

    ``masks`` maps our (timm) weight names to 0/1 tensors; ``states`` maps a file name such as
    ``model_ep0_it0.pth`` to a state dict with our key names. Keys get the ``model.`` prefix, the
    mask is stored as int tensors and ``sparsity_report.json`` records ``total`` / ``unpruned``.
    Returns the folder.
    """
    level_dir = Path(level_dir)
    level_dir.mkdir(parents=True, exist_ok=True)
    for file_name, state in states.items():
        if not _MODEL_FILE.fullmatch(file_name):
            raise HiddenCostError(
                f"open_lth model files are named model_ep<E>_it<I>.pth, not {file_name}")
        torch.save(
            OrderedDict((MODEL_PREFIX + k, v.detach().cpu().clone()) for k, v in state.items()),
            level_dir / file_name,
        )
    torch.save(
        OrderedDict((MODEL_PREFIX + k, v.detach().cpu().int()) for k, v in masks.items()),
        level_dir / "mask.pth",
    )
    total = float(sum(m.numel() for m in masks.values()))
    unpruned = float(sum(int(m.sum()) for m in masks.values()))
    (level_dir / "sparsity_report.json").write_text(
        json.dumps({"total": total, "unpruned": unpruned}, indent=4)
    )
    return level_dir
