"""The fidelity metric: how closely a compressed classifier follows its dense original.

Pure functions of two classifiers' logits on the same ``N`` images, with
``p = softmax(logits)`` over the source classes, computed in float64:

- **top-1 agreement** ``A_1 = (1/N) sum_i 1[argmax_k p^d_ik = argmax_k p^c_ik]``, the fraction
  of images on which both models predict the same class;
- **top-5 agreement** ``A_5 = (1/N) sum_i 1[argmax_k p^d_ik in top5_k(p^c_i)]``, the fraction
  of images whose dense top-1 class is among the compressed model's 5 most likely classes
  (all classes when there are fewer than 5);
- **mean KL** ``KL = (1/N) sum_i sum_k p^d_ik (ln p^d_ik - ln p^c_ik)``, i.e.
  ``KL(p_dense || p_compressed)`` averaged over images, natural log (nats): the dense model is
  the reference distribution. Each per-image value is clamped at 0 (float rounding only);
  ``max_kl`` is the largest per-image value;
- the **mean confidence** ``(1/N) sum_i max_k p_ik`` of each model.

A faithful compression has ``A_1`` near 1 and ``KL`` near 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hiddencost.errors import HiddenCostError
from hiddencost.fidelity.values import KL_DIRECTION, FidelityMetrics

__all__ = ["KL_DIRECTION", "FidelityMetrics", "fidelity_metrics", "fidelity_report",
           "model_logits"]

def _check_logits(dense_logits: torch.Tensor, compressed_logits: torch.Tensor) -> None:
    if dense_logits.dim() != 2 or dense_logits.shape[0] == 0:
        raise HiddenCostError("fidelity needs logits of shape N x classes with N > 0, got "
                              f"{tuple(dense_logits.shape)}")
    if dense_logits.shape != compressed_logits.shape:
        raise HiddenCostError("the models disagree on the number of classes: "
                              f"{tuple(dense_logits.shape)} vs {tuple(compressed_logits.shape)}")


def fidelity_metrics(dense_logits: torch.Tensor, compressed_logits: torch.Tensor
                     ) -> FidelityMetrics:
    """Agreement and ``KL(p_dense || p_compressed)`` of two ``N x classes`` logit tensors.

    Row ``i`` of both is image ``i``; the formulas are in the module docstring.
    """
    _check_logits(dense_logits, compressed_logits)
    log_pd = F.log_softmax(dense_logits.double(), dim=1)
    log_pc = F.log_softmax(compressed_logits.double(), dim=1)
    # clamp: a per-image KL is >= 0; float rounding can give -1e-17 for identical rows
    kl = (log_pd.exp() * (log_pd - log_pc)).sum(dim=1).clamp_min(0.0)
    top1_d = dense_logits.argmax(dim=1)
    top5_c = compressed_logits.topk(min(5, compressed_logits.shape[1]), dim=1).indices
    return FidelityMetrics(
        n_images=int(dense_logits.shape[0]),
        top1_agreement=float((top1_d == compressed_logits.argmax(dim=1)).double().mean()),
        top5_agreement=float((top5_c == top1_d[:, None]).any(dim=1).double().mean()),
        mean_kl=float(kl.mean()),
        max_kl=float(kl.max()),
        dense_mean_confidence=float(log_pd.exp().max(dim=1).values.mean()),
        compressed_mean_confidence=float(log_pc.exp().max(dim=1).values.mean()),
    )


@torch.inference_mode()
def model_logits(model: nn.Module, images: torch.Tensor, batch_size: int,
                 device: torch.device) -> torch.Tensor:
    """``model``'s float32 logits on ``images`` (eval mode), ``batch_size`` images at a time
    moved to ``device``; returned on the CPU."""
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        batch = images[start:start + batch_size].to(device)
        out.append(model(batch).float().cpu())
    return torch.cat(out)


def _default_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def fidelity_report(
    dense_model: nn.Module,
    compressed_model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    dense_logits: torch.Tensor | None = None,
) -> FidelityMetrics:
    """:func:`fidelity_metrics` of two classifiers run on ``images``.

    Args:
        dense_model, compressed_model: classifiers over the same classes (eval mode is set).
        images: normalised model inputs ``N x 3 x H x W`` (as the models expect them).
        batch_size: images per forward pass.
        device: where the input batches go (default: the dense model's device); both models
            must already be there.
        dense_logits: the dense model's logits on ``images`` if already known (skips its
            forward passes).
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] == 0:
        raise HiddenCostError("fidelity needs a non-empty N x 3 x H x W tensor of model inputs")
    dev = torch.device(device) if device is not None else _default_device(dense_model)
    if dense_logits is None:
        dense_logits = model_logits(dense_model, images, batch_size, dev)
    return fidelity_metrics(dense_logits, model_logits(compressed_model, images, batch_size, dev))
