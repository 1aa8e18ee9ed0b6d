"""Re-keying a results store written with an older identity version: once, when a study runs.

A run's key hashes its identity (:meth:`hiddencost.config.RunConfig.identity`), whose layout
has a version (:data:`hiddencost.config.IDENTITY_VERSION`). A store of schema 1 holds keys of
identity version 1. Its finished runs are kept, not re-run: each row's stored identity is read
as a configuration (version-1 spellings are accepted: method options as top-level fields,
later fields absent at their defaults), its version-2 identity and key computed, and the row,
its artifact folder and its ``outcome.json`` moved to the new key. This is a re-hash: nothing
is trained. Folders move first and the rows in one transaction after, so a migration killed
half-way finishes when started again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hiddencost.config import RunConfig
from hiddencost.errors import HiddenCostError
from hiddencost.study.identity import key_of_identity
from hiddencost.study.outcome import OUTCOME_FILE
from hiddencost.study.store import SQLiteStore


@dataclass
class Rekeyed:
    """What a migration did: rows moved to new keys, rows merged into an equal run, and rows
    left as they were (key → why: a model or dataset this installation does not know)."""

    moved: int = 0
    merged: int = 0
    kept: dict[str, str] = field(default_factory=dict)


def _move_folder(artifacts: Path, old: str, new: str) -> None:
    """``artifacts/<old>`` → ``artifacts/<new>`` (and its outcome's key), unless done before."""
    src, dst = artifacts / old, artifacts / new
    if src.is_dir() and not dst.exists():
        src.rename(dst)
    outcome = dst / OUTCOME_FILE
    if outcome.is_file():
        try:
            data = json.loads(outcome.read_text())
        except (OSError, ValueError):
            return  # an unreadable outcome is ignored by the driver anyway
        if isinstance(data, dict) and data.get("key") == old:
            outcome.write_text(json.dumps({**data, "key": new}, indent=1))


#: Options added after identity version 1 whose default changed what a run computes, with the
#: value that computes what the runs of version 1 did: a version-1 row is re-keyed with it.
EARLIER_BEHAVIOUR: dict[str, Any] = {"padding": "repeat-last", "preprocess": "squash"}


def current_identity(stored: dict[str, Any]) -> dict[str, Any]:
    """The current identity of a run stored with an older one. Version 1 let every method
    carry every option and ignore those it does not read (an LP run of a study with
    ``mapping_interval: 2`` held it); those are dropped, as the method never used them.
    Options added since with another behaviour get their :data:`EARLIER_BEHAVIOUR`. An xmr run
    whose backbone normalises with another mean/std than 0.5 is refused (it stays as it was):
    its label-mapping image was uniform pixels normalised, which no option draws any more."""
    cfg = RunConfig.model_validate(stored)
    from hiddencost.backbones import resolve_backbone_name  # lazy: the registries load torch
    from hiddencost.prompting.catalog import method_for  # lazy: as above

    entry = resolve_backbone_name(cfg.model)
    reads = method_for(cfg.method, entry.family).options.model_fields
    if "padding" in reads and {*entry.cfg.mean, *entry.cfg.std} != {0.5}:
        raise HiddenCostError(f"its sources came from an image xmr no longer draws ({entry.name} "
                              "normalises with another mean/std than 0.5)")
    options = {k: v for k, v in cfg.options.items() if k in reads}
    options |= {k: v for k, v in EARLIER_BEHAVIOUR.items() if k in reads and k not in options}
    return cfg.model_copy(update={"options": options}).identity()


def rekey_store(db: SQLiteStore, artifacts: str | Path) -> Rekeyed:
    """Re-key every row of ``db`` (a store that ``needs_rekey``) to the current identity
    version, moving run folders under ``artifacts``; see the module docstring."""
    done = Rekeyed()
    moves: dict[str, tuple[str, dict]] = {}
    for old, row in db.rows().items():
        try:
            identity = current_identity(row.config)
        except (HiddenCostError, ValueError) as exc:
            done.kept[old] = str(exc).splitlines()[0]
            continue
        moves[old] = (key_of_identity(identity), identity)
    for old, (new, _) in moves.items():
        _move_folder(Path(artifacts), old, new)
    done.merged = db.rekey(moves)
    done.moved = len(moves) - done.merged
    return done
