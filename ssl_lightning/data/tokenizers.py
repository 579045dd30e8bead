"""Tokenizers for language modelling: character-level and byte-level built in, BPE through the optional
``tokenizers`` library (``pip install ssl_lightning[text]``).

Every tokenizer puts the same three special tokens first, so ids ``0, 1, 2`` are always ``<pad>``, ``<eos>``
(end of a document, between the files of a folder) and ``<mask>`` (BERT's [MASK]), and every id
``>= NUM_SPECIAL`` is an ordinary token. A tokenizer is fully described by :meth:`Tokenizer.state`, a
JSON-safe dict that the run dir (``tokenizer.json``) and every checkpoint store; :func:`tokenizer_from_state`
rebuilds it, so generation needs nothing but the checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from ssl_lightning.config import ConfigError, check

SPECIALS = ("<pad>", "<eos>", "<mask>")
PAD_ID, EOS_ID, MASK_ID = 0, 1, 2
NUM_SPECIAL = len(SPECIALS)
KINDS = ("char", "byte", "bpe")


class Tokenizer:
    """Maps text to ids ``(N,)`` and back. Subclasses set ``kind`` and implement the four methods below."""

    kind: str = ""
    pad_id, eos_id, mask_id, num_special = PAD_ID, EOS_ID, MASK_ID, NUM_SPECIAL

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def encode(self, text: str | bytes) -> torch.Tensor:
        """Ids of ``text`` (no special tokens), int64 (N,)."""
        raise NotImplementedError

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ``ids``; special tokens are written as their names (``<eos>``), padding is dropped."""
        raise NotImplementedError

    def state(self) -> dict:
        """JSON-safe description from which :func:`tokenizer_from_state` rebuilds an equal tokenizer."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.kind}, {self.vocab_size} tokens"

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.state(), ensure_ascii=False, indent=1))

    def __eq__(self, other) -> bool:
        return isinstance(other, Tokenizer) and self.state() == other.state()

    def __hash__(self) -> int:
        return hash(json.dumps(self.state(), sort_keys=True))


class CharTokenizer(Tokenizer):
    """One id per Unicode character of the corpus (Karpathy's char-rnn and nanoGPT's shakespeare_char), after
    the special tokens. Text must be UTF-8; a character absent from the vocabulary is an error."""

    kind = "char"

    def __init__(self, chars: Sequence[str]):
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("a char vocabulary is a list of distinct single characters")
        self.chars = list(chars)
        codes = np.array([ord(c) for c in self.chars], dtype=np.int64)
        self._order = np.argsort(codes)  # vectorised lookup: searchsorted in the sorted code points
        self._sorted_codes = codes[self._order]

    @classmethod
    def from_documents(cls, documents: Iterable[str]) -> CharTokenizer:
        chars: set[str] = set()
        for doc in documents:
            chars.update(doc)
        return cls(sorted(chars))

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + len(self.chars)

    def encode(self, text: str | bytes) -> torch.Tensor:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        if not self.chars:
            raise ConfigError("the char vocabulary is empty: build it from a non-empty corpus")
        pos = np.searchsorted(self._sorted_codes, codes).clip(max=len(self.chars) - 1)
        unknown = self._sorted_codes[pos] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown]})
            raise ConfigError(f"characters {''.join(missing[:20])!r} are not in the char vocabulary "
                              f"({len(self.chars)} characters of the training corpus)")
        return torch.from_numpy(self._order[pos] + NUM_SPECIAL)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        table = list(SPECIALS) + self.chars
        return "".join(table[i] for i in _ids_list(ids) if i != PAD_ID)

    def state(self) -> dict:
        return {"kind": self.kind, "specials": list(SPECIALS), "chars": "".join(self.chars)}


class ByteTokenizer(Tokenizer):
    """The 256 byte values (id = byte + 3) after the special tokens: any file, any encoding, a fixed
    vocabulary of 259. Decoding replaces invalid UTF-8 sequences with U+FFFD."""

    kind = "byte"

    @property
    def vocab_size(self) -> int:
        return NUM_SPECIAL + 256

    def encode(self, text: str | bytes) -> torch.Tensor:
        data = text.encode("utf-8") if isinstance(text, str) else text
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).astype(np.int64) + NUM_SPECIAL)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        out, pending = [], bytearray()
        for i in _ids_list(ids):
            if i >= NUM_SPECIAL:
                pending.append(i - NUM_SPECIAL)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            if i != PAD_ID:
                out.append(SPECIALS[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def state(self) -> dict:
        return {"kind": self.kind, "specials": list(SPECIALS)}


class BPETokenizer(Tokenizer):
    """Byte-level BPE (Sennrich et al., 2016; GPT-2's byte-level variant, Radford et al., 2019) trained on
    the corpus with the ``tokenizers`` library; the special tokens take ids 0-2."""

    kind = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer

    @classmethod
    def train(cls, documents: Iterable[str], vocab_size: int) -> BPETokenizer:
        tk = _require_tokenizers()
        check(isinstance(vocab_size, int) and vocab_size > NUM_SPECIAL + 256, "data.bpe_vocab_size", vocab_size,
              f"an integer > {NUM_SPECIAL + 256} (the special tokens and the 256 bytes)")
        hf = tk.Tokenizer(tk.models.BPE())
        hf.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
        hf.decoder = tk.decoders.ByteLevel()
        trainer = tk.trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                         initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet())
        hf.train_from_iterator(documents, trainer=trainer)
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str | bytes) -> torch.Tensor:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return torch.tensor(self.hf.encode(text, add_special_tokens=False).ids, dtype=torch.int64)

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        return self.hf.decode([i for i in _ids_list(ids) if i != PAD_ID], skip_special_tokens=False)

    def state(self) -> dict:
        return {"kind": self.kind, "specials": list(SPECIALS), "tokenizer": json.loads(self.hf.to_str())}


def build_tokenizer(kind: str, documents: Sequence[str | bytes], bpe_vocab_size: int = 4096) -> Tokenizer:
    """A tokenizer of ``kind`` for the corpus ``documents`` (the char vocabulary and the BPE merges are
    learned from them)."""
    check(kind in KINDS, "data.tokenizer", kind, f"one of {', '.join(KINDS)}")
    if kind == "byte":
        return ByteTokenizer()
    if kind == "char":
        return CharTokenizer.from_documents(documents)
    return BPETokenizer.train(documents, bpe_vocab_size)


def tokenizer_from_state(state: dict) -> Tokenizer:
    """Rebuild the tokenizer :meth:`Tokenizer.state` described (from a checkpoint or ``tokenizer.json``)."""
    kind = state.get("kind")
    if tuple(state.get("specials", ())) != SPECIALS:
        raise ConfigError(f"tokenizer state with special tokens {state.get('specials')} is not one of ssl_lightning's")
    if kind == "char":
        return CharTokenizer(list(state["chars"]))
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer(_require_tokenizers().Tokenizer.from_str(json.dumps(state["tokenizer"])))
    raise ConfigError(f"tokenizer kind {kind!r} is not one of {', '.join(KINDS)}")


def _require_tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise ConfigError("data.tokenizer='bpe' needs the `tokenizers` library: pip install 'ssl_lightning[text]' "
                          "(or pip install tokenizers)") from e
    return tokenizers


def _ids_list(ids: Sequence[int] | torch.Tensor) -> list[int]:
    return ids.tolist() if isinstance(ids, torch.Tensor) else [int(i) for i in ids]
