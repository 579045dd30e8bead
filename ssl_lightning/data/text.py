"""Text data for language modelling: read a corpus, tokenize it, pack it into fixed-length blocks, and
batch it with the method's collator (BERT's dynamic masking or GPT's shifted targets).

The token stream is split like nanoGPT's: the first ``1 - val_fraction`` of the tokens train, the rest
validate. A sample is a *window* of ``block_size + 1`` tokens: causal LM reads its first ``block_size``
tokens as inputs and its last ``block_size`` as next-token targets; masked LM masks the first
``block_size``. Training windows start at a random offset drawn from the sample's own seed (nanoGPT's
``get_batch``, made reproducible by :class:`ShardedSampler`); validation windows are fixed, consecutive
and padded at the end of the split, so every validation token is scored exactly once, with the same masks
every epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ssl_lightning.config import ConfigError, check
from ssl_lightning.data.download import download as download_file
from ssl_lightning.data.position import TrainPosition
from ssl_lightning.data.sampler import ShardedSampler, augmentation_seed
from ssl_lightning.data.tokenizers import (
    EOS_ID,
    KINDS,
    MASK_ID,
    NUM_SPECIAL,
    PAD_ID,
    Tokenizer,
    build_tokenizer,
)
from ssl_lightning.distributed import world_size
from ssl_lightning.losses.lm import IGNORE_INDEX


# -- corpus -------------------------------------------------------------------------------------------


def default_corpus() -> list[str]:
    """The offline default: the documentation topics that ship inside CPython (``pydoc_data.topics``, what
    ``help("with")`` prints), about 80 documents and 0.5 M characters of technical English. No download,
    ever, on any machine with Python."""
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # some distributions strip it
        raise ConfigError("the default text corpus (Python's pydoc_data.topics) is missing from this Python: "
                          "give data.path=FILE (a UTF-8 text file or a folder of files)") from e
    return [topics[key] for key in sorted(topics)]


def read_documents(path: str | None, needs_text: bool = True, glob: str = "**/*", tokenizer: str = "char") -> list:
    """The documents of ``path`` (a file, or every file under a folder matching ``glob``, hidden ones
    skipped, in sorted order): ``str`` when ``needs_text``, else raw ``bytes``. ``None``: :func:`default_corpus`."""
    if path is None:
        return default_corpus() if needs_text else [d.encode("utf-8") for d in default_corpus()]
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError(f"data.path={str(path)!r} does not exist: give a UTF-8 text file or a folder of files "
                          "(relative to the working directory; paths.data_dir is $SSL_LIGHTNING_DATA, default 'data')")
    if root.is_file():
        files = [root]
    else:
        files = sorted(f for f in root.glob(glob)
                       if f.is_file() and not any(p.startswith(".") for p in f.relative_to(root).parts))
        if not files:
            raise ConfigError(f"data.path={str(path)!r} holds no files matching data.glob={glob!r}")
    documents = []
    for f in files:
        raw = f.read_bytes()
        if needs_text:
            try:
                documents.append(raw.decode("utf-8"))
            except UnicodeDecodeError as e:
                raise ConfigError(
                    f"{f} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}): data.tokenizer={tokenizer} "
                    "needs UTF-8; use data.tokenizer=byte for other encodings"
                ) from None
        else:
            documents.append(raw)
    documents = [d for d in documents if len(d)]
    if not documents:
        raise ConfigError(f"data.path={str(path)!r} is empty: it holds no text")
    return documents


def encode_documents(tokenizer: Tokenizer, documents: Sequence[str | bytes]) -> torch.Tensor:
    """One token stream (N,): the documents' ids with ``<eos>`` between documents (GPT-2's <|endoftext|>)."""
    parts = []
    for i, doc in enumerate(documents):
        if i:
            parts.append(torch.tensor([EOS_ID]))
        parts.append(tokenizer.encode(doc))
    tokens = torch.cat(parts)
    return tokens.to(torch.int16 if tokenizer.vocab_size <= 2**15 else torch.int32)  # memory; windows are int64


# -- windows and collators ----------------------------------------------------------------------------


class TokenWindows(Dataset):
    """Windows of ``block_size + 1`` tokens of a stream (N,), as ``(window (T+1,), seed)``.

    ``random_offsets``: ``len`` is the number of whole blocks, and the key ``(index, seed)`` draws the window's
    start uniformly from ``[0, N - T - 1]`` with ``seed`` (nanoGPT). Otherwise window ``i`` starts at
    ``i * block_size``; with ``pad_last`` the windows cover the whole stream and the last is padded with
    ``<pad>``. Plain integer keys get a fixed seed (masks that are the same every validation epoch).
    """

    def __init__(self, tokens: torch.Tensor, block_size: int, random_offsets: bool = False, pad_last: bool = False,
                 seed: int = 0):
        self.tokens, self.block_size, self.seed = tokens, block_size, seed
        self.random_offsets, self.pad_last = random_offsets, pad_last
        n = len(tokens)
        self.length = math.ceil(n / block_size) if pad_last else max(0, (n - 1) // block_size)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, key) -> tuple[torch.Tensor, int]:
        index, seed = key if isinstance(key, tuple) else (key, augmentation_seed(self.seed, -1, key))
        size = self.block_size + 1
        if self.random_offsets:
            g = torch.Generator().manual_seed(seed)
            start = int(torch.randint(len(self.tokens) - size + 1, (1,), generator=g))
        else:
            start = index * self.block_size
        window = self.tokens[start : start + size].long()
        if len(window) < size:
            window = torch.cat([window, torch.full((size - len(window),), PAD_ID, dtype=torch.long)])
        return window, seed


class CausalLMCollator:
    """GPT's next-token batches (Radford et al., 2018): windows (B, T+1) -> inputs (B, T) and targets (B, T),
    the inputs shifted left by one; targets that are padding get -100 (no loss)."""

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        windows = torch.stack([w for w, _ in items])  # (B, T+1)
        targets = windows[:, 1:].clone()
        targets[targets == PAD_ID] = IGNORE_INDEX
        return windows[:, :-1].contiguous(), targets


class MLMCollator:
    """BERT's dynamic masking (Devlin et al., 2019, Sec. 3.1; the reference ``create_masked_lm_predictions``).

    In each sequence, ``round(mask_prob * n)`` of its ``n`` ordinary tokens (never ``<pad>``, ``<eos>`` or
    ``<mask>``; at least one) are chosen uniformly; each chosen token becomes ``<mask>`` with probability
    ``mask_token_prob`` (80%), a random ordinary token with ``random_token_prob`` (10%), and stays unchanged
    otherwise (10%). Labels hold the original token at the chosen positions and -100 everywhere else, so the
    loss is taken on chosen positions only. A new mask is drawn every time a sample is seen (RoBERTa's dynamic
    masking), from the sample's seed, so masks do not depend on batch composition, workers or ranks.

    Returns ``(inputs (B, T), labels (B, T))`` from windows (B, T+1) (the window's last token is unused).
    """

    def __init__(self, vocab_size: int, mask_prob: float = 0.15, mask_token_prob: float = 0.8,
                 random_token_prob: float = 0.1):
        if not 0 < mask_prob < 1 or min(mask_token_prob, random_token_prob) < 0 or mask_token_prob + random_token_prob > 1:
            raise ValueError(f"MLMCollator needs 0 < mask_prob < 1 and mask_token_prob + random_token_prob <= 1, got "
                             f"{mask_prob}, {mask_token_prob}, {random_token_prob}")
        if vocab_size <= NUM_SPECIAL:
            raise ValueError(f"vocab_size={vocab_size} has no ordinary tokens")
        self.vocab_size, self.mask_prob = vocab_size, mask_prob
        self.mask_token_prob, self.random_token_prob = mask_token_prob, random_token_prob

    def mask(self, ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask one sequence (T,): returns (inputs (T,), labels (T,))."""
        candidates = ids >= NUM_SPECIAL
        n = int(candidates.sum())
        k = min(n, max(1, int(self.mask_prob * n + 0.5))) if n else 0
        noise = torch.rand(ids.shape, generator=generator).masked_fill_(~candidates, 2.0)
        chosen = noise.argsort()[:k]  # k random candidate positions
        labels = torch.full_like(ids, IGNORE_INDEX)
        labels[chosen] = ids[chosen]
        inputs = ids.clone()
        r = torch.rand(k, generator=generator)
        inputs[chosen[r < self.mask_token_prob]] = MASK_ID
        swap = chosen[(r >= self.mask_token_prob) & (r < self.mask_token_prob + self.random_token_prob)]
        inputs[swap] = torch.randint(NUM_SPECIAL, self.vocab_size, (len(swap),), generator=generator)
        return inputs, labels

    def __call__(self, items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.mask(w[:-1], torch.Generator().manual_seed(seed)) for w, seed in items]
        return torch.stack([x for x, _ in pairs]), torch.stack([y for _, y in pairs])


# -- datamodule ---------------------------------------------------------------------------------------


class TextDataModule(TrainPosition, L.LightningDataModule):
    """Any UTF-8 text file or folder of files (``path``; ``None``: the offline default corpus), tokenized,
    split and windowed as described in this module's docstring. Batches are ``(inputs (B, T), labels (B, T))``
    made by the method's ``collator`` (``trainer.lightning_module.collator``, or :attr:`collate_fn` if set).

    The tokenizer is built from the whole corpus on first use (the char vocabulary and the BPE merges are
    learned from it) and written to ``<run dir>/tokenizer.json``; methods store it in every checkpoint.

    Args:
        path: a UTF-8 text file, or a folder whose files (``glob``) are the documents.
        tokenizer: ``char``, ``byte`` or ``bpe`` (needs the ``tokenizers`` library).
        bpe_vocab_size: vocabulary size of the BPE tokenizer (special tokens and 256 bytes included).
        block_size: tokens per sequence (the model's context).
        batch_size: sequences per device.
        val_fraction: the last fraction of the token stream that validates.
        random_offsets: training windows at random offsets (nanoGPT); False: consecutive packed blocks.
        seed: data order, window offsets and masks (see :class:`ShardedSampler`).
        download: fetch ``url`` to ``path`` when ``path`` is missing (``sha256`` checked), like torchvision's
            datasets; see :mod:`ssl_lightning.data.download`.
    """

    def __init__(
        self,
        path: str | None = None,
        tokenizer: str = "char",
        bpe_vocab_size: int = 4096,
        glob: str = "**/*",
        block_size: int = 128,
        batch_size: int = 32,
        val_fraction: float = 0.1,
        random_offsets: bool = True,
        num_workers: int = 0,
        eval_batch_size: int | None = None,
        seed: int = 0,
        pin_memory: bool = True,
        train_transform: Callable | None = None,
        download: bool = False,
        url: str | None = None,
        sha256: str | None = None,
    ):
        super().__init__()
        if train_transform is not None:
            raise ConfigError("text data takes no image augmentation: use a text method (method=mlm or method=clm), "
                              "or image data with an image method")
        check(tokenizer in KINDS, "data.tokenizer", tokenizer, f"one of {', '.join(KINDS)}")
        check(isinstance(block_size, int) and block_size >= 1, "data.block_size", block_size, "an integer >= 1")
        check(isinstance(batch_size, int) and batch_size >= 1, "data.batch_size", batch_size, "an integer >= 1")
        check(isinstance(num_workers, int) and num_workers >= 0, "data.num_workers", num_workers, "an integer >= 0")
        check(0 < val_fraction < 1, "data.val_fraction", val_fraction, "a fraction in (0, 1)")
        check(not download or (url and path), "data.download", download,
              "true only with data.url (where to fetch from) and data.path (where to keep it)")
        self.download, self.url, self.sha256 = download, url, sha256
        self.path, self.tokenizer_kind, self.bpe_vocab_size, self.glob = path, tokenizer, bpe_vocab_size, glob
        self.block_size, self.batch_size, self.val_fraction = block_size, batch_size, val_fraction
        self.random_offsets, self.num_workers, self.seed, self.pin_memory = random_offsets, num_workers, seed, pin_memory
        self.eval_batch_size = eval_batch_size or batch_size
        self.collate_fn: Callable | None = None
        self._tokenizer: Tokenizer | None = None
        self._splits: dict[str, torch.Tensor] = {}

    # -- corpus, tokenizer, splits --

    def _load(self) -> None:
        if self._tokenizer is not None:
            return
        if self.download:
            download_file(self.url, self.path, self.sha256)
        needs_text = self.tokenizer_kind != "byte"  # char and BPE read characters; byte reads any file
        documents = read_documents(self.path, needs_text, self.glob, self.tokenizer_kind)
        tokenizer = build_tokenizer(self.tokenizer_kind, documents, self.bpe_vocab_size)
        tokens = encode_documents(tokenizer, documents)
        n_train = int(len(tokens) * (1 - self.val_fraction))
        where = "the default corpus" if self.path is None else f"data.path={self.path!r}"
        if n_train < self.block_size + 1 or len(tokens) - n_train < 2:
            raise ConfigError(
                f"{where} has {len(tokens)} tokens, {n_train} of them for training: fewer than one block of "
                f"data.block_size={self.block_size} (+1 target) for training and 2 for validation; lower "
                "data.block_size or give more text"
            )
        self._splits = {"train": tokens[:n_train], "val": tokens[n_train:]}
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        self._load()
        return self._tokenizer

    @property
    def backbone_args(self) -> dict:
        """What only the data knows about the model: the vocabulary size (train.py writes it into cfg.backbone)."""
        return {"vocab_size": self.tokenizer.vocab_size}

    def tokens(self, split: str) -> torch.Tensor:
        self._load()
        return self._splits[split]

    def dataset(self, split: str) -> TokenWindows:
        if split == "train":
            return TokenWindows(self.tokens("train"), self.block_size, random_offsets=self.random_offsets, seed=self.seed)
        return TokenWindows(self.tokens(split), self.block_size, pad_last=True, seed=self.seed)

    def setup(self, stage: str | None = None) -> None:
        blocks = len(self.dataset("train")) // world_size()
        if blocks < self.batch_size:
            raise ConfigError(
                f"data.batch_size={self.batch_size} is larger than the {blocks} training blocks of "
                f"{self.block_size} tokens per device: lower data.batch_size or data.block_size, or give more text"
            )
        trainer = self.trainer
        if trainer is not None and trainer.is_global_zero and trainer.default_root_dir:
            out = Path(trainer.default_root_dir)
            out.mkdir(parents=True, exist_ok=True)
            self.tokenizer.save(out / "tokenizer.json")

    # -- loaders --

    def collator(self) -> Callable:
        if self.collate_fn is not None:
            return self.collate_fn
        module = self.trainer.lightning_module if self.trainer is not None else None
        collate = getattr(module, "collator", None)
        if collate is None:
            raise ConfigError(f"text data needs a text method (method=mlm or method=clm), not {type(module).__name__}")
        return collate

    def _loader(self, dataset: Dataset, sampler: ShardedSampler, batch_size: int, drop_last: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, collate_fn=self.collator(),
            num_workers=self.num_workers, pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.dataset("train")
        sampler = ShardedSampler(len(dataset), shuffle=True, seed=self.seed, drop_last=True, with_seed=True)
        return self._loader(dataset, self.positioned(sampler, self.batch_size), self.batch_size, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        dataset = self.dataset("val")
        return self._loader(dataset, ShardedSampler(len(dataset), shuffle=False), self.eval_batch_size, drop_last=False)
