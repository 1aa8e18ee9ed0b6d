"""Score cards: the index by hand, a card end to end through the command line on a suite run by
the synthetic runner (it resumes, it is the same card again, it merges into a leaderboard, and
cards of other suite versions or schemas are refused in one line)."""

from __future__ import annotations

import json
import math

import pytest
from support import SYNTHETIC
from typer.testing import CliRunner

from hiddencost.card import index_of, load_suite, read_card, suite_names
from hiddencost.cli import app
from hiddencost.errors import HiddenCostError

SUITE = f"""
suite: tiny-synthetic
version: 1
description: "digits, ilm and lp at 2 and 5 shots, 3 seeds, the synthetic runner"
dataset: [digits]
method: [ilm, lp]
n_shot: [2, 5]
seed: [0, 1, 2]
params: {{epochs: 2}}
runner: {SYNTHETIC}
"""


def test_the_index_is_the_mean_over_log_n_of_each_curve_then_over_curves():
    assert index_of([[(1, 2.0), (10, 4.0)]]) == pytest.approx(3.0)  # the trapezoid's mean
    # 1 → 10: mean 3; 10 → 100: 4; each decade weighs the same
    assert index_of([[(1, 2.0), (10, 4.0), (100, 4.0)]]) == pytest.approx(3.5)
    assert index_of([[(5, -1.0)], [(1, 2.0), (10, 4.0)]]) == pytest.approx((-1.0 + 3.0) / 2)
    assert index_of([[(math.nan, 1.0)]]) is None  # a budget of unknown size is left out


def test_built_in_suites_and_bad_suites():
    assert suite_names() == ["offline-mini", "paper-8"]
    mini = load_suite("offline-mini")
    assert (mini.dataset, mini.method, mini.seed) == (["digits"], ["ilm", "lp"], [0, 1])
    with pytest.raises(HiddenCostError, match="unknown suite 'nope'"):
        load_suite("nope")


def _card(tmp_path, point: str, name: str = "a") -> tuple[object, str]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    result = CliRunner().invoke(app, [
        "card", "--suite", str(suite), "--dense", "efficientnet_lite0", "--compressed", point,
        "--out", str(tmp_path / name), "--no-progress"])
    return result, result.output


def test_a_card_end_to_end_resumes_and_merges(tmp_path):
    result, output = _card(tmp_path, "magnitude:0.5")
    assert result.exit_code == 0, output
    path = tmp_path / "a" / "card.json"
    card = read_card(path)  # validates against the schema
    assert (card.suite, card.suite_version, card.dense) == ("tiny-synthetic", 1,
                                                            "efficientnet_lite0")
    [entry] = card.entries
    assert entry.label == "magnitude-global-s0.50" and len(entry.cells) == 4
    cell = entry.cells[0]
    assert cell.dense_accuracy.n == cell.compressed_accuracy.n == 3
    assert cell.delta_accuracy == pytest.approx(cell.dense_accuracy.mean
                                                - cell.compressed_accuracy.mean)
    assert entry.index.n == 3 and entry.index.lo is not None
    assert (tmp_path / "a" / "card.html").read_text().count("<tr>") >= 5
    first = json.loads(path.read_text())
    again, output = _card(tmp_path, "magnitude:0.5")  # resumes: nothing runs again
    assert again.exit_code == 0 and "24 runs · 24 done" in " ".join(output.split())
    second = json.loads(path.read_text())
    first.pop("created_at"), second.pop("created_at")
    assert first == second
    w8, output = _card(tmp_path, "w8", name="b")
    assert w8.exit_code == 0, output
    merged = CliRunner().invoke(app, ["card", "merge", str(path), str(tmp_path / "b" /
                                                                      "card.json"),
                                      "--out", str(tmp_path / "board")])
    assert merged.exit_code == 0, merged.output
    rows = (tmp_path / "board" / "leaderboard.csv").read_text().strip().splitlines()
    assert len(rows) == 3 and {r.split(",")[1] for r in rows[1:]} == {"magnitude:0.5", "w8"}
    # a card of another suite version is refused, in one line
    other = json.loads((tmp_path / "b" / "card.json").read_text())
    (tmp_path / "v2.json").write_text(json.dumps({**other, "suite_version": 2}))
    refused = CliRunner().invoke(app, ["card", "merge", str(path), str(tmp_path / "v2.json"),
                                       "--out", str(tmp_path / "board2")])
    assert refused.exit_code == 2
    assert "cards of different suites cannot be ranked together: tiny-synthetic v1, " \
           "tiny-synthetic v2" in " ".join(refused.output.split())
    assert not (tmp_path / "board2").exists()
    (tmp_path / "old.json").write_text(json.dumps({**other, "card_schema": "hiddencost-card/0"}))
    with pytest.raises(HiddenCostError, match="is not a card of schema hiddencost-card/1"):
        read_card(tmp_path / "old.json")


def test_a_card_without_compressed_points_or_with_a_bad_one_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["card", "--dense", "efficientnet_lite0",
                                      "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "at least one --compressed" in result.output
    result, output = _card(tmp_path, "magnitude:2.0", name="bad")
    assert result.exit_code == 2 and "\n" not in output.strip()
    assert not (tmp_path / "bad").exists()


def test_a_model_compressed_elsewhere_enters_as_its_checkpoint_file(tmp_path):
    (tmp_path / "pruned by my tool.pth").write_bytes(b"")  # the synthetic runner never loads it
    result, output = _card(tmp_path, str(tmp_path / "pruned by my tool.pth"), name="mine")
    assert result.exit_code == 0, output
    [entry] = read_card(tmp_path / "mine" / "card.json").entries
    assert (entry.label, entry.family) == ("checkpoint-pruned-by-my-tool", "checkpoint")
    missing, output = _card(tmp_path, f"{tmp_path / 'pruned by my tool.pth'},mask=nope.pth",
                            name="nomask")
    assert missing.exit_code == 2 and "mask nope.pth of point" in " ".join(output.split())
