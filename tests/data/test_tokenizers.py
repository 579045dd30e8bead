"""Character, byte and BPE tokenizers: round trips, special tokens, saved states and their errors."""

from __future__ import annotations

import sys

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.data.tokenizers import (
    EOS_ID,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    ByteTokenizer,
    CharTokenizer,
    build_tokenizer,
    tokenizer_from_state,
)

TEXT = "Ünïcode text, with newlines\nand tabs\t— and «quotes»."


def test_special_tokens_come_first_in_every_tokenizer():
    assert (PAD_ID, EOS_ID, MASK_ID, NUM_SPECIAL) == (0, 1, 2, 3)
    char = CharTokenizer.from_documents([TEXT])
    assert char.encode(TEXT).min() >= NUM_SPECIAL and char.decode([EOS_ID, MASK_ID]) == "<eos><mask>"


def test_char_tokenizer_round_trip_vocab_and_state():
    tok = CharTokenizer.from_documents([TEXT, "xyz"])
    assert tok.vocab_size == NUM_SPECIAL + len(set(TEXT + "xyz"))
    ids = tok.encode(TEXT)
    assert ids.dtype == torch.int64 and len(ids) == len(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.decode(torch.cat([ids, torch.zeros(3, dtype=torch.long)])) == TEXT  # padding is dropped
    # ids follow the sorted characters, as nanoGPT's shakespeare_char
    assert tok.encode("".join(sorted(set(TEXT + "xyz")))).tolist() == list(range(NUM_SPECIAL, tok.vocab_size))
    rebuilt = tokenizer_from_state(tok.state())
    assert rebuilt == tok and rebuilt.encode(TEXT).equal(ids)


def test_char_tokenizer_names_unknown_characters():
    tok = CharTokenizer.from_documents(["abc"])
    with pytest.raises(ConfigError, match="characters 'xz' are not in the char vocabulary"):
        tok.encode("abxcz")


def test_byte_tokenizer_takes_any_bytes():
    tok = ByteTokenizer()
    data = bytes(range(256))
    ids = tok.encode(data)
    assert tok.vocab_size == 259 and ids.tolist() == [b + NUM_SPECIAL for b in range(256)]
    assert tok.decode(tok.encode(TEXT)) == TEXT
    assert tok.decode(tok.encode(b"ok \xff\xfe")) == "ok \ufffd\ufffd"  # invalid UTF-8 decodes with replacements
    assert tok.decode([EOS_ID]) == "<eos>" and tokenizer_from_state(tok.state()) == tok


def test_bpe_tokenizer_trains_round_trips_and_reloads():
    pytest.importorskip("tokenizers")
    corpus = [("the cat sat on the mat. " * 20 + TEXT) for _ in range(3)]
    tok = build_tokenizer("bpe", corpus, bpe_vocab_size=300)
    assert 259 < tok.vocab_size <= 300
    assert [tok.hf.token_to_id(s) for s in ("<pad>", "<eos>", "<mask>")] == [PAD_ID, EOS_ID, MASK_ID]
    ids = tok.encode("the cat sat on the mat. " + TEXT)
    assert len(ids) < len("the cat sat on the mat. " + TEXT)  # merges learned
    assert tok.decode(ids) == "the cat sat on the mat. " + TEXT
    assert ids.min() >= NUM_SPECIAL
    rebuilt = tokenizer_from_state(tok.state())
    assert rebuilt == tok and rebuilt.encode(TEXT).equal(tok.encode(TEXT))


def test_bpe_without_the_library_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match="needs the `tokenizers` library: pip install"):
        build_tokenizer("bpe", ["some text"])


def test_unknown_tokenizer_kind():
    with pytest.raises(ConfigError, match="data.tokenizer='word' is not allowed: one of char, byte, bpe"):
        build_tokenizer("word", ["text"])
