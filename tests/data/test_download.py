"""data.download=true: a corpus fetched once to data.path, its sha256 checked, never left half-written.

Offline: the "remote" file is a local file:// URL, or ``fetch`` is replaced."""

from __future__ import annotations

import hashlib

import pytest
from hydra.utils import instantiate

from ssl_lightning.config import ConfigError
from ssl_lightning.data import download as download_module
from ssl_lightning.data.download import download

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40


@pytest.fixture
def remote(tmp_path):
    """A file served at a file:// URL, and its sha256."""
    source = tmp_path / "remote" / "input.txt"
    source.parent.mkdir()
    source.write_text(TEXT, encoding="utf-8")
    return source.as_uri(), hashlib.sha256(TEXT.encode()).hexdigest()


def test_tinyshakespeare_config_downloads_to_data_path_and_trains_a_tokenizer(make_cfg, tmp_path, remote):
    url, sha = remote
    target = tmp_path / "data" / "tinyshakespeare" / "input.txt"
    cfg = make_cfg("method=clm", "data=tinyshakespeare", f"data.path={target}", f"data.url={url}",
                   f"data.sha256={sha}", "data.block_size=16", "data.batch_size=4")
    assert cfg.data.download is True  # the preset downloads, like torchvision's datasets
    dm = instantiate(cfg.data)
    assert not target.exists()  # nothing fetched when the config is built
    assert dm.tokenizer.decode(dm.tokens("train")[:14]) == "First Citizen:"
    assert target.read_text(encoding="utf-8") == TEXT
    assert sorted(p.name for p in target.parent.iterdir()) == ["input.txt"]  # no temporary file left


def test_the_preset_points_at_char_rnn_with_its_checksum(make_cfg):
    cfg = make_cfg("method=clm", "data=tinyshakespeare", tiny=False)
    assert cfg.data.url.endswith("karpathy/char-rnn/master/data/tinyshakespeare/input.txt")
    assert len(cfg.data.sha256) == 64 and cfg.data.path.endswith("tinyshakespeare/input.txt")


def test_an_existing_file_is_used_as_it_is(tmp_path, monkeypatch):
    local = tmp_path / "my_copy.txt"
    local.write_text("a local copy", encoding="utf-8")

    def no_network(url, dest, timeout=60.0):
        raise AssertionError("fetched although the file exists")

    monkeypatch.setattr(download_module, "fetch", no_network)
    assert download("https://example.invalid/input.txt", local, sha256="0" * 64) == local


def test_a_checksum_mismatch_is_refused_and_leaves_nothing(tmp_path, remote):
    url, _ = remote
    target = tmp_path / "out" / "input.txt"
    with pytest.raises(ConfigError, match=r"its sha256 is [0-9a-f]{64}, not the expected 00+ .*data.path=FILE"):
        download(url, target, sha256="0" * 64)
    assert list(target.parent.iterdir()) == []


def test_a_failed_download_names_the_url_and_the_way_out(tmp_path):
    missing = (tmp_path / "nowhere.txt").as_uri()
    with pytest.raises(ConfigError, match="could not fetch file://.*nowhere.txt.*give data.path=FILE"):
        download(missing, tmp_path / "out" / "input.txt")
    assert list((tmp_path / "out").iterdir()) == []


def test_download_needs_a_url():
    from ssl_lightning.data.text import TextDataModule

    with pytest.raises(ConfigError, match="data.download=True is not allowed: true only with data.url"):
        TextDataModule(path="x.txt", download=True)
