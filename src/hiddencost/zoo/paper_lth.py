"""Lottery tickets as the paper's own code reads them (landskape-ai/Reprogram_LT).

Layout: two files per IMP round ``k`` in one folder::

    resnet50_dyn4_<k>_checkpoint.pth   # torch.save(model.state_dict()): torchvision ResNet-50
    resnet50_dyn4_<k>_mask.pth         # {name: 0/1 tensor} for the convolutions' weights

Keys are torchvision's (``conv1.weight``, ``layer1.0.conv1.weight``, ..., ``fc.weight``), which
equal timm's; a ``model.`` or ``module.`` prefix is stripped if present. The masks cover
convolution weights only (the classifier is never masked); a convolution without a mask is kept
as stored. The ticket is ``weight × mask``.

The paper's loader (``get_pruned_model`` in ``experiments/cnn/ilm_vp.py``) multiplies each masked
tensor, then copies every checkpoint key not yet written. With ``model.``-prefixed keys its
membership test compares prefixed names against stripped ones, so every masked tensor was
overwritten by its raw weights and the mask was never applied. This loader always applies
``weight × mask``, loads strictly, and checks that the loaded weights are as sparse as the masks.
The paper reports sparsity as the percentage of convolution weights remaining, ``conv1``
excluded (:func:`hiddencost.compression.measure.paper_remaining_percent`); every run records that
figure beside ours.
"""

from __future__ import annotations

import re
from pathlib import Path

from torch import nn

from hiddencost.checkpoints import (
    extract_state_dict,
    load_state_dict_strict,
    read_checkpoint_object,
    shorten,
    strip_prefix,
)
from hiddencost.errors import HiddenCostError
from hiddencost.zoo.common import ZooLoadReport, ZooSpec, check_mask_claim, fold_masks

__all__ = ["PAPER_LTH_FILE", "load_paper_lth", "paper_lth_mask_path"]

#: ``<arch>_dyn4_<k>_checkpoint.pth``: the paper's weights file of IMP round ``k``.
PAPER_LTH_FILE = re.compile(r"(?P<stem>.+_dyn4_\d+)_checkpoint\.pth")
_PREFIXES = ("module.", "model.")


def paper_lth_mask_path(weights: str | Path, mask: str | Path | None = None) -> Path:
    """The mask file of a ticket: ``mask`` when given, else ``<stem>_mask.pth`` beside
    ``<stem>_checkpoint.pth``."""
    weights = Path(weights)
    if mask is not None:
        path = Path(mask)
    else:
        match = PAPER_LTH_FILE.fullmatch(weights.name)
        if match is None:
            raise HiddenCostError(
                f"{weights.name} is not named <arch>_dyn4_<k>_checkpoint.pth, so its mask "
                "cannot be found: pass it with --mask PATH")
        path = weights.with_name(f"{match['stem']}_mask.pth")
    if not path.is_file():
        raise HiddenCostError(f"lottery-ticket mask {str(path)!r} does not exist")
    return path


def _read_flat(path: Path) -> dict:
    state = extract_state_dict(read_checkpoint_object(path), str(path))
    for prefix in _PREFIXES:
        state = strip_prefix(state, prefix)
    return dict(state)


def load_paper_lth(
    model: nn.Module,
    path: str | Path,
    spec: ZooSpec | None = None,
    mask: str | Path | None = None,
) -> ZooLoadReport:
    """Load the paper's ticket ``path`` (weights) × its mask into ``model`` strictly.

    Every mask entry must be the weight of an ``nn.Conv2d`` of ``model``, of the weight's shape,
    holding only 0/1; after ``w ← w · m`` the masked weights' zero fraction must equal the masks'.
    """
    weights_path = Path(path)
    if weights_path.is_dir():
        raise HiddenCostError(
            f"{weights_path} is a folder: pass the ticket's <arch>_dyn4_<k>_checkpoint.pth file")
    mask_path = paper_lth_mask_path(weights_path, mask)
    source = str(weights_path)
    state = _read_flat(weights_path)
    masks = _read_flat(mask_path)
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if not masks:
        raise HiddenCostError(f"lottery-ticket mask {mask_path} holds no tensors")
    not_conv = [k for k in masks if k not in convs]
    if not_conv:
        raise HiddenCostError(f"lottery-ticket mask {mask_path} has entries that are not "
                              f"convolution weights: {shorten(not_conv)}")
    fold_masks(state, masks, source)
    load_state_dict_strict(model, state, source)
    claimed = check_mask_claim(model.state_dict(), masks, source)
    return ZooLoadReport.measure(
        model, name=spec.name if spec else "paper_lth", format="paper_lth",
        files=[str(weights_path), str(mask_path)], claim_source=mask_path.name,
        notes=[f"the masked convolutions are {claimed:.4f} sparse (the masks' claim, checked)"],
    )
