"""Tokenizer files: a missing or mismatched file is a clear ConfigError; external torch.export tokenizers load."""

import json

import pytest
import torch

from ssl_lightning.config import ConfigError
from ssl_lightning.tokenizers import PatchKMeansTokenizer, load_tokenizer, save_tokenizer


@pytest.fixture
def codebook_file(tmp_path):
    tokenizer = PatchKMeansTokenizer(vocab_size=16, patch_size=2, image_size=16)
    tokenizer.set_codebook(torch.rand(16, 12))
    return save_tokenizer(tokenizer, tmp_path / "tok.pt")


def test_missing_file_names_the_command_that_creates_it(tmp_path):
    with pytest.raises(ConfigError, match=r"method.tokenizer_path='.*nope.pt' does not exist: create it with `python -m ssl_lightning.fit_tokenizer"):
        load_tokenizer(tmp_path / "nope.pt", 16, 2, 16)


@pytest.mark.parametrize(("image_size", "patch_size", "vocab_size", "message"), [
    (32, 2, 16, "made for image_size=16 but this run has data.image_size=32"),
    (16, 4, 16, "made for patch_size=2 but this run has backbone.patch_size=4"),
    (16, 2, 1024, "made for vocab_size=16 but this run has method.vocab_size=1024"),
])
def test_mismatched_file_is_named(codebook_file, image_size, patch_size, vocab_size, message):
    with pytest.raises(ConfigError, match=message):
        load_tokenizer(codebook_file, image_size, patch_size, vocab_size)


def test_not_a_tokenizer_file(tmp_path):
    (tmp_path / "junk.pt").write_text("hello")
    with pytest.raises(ConfigError, match="is not a tokenizer file"):
        load_tokenizer(tmp_path / "junk.pt", 16, 2, 16)
    torch.save({"state_dict": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(ConfigError, match="expected a dict with format='ssl_lightning.tokenizer'"):
        load_tokenizer(tmp_path / "ckpt.pt", 16, 2, 16)


class ConvTokenizer(torch.nn.Module):
    """A user's tokenizer: a strided convolution scoring 8 codes per 4x4 patch of [0, 1] images."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, kernel_size=4, stride=4)

    def forward(self, x):
        return self.conv(x)  # logits (B, 8, 4, 4)


def test_external_torch_export_tokenizer(tmp_path):
    torch.manual_seed(0)
    model = ConvTokenizer()
    program = torch.export.export(model, (torch.rand(2, 3, 16, 16),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
    path = tmp_path / "user.pt2"
    torch.export.save(program, str(path), extra_files={"ssl_lightning_tokenizer.json": json.dumps(
        {"image_size": 16, "patch_size": 4, "vocab_size": 8})})
    tokenizer = load_tokenizer(path, image_size=16, patch_size=4, vocab_size=8)
    tokenizer.set_input_normalization([0.5] * 3, [0.25] * 3)
    images = torch.randn(5, 3, 16, 16)
    expected = model(images * 0.25 + 0.5).argmax(dim=1).flatten(1)
    assert torch.equal(tokenizer(images), expected)
    tokenizer.train()  # Lightning puts every submodule in train mode; the program stays out of the tree
    assert list(tokenizer.state_dict()) == []
    with pytest.raises(ConfigError, match="made for patch_size=4 but this run has backbone.patch_size=2"):
        load_tokenizer(path, image_size=16, patch_size=2, vocab_size=8)
