"""Run identity: the content hash that names a run in the results store.

A run's key is the first :data:`KEY_LENGTH` hex characters of the SHA-256 of the canonical JSON
of :meth:`hiddencost.run.RunConfig.identity` (protocol defaults filled in, environment fields
``data_root`` / ``download`` / ``device`` left out). Canonical JSON means sorted keys, compact
separators and ASCII output, so neither the order of keys in a study file nor spelling out a
default changes the key, while any change to a hyper-parameter does. 16 hex characters are 64
bits: the chance of two different configurations colliding in a 10⁶-run store is about 3·10⁻⁸.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hiddencost.run import RunConfig

#: Hex characters of the SHA-256 digest kept as the run key.
KEY_LENGTH = 16


def canonical_json(data: Any) -> str:
    """JSON with sorted keys, no whitespace and ASCII only: equal data give equal text."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def key_of_identity(identity: dict[str, Any]) -> str:
    """The run key of an identity dict (as returned by ``RunConfig.identity()``)."""
    return hashlib.sha256(canonical_json(identity).encode("ascii")).hexdigest()[:KEY_LENGTH]


def run_key(cfg: RunConfig) -> str:
    """The run key of a configuration: hash of its resolved, environment-free identity."""
    return key_of_identity(cfg.identity())
