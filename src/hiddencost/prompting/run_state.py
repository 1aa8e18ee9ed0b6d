"""A training run's state at an epoch end, saved atomically, so a killed or pre-empted run
resumes from its last finished epoch and ends with the result of an uninterrupted one.

The state is one ``torch.save`` file of tensors, numbers, strings and lists (read back with
``weights_only=True``): the learned tensors, the optimiser's and schedule's state dicts, the
data-order generator's state, the label mapping, the history so far and the next epoch. A
``tag`` (the run's identity) guards it: a state written by another configuration into the same
folder is ignored, never resumed.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

#: The state file's name in a run's folder (removed once the run's result is written).
STATE_FILE = "state.pt"


@dataclass(frozen=True)
class StateFile:
    """Where a run keeps its state (``path``) and what it must match to be resumed (``tag``,
    the run's identity as JSON)."""

    path: Path
    tag: str

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` with the tag: to a temporary file, then renamed over the old one,
        so a kill mid-write leaves the previous state whole."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save({"tag": self.tag, **state}, tmp)
        os.replace(tmp, self.path)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None: no file, an unreadable one, or another run's (tag)."""
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: start over, say so
            log.warning("ignoring unreadable run state %s: %s", self.path, exc)
            return None
        if not isinstance(state, dict) or state.get("tag") != self.tag:
            log.warning("ignoring run state %s: it belongs to another configuration", self.path)
            return None
        return state

    def remove(self) -> None:
        """Delete the state (the run's result is written: nothing left to resume)."""
        self.path.unlink(missing_ok=True)
