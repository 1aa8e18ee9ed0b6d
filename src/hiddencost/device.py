"""Device choice and the mixed-precision context used by training and evaluation."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from hiddencost.errors import HiddenCostError


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when present, else CPU; ``cpu`` / ``cuda`` / ``cuda:N`` as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise HiddenCostError(f"unknown device {device!r}; use auto, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HiddenCostError("--device cuda was asked for but no CUDA GPU is available")
    if dev.type not in ("cpu", "cuda"):
        raise HiddenCostError(f"unsupported device {device!r}; use auto, cpu or cuda")
    return dev


#: The autocast dtype on CUDA (None: fp32 throughout); see :func:`cuda_precision`.
_CUDA_AUTOCAST: list[torch.dtype | None] = [torch.bfloat16]


@contextlib.contextmanager
def cuda_precision(dtype: torch.dtype | None) -> Iterator[None]:
    """Within the block, :func:`autocast_for` uses ``dtype`` on CUDA (None: no autocast, fp32);
    for benchmarks that compare bf16 with fp32."""
    _CUDA_AUTOCAST.append(dtype)
    try:
        yield
    finally:
        _CUDA_AUTOCAST.pop()


@contextlib.contextmanager
def autocast_for(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA (frozen backbone, trainable prompt stays fp32); nothing on CPU."""
    dtype = _CUDA_AUTOCAST[-1]
    if device.type == "cuda" and dtype is not None:
        with torch.autocast("cuda", dtype=dtype):
            yield
    else:
        yield
