"""Device choice (the precision policy is :mod:`hiddencost.precision`)."""

from __future__ import annotations

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

