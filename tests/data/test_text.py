"""Text data: reading, splitting and windowing a corpus, the MLM and causal collators, and bad input."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from ssl_lightning.config import ConfigError
from ssl_lightning.data.text import (
    CausalLMCollator,
    MLMCollator,
    TextDataModule,
    TokenWindows,
    default_corpus,
    read_documents,
)
from ssl_lightning.data.tokenizers import EOS_ID, MASK_ID, NUM_SPECIAL, PAD_ID

IGNORE = -100


# -- MLM collator ---------------------------------------------------------------------------------------


def random_windows(batch: int, length: int, vocab: int, seed: int = 0) -> list[tuple[torch.Tensor, int]]:
    """Windows of ordinary tokens with <eos> sprinkled in and <pad> at the end of some."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(batch):
        w = torch.randint(NUM_SPECIAL, vocab, (length + 1,), generator=g)
        w[torch.rand(length + 1, generator=g) < 0.05] = EOS_ID
        if i % 4 == 0:
            w[-(i % 17 + 2):] = PAD_ID
        items.append((w, 1000 + i))
    return items


def test_mlm_proportions_on_a_large_batch():
    """15% of ordinary tokens chosen; of those 80% <mask>, 10% random, 10% unchanged (Devlin et al., 2019)."""
    vocab = 1000
    items = random_windows(256, 128, vocab)
    inputs, labels = MLMCollator(vocab)(items)
    original = torch.stack([w[:-1] for w, _ in items])
    ordinary = original >= NUM_SPECIAL
    chosen = labels != IGNORE
    assert chosen.sum() / ordinary.sum() == pytest.approx(0.15, abs=0.005)
    n = chosen.sum()
    masked = (inputs == MASK_ID) & chosen
    unchanged = (inputs == original) & chosen
    swapped = chosen & ~masked & ~unchanged
    assert masked.sum() / n == pytest.approx(0.8, abs=0.03)
    assert swapped.sum() / n == pytest.approx(0.1, abs=0.025)
    assert unchanged.sum() / n == pytest.approx(0.1, abs=0.025)
    assert (inputs[swapped] >= NUM_SPECIAL).all()  # random replacements are ordinary tokens


def test_mlm_never_masks_special_tokens_and_labels_are_ignored_exactly_where_no_loss_is_taken():
    items = random_windows(64, 64, 50, seed=1)
    inputs, labels = MLMCollator(50, mask_prob=0.5)(items)
    original = torch.stack([w[:-1] for w, _ in items])
    special = original < NUM_SPECIAL
    assert special.any() and (original == PAD_ID).any()
    assert (labels[special] == IGNORE).all() and inputs[special].equal(original[special])
    chosen = labels != IGNORE
    assert labels[chosen].equal(original[chosen])  # labels are the original tokens where the loss is taken
    assert inputs[~chosen].equal(original[~chosen])  # and nothing else is touched
    assert (chosen.sum(1)[(~special).sum(1) > 0] >= 1).all()  # every sequence with tokens predicts at least one


def test_mlm_masks_are_a_function_of_the_sample_seed():
    items = random_windows(4, 32, 100)
    collate = MLMCollator(100)
    a, b = collate(items), collate(items[::-1])
    assert a[0].equal(b[0].flip(0)) and a[1].equal(b[1].flip(0))  # independent of batch order and company
    reseeded = [(w, s + 1) for w, s in items]
    assert not collate(reseeded)[1].equal(a[1])


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.1, 1.5])
def test_mlm_collator_rejects_mask_prob_outside_0_1(bad):
    with pytest.raises(ValueError, match="0 < mask_prob < 1"):
        MLMCollator(100, mask_prob=bad)


def test_causal_collator_shifts_targets_and_ignores_padding():
    w = torch.tensor([5, 6, 7, 8, PAD_ID, PAD_ID])
    inputs, targets = CausalLMCollator()([(w, 0)])
    assert inputs.tolist() == [[5, 6, 7, 8, PAD_ID]]
    assert targets.tolist() == [[6, 7, 8, IGNORE, IGNORE]]


# -- windows --------------------------------------------------------------------------------------------


