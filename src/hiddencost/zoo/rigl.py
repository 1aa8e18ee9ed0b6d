"""RigL ResNet-50 checkpoints converted from TensorFlow to PyTorch.

RigL (Evci et al., ICML 2020; github.com/google-research/rigl) released TensorFlow ResNet-50
checkpoints. IST-DASLab's sparse-transfer code loads their PyTorch conversion into
``models/external/rigl/resnet.py`` (``ResnetTF``), whose key names differ from torchvision's::

    initial_conv.conv.weight, initial_conv.bn.{weight,bias,running_mean,running_var,...}
    layer<L>.block.<j>.conv<c>.conv.weight, layer<L>.block.<j>.conv<c>.bn.*   (c = 1, 2, 3)
    layer<L>.block.0.shortcut.conv.weight, layer<L>.block.0.shortcut.bn.*
    fc.weight, fc.bias

and whose stem reproduces TensorFlow's "SAME" max-pool: a ``ZeroPad2d((0, 1, 0, 1))`` (one column
right, one row bottom) before ``MaxPool2d(3, stride=2, padding=0)``, where torchvision pads one
pixel on every side. The converted convolutions use PyTorch's symmetric padding (stride on the
3x3 conv, as timm's ResNet-50), so everything else matches ``timm.create_model("resnet50")``.

This module remaps those names onto timm's (``conv<c>.conv`` -> ``conv<c>``, ``conv<c>.bn`` ->
``bn<c>``, ``shortcut.conv`` / ``shortcut.bn`` -> ``downsample.0`` / ``downsample.1``,
``initial_conv`` -> ``conv1`` / ``bn1``) and replaces the model's max-pool with the padded one, so
the loaded network computes what the converted RigL network computes. Files may also be in
IST-DASLab's common format (``model_state_dict``, ``module.`` prefixes, ``._layer.`` wrappers and
mask tensors, see :mod:`hiddencost.zoo.ist_daslab`); both are accepted. RigL's released models
were trained on bicubic-resized images (TensorFlow's default), a preprocessing detail left to the
caller.

Download: the converted files are in IST-DASLab's share folder
https://seafile.ist.ac.at/d/91de9650cfb54b77b7d1/ (the TensorFlow originals are listed at
github.com/google-research/rigl); no direct file URL, so pass the local path.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hiddencost.checkpoints import load_state_dict_strict, remap_keys
from hiddencost.zoo.common import (
    ZooLoadReport,
    ZooSpec,
    check_mask_claim,
    fold_masks,
    resnet_rules,
)
from hiddencost.zoo.ist_daslab import read_ist_state

__all__ = ["RIGL_RULES", "TFSamePadMaxPool", "load_rigl", "remap_rigl"]

#: ``(regex, replacement)`` rules from ResnetTF names to timm / torchvision ResNet names.
RIGL_RULES = resnet_rules("initial_conv", r"layer(\d)\.block\.(\d+)", r"conv(\d)\.conv\.weight",
                          r"conv(\d)\.bn", "shortcut", "fc", r"layer\1")


class TFSamePadMaxPool(nn.Module):
    """TensorFlow-"SAME" 3x3/2 max-pool as in the RigL conversion: pad (left 0, right 1, top 0,
    bottom 1) with zeros, then ``MaxPool2d(3, stride=2, padding=0)``.

    The zero padding equals TF's ignore-padding here because the input follows a ReLU (>= 0).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0)

    def forward(self, x):
        return self.pool(self.pad(x))


def remap_rigl(state: dict, source: str) -> tuple[dict, list[str]]:
    """Apply :data:`RIGL_RULES` to every key (unknown keys are an error naming them)."""
    return remap_keys(state, RIGL_RULES, source)


def load_rigl(model: nn.Module, path: str | Path, spec: ZooSpec | None = None,
              mask: None = None) -> ZooLoadReport:
    """Load a converted RigL checkpoint into a timm ResNet-50 strictly; return the report.

    Replaces ``model.maxpool`` with :class:`TFSamePadMaxPool` (no parameters, so the state dict
    is unchanged), remaps keys and masks, folds masks into weights, loads strictly and checks the
    masks' claim when the file has masks.
    """
    if not hasattr(model, "maxpool"):
        raise TypeError("RigL checkpoints load into a timm/torchvision ResNet (no .maxpool found)")
    source = str(path)
    state, masks, notes = read_ist_state(path)
    state, _ = remap_rigl(state, source)
    masks, _ = remap_rigl(masks, source) if masks else (masks, [])
    fold_masks(state, masks, source)
    model.maxpool = TFSamePadMaxPool()
    load_state_dict_strict(model, state, source)
    claimed = check_mask_claim(model.state_dict(), masks, source) if masks else None
    return ZooLoadReport.measure(
        model, name=spec.name if spec else "rigl", format="rigl", files=[source],
        claimed_sparsity=claimed, claim_source="masks" if masks else "",
        n_remapped_keys=len(state),
        notes=notes + ["stem max-pool: ZeroPad2d((0, 1, 0, 1)) + MaxPool2d(3, 2) as in TF"],
    )
