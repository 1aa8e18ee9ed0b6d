"""Stores written with identity version 1 keep their finished runs: re-keyed once, nothing
re-run. The version-1 keys and identities below are literals of stores that hiddencost wrote
before identity version 2 (the quickstart's dense 10-shot ILM-VP run among them)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from hiddencost.errors import HiddenCostError
from hiddencost.study.migrate import rekey_store
from hiddencost.study.results import load_results, read_study
from hiddencost.study.spec import parse_spec
from hiddencost.study.store import SQLiteStore

#: version-1 key → (its identity as stored then, the version-2 key of the same run)
V1 = {
    "77acdf2603a53af7": ({
        "batch_size": 32, "canvas_size": 64, "checkpoint": None,
        "compression": {"method": "none"}, "dataset": "digits", "epochs": 6, "inner_size": 32,
        "lp_image_size": 64, "lr": 0.01, "many_to_one": False, "method": "ilm",
        "model": "efficientnet_lite0.in1k", "n_shot": 10, "save_prompt_history": True,
        "seed": 0, "split_seed": 0, "weights": "pretrained"}, "02cbe097cf1f298a"),
    "dafedc8c827f92a7": ({
        "batch_size": 32, "canvas_size": 224, "checkpoint": None,
        "compression": {"exclude_classifier": False, "exclude_first_conv": False,
                        "method": "magnitude", "scope": "global", "sparsity": 0.5},
        "dataset": "digits", "epochs": 100, "inner_size": 32, "lp_image_size": 224,
        "lr": 0.01, "many_to_one": False, "method": "lp", "model": "efficientnet_lite0.in1k",
        "n_shot": 10, "save_prompt_history": False, "seed": 0, "split_seed": 0,
        "weights": "pretrained"}, "fe3fb1f40fd0030e"),
    "77feb8c3e71243af": ({
        "batch_size": 4, "canvas_size": 224, "checkpoint": None,
        "compression": {"method": "none"}, "dataset": "splice", "epochs": 100,
        "inner_size": 16, "lp_image_size": 224, "lr": 0.001, "many_to_one": False,
        "mapping_num": 10, "max_steps": 100, "method": "xmr",
        "model": "efficientnet_lite0.in1k", "n_shot": 10, "save_prompt_history": False,
        # re-keyed as it ran: with padding repeat-last (the current default is pad)
        "seed": 0, "split_seed": 0, "weights": "pretrained"}, "0d1ced9242d41f5a"),
}
#: The schema of a version-1 store (as its driver created it).
V1_SCHEMA = """
CREATE TABLE runs (key TEXT PRIMARY KEY, study TEXT NOT NULL, config TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '{}', status TEXT NOT NULL, metrics TEXT, error TEXT, host TEXT,
    owner TEXT, attempts INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL,
    started_at REAL, finished_at REAL, wall_time_s REAL);
CREATE INDEX runs_status ON runs (status);
PRAGMA user_version = 1;
"""


def _v1_store(root):
    """A version-1 store of the runs of :data:`V1`, done, each with its artifact folder."""
    path = root / "study.sqlite"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    for key, (identity, _) in V1.items():
        db.execute("INSERT INTO runs (key, study, config, tags, status, metrics, attempts, "
                   "created_at) VALUES (?, 'old', ?, ?, 'done', ?, 1, ?)",
                   (key, json.dumps(identity), json.dumps({"family": "dense"}),
                    json.dumps({"accuracy": 0.5}), time.time()))
        folder = root / "artifacts" / key
        folder.mkdir(parents=True)
        (folder / "outcome.json").write_text(json.dumps({"key": key, "status": "done"}))
    db.commit()
    db.close()
    return path


def test_a_version_1_store_is_rekeyed_keeping_its_runs(tmp_path):
    path = _v1_store(tmp_path)
    with SQLiteStore(path) as db:
        assert db.needs_rekey
        done = rekey_store(db, tmp_path / "artifacts")
        rows = db.rows()
        assert not db.needs_rekey
    assert (done.moved, done.merged, done.kept) == (3, 0, {})
    assert sorted(rows) == sorted(new for _, new in V1.values())
    for _, new in V1.values():
        assert rows[new].status == "done" and rows[new].metrics == {"accuracy": 0.5}
        assert rows[new].config["identity_version"] == 2
        outcome = json.loads((tmp_path / "artifacts" / new / "outcome.json").read_text())
        assert outcome["key"] == new
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == sorted(rows)
    with SQLiteStore(path, readonly=True) as db:  # the schema is current now
        assert not db.needs_rekey


def test_rekeying_twice_or_after_a_kill_between_folders_and_rows_is_harmless(tmp_path):
    path = _v1_store(tmp_path)
    old, (_, new) = next(iter(V1.items()))
    (tmp_path / "artifacts" / old).rename(tmp_path / "artifacts" / new)  # moved, rows not
    with SQLiteStore(path) as db:
        done = rekey_store(db, tmp_path / "artifacts")
    assert done.moved == 3
    assert (tmp_path / "artifacts" / new / "outcome.json").is_file()


def test_two_old_identities_of_one_run_merge_into_one_row(tmp_path):
    path = _v1_store(tmp_path)
    identity, new = V1["dafedc8c827f92a7"]
    # a study's mapping_interval reached its LP runs too: LP ignored it, version 1 keyed it apart
    twin = {**identity, "mapping_interval": 2}
    db = sqlite3.connect(path)
    db.execute("INSERT INTO runs (key, study, config, status, created_at) VALUES "
               "('0000000000000001', 'old', ?, 'pending', 0)", (json.dumps(twin),))
    db.commit()
    db.close()
    with SQLiteStore(path) as store:
        done = rekey_store(store, tmp_path / "artifacts")
        assert store.rows()[new].status in ("done", "pending")
    assert done.merged == 1 and done.moved == 3


def test_reading_a_version_1_store_by_spec_says_to_migrate(tmp_path):
    _v1_store(tmp_path)
    spec = parse_spec("name: old\n", check=False)
    with pytest.raises(HiddenCostError, match="hiddencost study migrate old"):
        read_study(spec, tmp_path)
    # the store alone (no keys to compute) reads as it is
    assert len(load_results(tmp_path / "study.sqlite")) == 3


def test_version_1_runs_are_rekeyed_with_the_behaviour_they_ran_with():
    from hiddencost.study.migrate import current_identity

    xmr = {"dataset": "splice", "method": "xmr", "n_shot": 10}
    assert current_identity(xmr)["options"]["padding"] == "repeat-last"
    clip = current_identity({"model": "clip_vit_b32", "weights": "random", "method": "vp"})
    assert (clip["options"]["preprocess"], clip["options"]["class_texts"]) == (
        "squash", "readable")
    assert "padding" not in current_identity({"method": "ilm"})["options"]
    # ImageNet's mean/std: its sources came from an image no option draws now
    with pytest.raises(HiddenCostError, match="an image xmr no longer draws"):
        current_identity({**xmr, "model": "resnet50.tv2_in1k"})