def test_validation_windows_score_every_token_exactly_once():
    tokens = torch.arange(NUM_SPECIAL, NUM_SPECIAL + 50)
    ds = TokenWindows(tokens, block_size=8, pad_last=True)
    windows = [ds[i][0] for i in range(len(ds))]
    assert len(ds) == 7 and all(len(w) == 9 for w in windows)
    inputs = torch.cat([w[:-1] for w in windows])
    assert inputs[inputs != PAD_ID].equal(tokens)  # masked LM sees every token once
    _, targets = CausalLMCollator()([(w, 0) for w in windows])
    assert targets[targets != IGNORE].equal(tokens[1:])  # causal LM predicts every next token once
    # a fixed seed per validation window (the same masks every epoch), different between windows
    assert ds[3][1] == TokenWindows(tokens, block_size=8, pad_last=True)[3][1] != ds[4][1]


def test_training_windows_at_seeded_random_offsets():
    tokens = torch.arange(1000)
    ds = TokenWindows(tokens, block_size=16, random_offsets=True)
    assert len(ds) == 999 // 16
    w, _ = ds[(0, 123)]
    assert w.equal(ds[(5, 123)][0])  # the offset comes from the seed
    assert w.equal(torch.arange(int(w[0]), int(w[0]) + 17))
    starts = {int(ds[(0, s)][0][0]) for s in range(200)}
    assert len(starts) > 150 and min(starts) >= 0 and max(starts) <= 1000 - 17
    packed = TokenWindows(tokens, block_size=16)
    assert packed[2][0].equal(torch.arange(32, 49))


# -- corpus and datamodule ------------------------------------------------------------------------------


def test_folder_documents_are_joined_with_eos(tmp_path):
    (tmp_path / "b.txt").write_text("world")
    (tmp_path / "a.txt").write_text("hello ")
    (tmp_path / ".hidden").write_text("skipped")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("!" * 40)
    dm = TextDataModule(path=str(tmp_path), block_size=4, batch_size=1, val_fraction=0.2)
    assert read_documents(str(tmp_path)) == ["hello ", "world", "!" * 40]
    stream = torch.cat([dm.tokens("train"), dm.tokens("val")]).long()
    assert (stream == EOS_ID).sum() == 2
    assert dm.tokenizer.decode(stream) == "hello <eos>world<eos>" + "!" * 40


def test_default_corpus_ships_with_python():
    docs = default_corpus()
    assert len(docs) > 50 and sum(map(len, docs)) > 300_000
    dm = TextDataModule(block_size=64, batch_size=4)
    assert dm.tokenizer.vocab_size > 80
    assert len(dm.tokens("val")) == pytest.approx(0.1 * (len(dm.tokens("train")) + len(dm.tokens("val"))), rel=0.01)


def test_text_configs_instantiate_without_touching_disk(make_cfg):
    for data in ("text", "tinyshakespeare"):
        cfg = make_cfg("method=clm", f"data={data}", "data.path=/no/such/file.txt", "data.download=false")
        dm = instantiate(cfg.data)
        assert dm.block_size >= 1 and dm._tokenizer is None
        with pytest.raises(ConfigError, match="data.path='/no/such/file.txt' does not exist"):
            dm.tokenizer


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (b"", {}, "is empty: it holds no text"),
        (b"short text", {"block_size": 32}, "fewer than one block of data.block_size=32"),
        (b"caf\xe9 latin-1 " * 20, {}, "is not UTF-8 text (byte 0xe9 at offset 3): data.tokenizer=char needs UTF-8"),
        (b"abcdefgh" * 20, {"batch_size": 64, "block_size": 8}, "data.batch_size=64 is larger than the 17 training blocks"),
    ],
)
def test_bad_text_input_is_named(tmp_path, content, kwargs, message):
    path = tmp_path / "corpus.txt"
    path.write_bytes(content)
    dm = TextDataModule(path=str(path), **{"block_size": 8, "batch_size": 2, **kwargs})
    with pytest.raises(ConfigError) as info:
        dm.setup("fit")
    assert message in str(info.value)


def test_non_utf8_is_fine_for_the_byte_tokenizer(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 latin-1 " * 20)
    dm = TextDataModule(path=str(path), tokenizer="byte", block_size=8, batch_size=2)
    dm.setup("fit")
    assert dm.tokenizer.vocab_size == 259 and (dm.tokens("train") == 0xE9 + NUM_SPECIAL).any()


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist: give a UTF-8 text file or a folder"):
        TextDataModule(path=str(tmp_path / "nope.txt")).setup("fit")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no files matching data.glob"):
        TextDataModule(path=str(tmp_path / "empty")).setup("fit")


def test_image_augmentation_is_refused():
    with pytest.raises(ConfigError, match="text data takes no image augmentation"):
        TextDataModule(train_transform=lambda x: x)
