"""Fetch a public corpus file once, like torchvision's datasets: ``data.download=true`` downloads ``data.url``
to ``data.path`` when the file is missing, checks its SHA-256 and only then moves it into place.

The download goes to a temporary file next to the target and is renamed over it (atomic on POSIX), so an
interrupted download never leaves a truncated corpus behind, and several DDP ranks that start at once each
write their own temporary file and end with the same verified file. Any URL ``urllib`` opens works,
``file://`` included (what the tests use). The URL and checksum of a corpus live in its config
(``conf/data/tinyshakespeare.yaml``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

from ssl_lightning.config import ConfigError

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Copy ``url``'s bytes into the file ``dest`` (overwritten)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def download(url: str, path: str | Path, sha256: str | None = None) -> Path:
    """``path`` if it exists, else ``url`` downloaded to it (its SHA-256 checked against ``sha256`` when given).

    Raises ConfigError naming the URL, the reason and the way out (``data.path=`` a local copy) when the
    download fails or the checksum does not match; nothing is left at ``path`` then.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    way_out = f"download it yourself and give data.path=FILE, or put it at {str(path)!r}"
    try:
        try:
            fetch(url, tmp)
        except OSError as e:  # URLError and HTTPError are OSErrors
            raise ConfigError(f"data.download=true could not fetch {url}: {e}; {way_out}") from None
        if sha256 is not None and (got := sha256_of(tmp)) != sha256.lower():
            raise ConfigError(f"data.download=true fetched {url}, but its sha256 is {got}, not the expected "
                              f"{sha256} (a changed or truncated file); {way_out}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
