"""Getting a dataset's source files: the cache folder, downloads, and checksums.

A source file is fetched once into ``$VAEKIT_DATA/<dataset>/``, verified against its published
MD5 before a byte of it is parsed, and reused from there; a user without internet puts the same
file there by hand.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable

from vaekit.errors import DataError

# Seconds to wait for a connection or for the next chunk. Short, so that an offline machine gets
# its "put the file here" message at once; a live download keeps sending chunks well within it.
TIMEOUT = 5.0
CHUNK = 1 << 20


def cache_dir() -> Path:
    """``$VAEKIT_DATA``, default ``~/.cache/vaekit``."""
    return Path(os.environ.get("VAEKIT_DATA") or Path.home() / ".cache" / "vaekit")


def stream(url: str, sink: BinaryIO, timeout: float = TIMEOUT) -> None:
    """Copy ``url`` into ``sink`` chunk by chunk, with a progress bar on a terminal."""
    from tqdm import tqdm

    with urllib.request.urlopen(url, timeout=timeout) as r:
        total = int(r.headers.get("Content-Length") or 0)
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                  disable=not sys.stderr.isatty()) as bar:
            while chunk := r.read(CHUNK):
                sink.write(chunk)
                bar.update(len(chunk))


def download(url: str, log: Callable[[str], object] = print, timeout: float = 20.0) -> bytes:
    """The whole body of ``url`` in memory (for files of a few MB)."""
    buf = io.BytesIO()
    stream(url, buf, timeout)
    return buf.getvalue()


def file_md5(path: Path) -> str:
    """Hex MD5 of a file, read in chunks (the hash the dataset authors publish)."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def download_file(url: str, path: Path, md5: str, timeout: float = TIMEOUT) -> None:
    """Download ``url`` to ``path``: a temp file beside it, MD5 checked, then an atomic rename.

    Raises
    ------
    OSError or http.client.HTTPException
        The download failed (no network, HTTP error, timeout, cut short); nothing is left behind.
    ValueError
        The downloaded bytes do not match ``md5``; nothing is left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            stream(url, f, timeout)
            f.flush()
            os.fsync(f.fileno())
        got = file_md5(Path(tmp))
        if got != md5:
            raise ValueError(f"downloaded file has MD5 {got}, expected {md5}")
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch_files(dataset: str, files: list[tuple[str, str, str]],
                log: Callable[[str], object] = print) -> list[Path]:
    """Paths of verified copies of ``files`` in ``$VAEKIT_DATA/<dataset>/``, downloading each once.

    Parameters
    ----------
    dataset : str
        Built-in dataset name; also the name of its cache subfolder.
    files : list of (filename, url, md5)
        The canonical files, where they are published, and their published MD5s.

    Raises
    ------
    DataError
        A cached copy fails its checksum, or files are missing and cannot be downloaded; the
        one-line message names every file still needed, its URL and MD5, and where to put it.
    """
    paths = [cache_dir() / dataset / name for name, _, _ in files]
    for path, (name, url, md5) in zip(paths, files):  # check what is there before fetching more
        if path.exists() and (got := file_md5(path)) != md5:
            raise DataError(f"{path} has MD5 {got} but the published {name} has MD5 {md5}; it is "
                            f"damaged or a different file: delete it to download it again, or "
                            f"replace it with {url}")
    needed, reason = [], ""
    for path, (name, url, md5) in zip(paths, files):
        if path.exists():
            continue
        log(f"downloading {name} for {dataset} from {url} ...")
        try:
            download_file(url, path, md5)
            log(f"{name} verified and saved to {path}")
        except DataError:  # a checksum mismatch says so itself (DataError is a ValueError too)
            raise
        # urllib's errors and timeouts are OSErrors; a cut-off transfer is an HTTPException.
        except (OSError, http.client.HTTPException, ValueError) as e:
            needed.append(f"{url} (MD5 {md5}) as {path}")
            reason = reason or failure_reason(e)
    if needed:
        raise DataError(f"cannot download {dataset} ({reason}); save "
                        f"{' and '.join(needed)}, then run again")
    return paths


def failure_reason(e: BaseException) -> str:
    """A short first line for a failed download: ``HTTP 404 Not Found``, ``timed out``, ..."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):  # wraps the socket error: DNS, refused, timeout
        e = e.reason if isinstance(e.reason, BaseException) else OSError(e.reason)
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__
