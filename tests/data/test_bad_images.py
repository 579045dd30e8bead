"""Data faults: unreadable images are skipped with a warning naming them (or fail on request); grayscale,
palette and RGBA images are converted to RGB; missing and empty directories are errors."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from PIL import Image

from ssl_lightning.config import ConfigError
from ssl_lightning.data.datasets import CheckedImageFolder, load_rgb
from ssl_lightning.train import train


def _png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def messy_folder(tmp_path):
    """Two classes of good images in every mode PIL users meet, plus a corrupt JPEG and a truncated PNG."""
    tmp_path = tmp_path / "images"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / cls / f"rgb{i}.jpg")
    gray = Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8))
    gray.save(tmp_path / "a" / "gray.png")
    gray.convert("P").save(tmp_path / "a" / "palette.png")
    rgba = Image.fromarray(rng.integers(0, 255, (16, 16, 4), dtype=np.uint8), mode="RGBA")
    rgba.save(tmp_path / "b" / "rgba.png")
    (tmp_path / "a" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 4)
    (tmp_path / "b" / "truncated.png").write_bytes(_png_bytes(rgba)[:200])
    return tmp_path


def test_bad_files_are_skipped_and_named(messy_folder):
    with pytest.warns(UserWarning) as record:
        ds = CheckedImageFolder(messy_folder, "data.train_dir")
    message = " ".join(str(w.message) for w in record)
    assert "skipping 2 unreadable image(s)" in message
    assert "corrupt.jpg" in message and "truncated.png" in message
    assert len(ds) == 23
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.mode == "RGB" and image.size == (16, 16) and label in (0, 1)


def test_bad_files_fail_when_configured(messy_folder):
    with pytest.raises(ConfigError, match=r"has 2 unreadable image\(s\): .*corrupt.jpg.*truncated.png"):
        CheckedImageFolder(messy_folder, "data.train_dir", on_bad_image="error")


def test_a_file_that_fails_only_when_decoded_is_replaced_at_load_time(messy_folder):
    # A truncated JPEG passes the header check; loading it fails and the next image is served instead.
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="JPEG")
    data = buf.getvalue()
    (messy_folder / "a" / "late.jpg").write_bytes(data[: int(len(data) * 0.6)])  # headers intact, scan data cut
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = CheckedImageFolder(messy_folder, "data.train_dir", verify="header")
    index = next(i for i, (p, _) in enumerate(ds.samples) if p.endswith("late.jpg"))
    with pytest.warns(UserWarning, match="late.jpg"):
        image, _ = ds[index]
    assert image.mode == "RGB"
    # full decoding at start-up catches it up front
    with pytest.warns(UserWarning, match=r"skipping 3 unreadable image\(s\).*late.jpg"):
        CheckedImageFolder(messy_folder, "data.train_dir", verify="decode")


def test_palette_with_transparency_and_rgba_become_rgb_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    rgba.save(tmp_path / "t.png")
    assert load_rgb(str(tmp_path / "t.png")).getpixel((0, 0)) == (255, 255, 255)


def test_training_runs_on_a_folder_with_bad_files(make_cfg, messy_folder):
    with pytest.warns(UserWarning, match=r"skipping 2 unreadable image\(s\)"):
        metrics = train(make_cfg("data=imagefolder", f"data.train_dir={messy_folder}", f"data.val_dir={messy_folder}",
                                 "data.batch_size=8", "data.num_workers=0", "data.image_size=16", "data.num_classes=2",
                                 "method.proj_hidden_dim=32", "method.proj_output_dim=16", "trainer.max_epochs=1",
                                 "callbacks.knn.k=5"))
    assert np.isfinite(metrics["train/loss"])


def test_empty_directory_is_an_error(make_cfg, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images in class folders"):
        train(make_cfg("data=imagefolder", f"data.train_dir={tmp_path / 'empty'}", f"data.val_dir={tmp_path / 'empty'}",
                       "trainer.max_epochs=1"))
