"""The precision policy: which computations may run in bf16, resolved once per run.

A run's ``precision`` (:class:`~hiddencost.config.Precision`: ``fp32``, ``bf16`` or ``auto``,
in its :class:`~hiddencost.config.Environment`) is resolved on its device by
:func:`resolve_precision` (recorded in the run's record) and :func:`training_dtype` gives the
autocast dtype of its *training steps* (None: fp32):

- ``fp32``: fp32 everywhere (on CUDA with TF32 off, so a CUDA run reproduces the CPU one).
- ``bf16``: bf16 autocast in the training steps; on a CUDA device without native bf16 (before
  Ampere) fp32, with a one-line notice.
- ``auto`` (default): bf16 on a CUDA device with native bf16, fp32 otherwise (CPU included).

Whatever the precision, these run in fp32 (:func:`exact`: autocast off, TF32 off), because
bf16 changes the protocol's discrete decisions there, not only last digits (emulated with CPU
bf16 autocast: 12–13% of top-1 source classes move, mapped logits tie):

- every inference pass: the FLM/ILM label-mapping passes, CLIP's template-column choice, the
  test pass, LP's feature extraction (its features are the head's inputs);
- the mapped logits and everything after them: the FM layer, the loss, the metrics, CLIP's
  score matmul ``logit_scale · image @ text.T``;
- the whole of an activation-fake-quantized backbone (bf16 would round activations before the
  k-bit quantizer: a different network), training steps included.

So bf16 speeds only the backbone's forward and backward in training steps, which is where a
run's cost is (E epochs of forward and backward against one forward per mapping pass and one
test pass).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import torch

log = logging.getLogger(__name__)

#: The precisions a run may ask for (:class:`hiddencost.config.Precision`).
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "auto")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (CUDA compute capability ≥ 8.0; CPUs: no,
    their bf16 autocast stands in for CUDA's in tests only)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_precision(precision: str, device: torch.device) -> str:
    """What ``precision`` (``fp32``, ``bf16``, ``auto``) means on ``device``: ``fp32`` or
    ``bf16``, see the module. This is the run's recorded precision, and a study's store holds
    one. ``bf16`` on a CPU is honoured (CPU autocast: what the tests use to stand in for
    CUDA's); ``auto`` never picks it there."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return "fp32"
    if device.type == "cuda" and not native_bf16(device):
        if precision == "bf16":
            log.warning("bf16 asked for but %s has no native bf16: training in fp32",
                        torch.cuda.get_device_name(device))
        return "fp32"
    return "fp32" if precision == "auto" and device.type != "cuda" else "bf16"


def training_dtype(resolved: str, quantized_activations: bool = False) -> torch.dtype | None:
    """The autocast dtype of a run's training steps under a resolved precision (None: fp32):
    bf16 for ``bf16``, except on an activation-fake-quantized backbone."""
    return torch.bfloat16 if resolved == "bf16" and not quantized_activations else None


@contextlib.contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """TF32 off for CUDA matmuls and convolutions within the block (restored after)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def exact(device: torch.device) -> Iterator[None]:
    """fp32 within the block: autocast off (also inside an enclosing autocast) and, on CUDA,
    TF32 off. What the policy keeps in fp32 runs here."""
    with torch.autocast(device.type, enabled=False), _no_tf32(device):
        yield


@contextlib.contextmanager
def training(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """The context of a training step's backbone forward: autocast to ``dtype``, or
    :func:`exact` when it is None."""
    if dtype is None:
        with exact(device):
            yield
    else:
        with torch.autocast(device.type, dtype=dtype):
            yield

