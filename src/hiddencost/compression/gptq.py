"""Second-order weight rounding (GPTQ; Frantar et al., ICLR'23, after OBC / OBQ, NeurIPS'22;
read from ``IST-DASLab/gptq``) onto the same k-bit grid as round-to-nearest.

For a layer with weight rows ``W`` (d_out, d) and calibration input patches X (d, n) (see
:mod:`hiddencost.compression.layer_inputs`), ``H = 2 X Xᵀ / n``; with dampening
``H += λ · mean(diag H) · I`` (λ = 0.01) and ``U`` the upper Cholesky factor of ``H⁻¹``, the
columns are quantized in order j = 1..d::

    q_j  = quant(w_j)                               (per output row, symmetric k-bit)
    e_j  = (w_j − q_j) / U_jj
    w_{j+1:} ← w_{j+1:} − e_j · U_{j, j+1:}         (the error fed to the columns still to go)

The grid is round-to-nearest's (:func:`~hiddencost.compression.quantization.quantize_weight_tensor`:
per output row, scale = max |w| / (2^(k−1) − 1) of the original row), so GPTQ and RTN differ only
in how each weight is rounded and every value lies on the same ≤ 2^k − 1 levels. A column whose
inputs are always zero (``H_jj = 0``) is zeroed, as in the reference. A grouped convolution has one
H per group. Every layer's H comes from one pass of the unquantized model (the reference
quantizes block by block on the outputs of the quantized blocks before it).
"""

from __future__ import annotations

import torch
from torch import nn

from hiddencost.compression.layer_inputs import InputStats, input_statistics
from hiddencost.compression.pruning import prunable_layers
from hiddencost.compression.quantization import check_bits
from hiddencost.errors import HiddenCostError

__all__ = ["gptq_quantize", "gptq_rows"]

#: The dampening λ (the reference's ``percdamp``).
DAMP = 0.01
#: Columns per lazy batch update (the reference's ``blocksize``).
BLOCK = 128


def gptq_rows(weight: torch.Tensor, hessian: torch.Tensor, bits: int,
              damp: float = DAMP) -> torch.Tensor:
    """GPTQ of rows ``weight`` (r, d) against ``hessian`` (d, d) = Σ x xᵀ (any positive scale),
    or of g independent groups at once: ``weight`` (g, r, d), ``hessian`` (g, d, d). Returns
    the quantized rows (float64, the input's shape)."""
    single = weight.dim() == 2
    w = (weight[None] if single else weight).double().clone()
    h = (hessian[None] if single else hessian).double().clone()
    q_max = 2 ** (bits - 1) - 1
    diag = torch.diagonal(h, dim1=1, dim2=2)  # a view: writes go to h
    dead = diag == 0
    diag[dead] = 1.0
    w.masked_fill_(dead[:, None, :], 0.0)
    diag += damp * diag.mean(dim=1, keepdim=True)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    scale = w.abs().amax(dim=2, keepdim=True) / q_max
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))[..., 0]  # (g, r)
    q = torch.zeros_like(w)
    d = w.shape[2]
    for start in range(0, d, BLOCK):  # the reference's lazy batch updates: same result
        stop = min(start + BLOCK, d)
        block, errors = w[:, :, start:stop].clone(), torch.zeros_like(w[:, :, start:stop])
        for j in range(stop - start):
            col = block[:, :, j]
            q[:, :, start + j] = torch.clamp(torch.round(col / scale), -q_max, q_max) * scale
            err = (col - q[:, :, start + j]) / u[:, start + j, start + j, None]
            block[:, :, j + 1:] -= err[:, :, None] * u[:, None, start + j, start + j + 1:stop]
            errors[:, :, j] = err
        w[:, :, stop:] -= errors @ u[:, start:stop, stop:]
    return q[0] if single else q


def _quantize_layer(module: nn.Module, stats: InputStats, bits: int, damp: float) -> None:
    w = module.weight
    groups = stats.sq.shape[0]
    rows = w.detach().reshape(groups, w.shape[0] // groups, -1)
    out = gptq_rows(rows, stats.gram, bits, damp)  # type: ignore[arg-type]
    w.copy_(out.reshape(w.shape).to(dtype=w.dtype))


@torch.no_grad()
def gptq_quantize(model: nn.Module, bits: int, images: torch.Tensor | None,
                  damp: float = DAMP, exclude_first_conv: bool = False,
                  exclude_classifier: bool = False) -> None:
    """Quantize every in-scope layer's weight to ``bits`` by :func:`gptq_rows` on the
    calibration ``images`` (normalised inputs)."""
    bits = check_bits(bits, "weight bits")
    if images is None or not len(images):
        raise HiddenCostError("GPTQ needs calibration images")
    layers = prunable_layers(model, exclude_first_conv, exclude_classifier)
    stats = input_statistics(model, layers, images, gram=True)
    for name, module in layers:
        _quantize_layer(module, stats[name], bits, damp)
