"""IST-DASLab's converted sparse checkpoints ("How Well Do Sparse ImageNet Models Transfer?").

The CVPR 2022 paper (Iofinova, Peste, Kurtz, Alistarh; github.com/IST-DASLab/sparse-imagenet-
transfer) converted AC/DC, GMP, WoodFisher, STR, M-FAC and RigL ResNet-50 checkpoints to one
format, published at https://seafile.ist.ac.at/d/91de9650cfb54b77b7d1/ (a share folder, not a
direct file link: download the file by hand and pass its path). The format, as its
``utils/checkpoints.py`` writes and reads it::

    torch.save({"epoch": int, "model_config": {"arch": str, "dataset": str},
                "model_state_dict": state_dict}, path)

- keys may carry DataParallel's ``module.`` prefix (stripped here, repeatedly);
- pruned layers are IST's ``WrappedLayer``: ``P._layer.weight`` / ``P._layer.bias`` hold the
  ``Conv2d`` / ``Linear`` parameters and ``P._weight_mask`` / ``P._bias_mask`` the 0/1 masks
  (the wrapper multiplies weight by mask on every forward, so the ticket is ``w * m``);
- other tensors (BatchNorm, ...) keep torchvision's names, which equal timm's ResNet names;
- checkpoints saved unwrapped (``save_eval_checkpoint``) have plain keys and no masks.

Some files use ``state_dict`` instead of ``model_state_dict``; both are accepted. The claimed
sparsity is the masks' (when present) and the tag's (``acdc-s90`` claims 0.90 over all
conv/linear weights, within :data:`~hiddencost.zoo.common.DEFAULT_SPARSITY_TOLERANCE`).
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from hiddencost.checkpoints import (
    extract_state_dict,
    load_state_dict_strict,
    read_checkpoint_object,
    strip_prefix,
)
from hiddencost.zoo.common import (
    ZooLoadReport,
    ZooSpec,
    check_mask_claim,
    fold_masks,
    unwrap_ist_layers,
)

__all__ = ["load_ist_daslab", "read_ist_state"]


def read_ist_state(path: str | Path) -> tuple[dict, dict, list[str]]:
    """Read an IST-format file: ``(plain state, masks, notes)`` with wrappers and prefixes gone."""
    obj = read_checkpoint_object(path)
    notes: list[str] = []
    if isinstance(obj, dict) and isinstance(obj.get("model_config"), dict):
        cfg = obj["model_config"]
        notes.append(f"model_config: arch={cfg.get('arch')!r}, dataset={cfg.get('dataset')!r}")
    state = strip_prefix(
        extract_state_dict(obj, str(path), wrappers=("model_state_dict", "state_dict", "model")),
        "module.", repeated=True,
    )
    plain, masks = unwrap_ist_layers(state)
    return plain, masks, notes


def load_ist_daslab(model: nn.Module, path: str | Path, spec: ZooSpec | None = None,
                    mask: None = None) -> ZooLoadReport:
    """Load an IST-DASLab converted checkpoint into ``model`` strictly; return the report.

    Masks are folded into their weights (``w <- w * m``); the masked weights' zero fraction must
    equal the masks'. A mask without its weight, a mask of the wrong shape or with values other
    than 0/1, and any key the model lacks are errors naming the keys.
    """
    source = str(path)
    state, masks, notes = read_ist_state(path)
    fold_masks(state, masks, source)
    load_state_dict_strict(model, state, source)
    claimed = check_mask_claim(model.state_dict(), masks, source) if masks else None
    return ZooLoadReport.measure(
        model, name=spec.name if spec else "ist_daslab", format="ist_daslab", files=[source],
        claimed_sparsity=claimed, claim_source="masks" if masks else "",
        n_remapped_keys=len(state), notes=notes,
    )
