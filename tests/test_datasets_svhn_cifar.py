"""SVHN and CIFAR-10: decoding the canonical file formats, checksums, downloads, offline errors.

The fixtures are tiny files written here in the published layouts (SVHN's MATLAB v5 ``X``/``y``,
CIFAR-10's binary records in a .tar.gz), with pixel values given by a formula, so that every
pixel's position is checked against an independent description of the format.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from vaekit.cli.main import main
from vaekit.data import cifar, fetch, load_data, svhn
from vaekit.errors import DataError

# Published MD5s, written out independently of the modules' tables (torchvision's SVHN list,
# the CIFAR-10 download page).
PUBLISHED_MD5 = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    "cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530",
}
CIFAR_TRAIN_SIZES = (1, 2, 3, 1, 2)  # records in data_batch_1..5; distinct to check their order


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def pixel(n: int, c: int, h: int, w: int) -> int:
    """The value of example n, channel c, row h, column w in every fixture (distinct per c, h, w)."""
    return (37 * n + 101 * c + 7 * h + 3 * w) % 256


def expected_images(n: int) -> np.ndarray:
    """(n, 3, 32, 32) float32 from :func:`pixel`, scaled as vaekit scales uint8."""
    i = np.indices((n, 3, 32, 32))
    return (pixel(*i) % 256).astype(np.uint8) / np.float32(255)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def offline(monkeypatch):
    """Every download goes to a local port nobody listens on: refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"http://127.0.0.1:{port}/"
    monkeypatch.setattr(svhn, "BASE_URL", dead)
    monkeypatch.setattr(cifar, "URL", dead + cifar.FILENAME)
    return dead


# ----------------------------------------------------------------------------- SVHN fixture


SVHN_LABELS = {"train": [10, 1, 2, 10, 9], "test": [3, 10, 7]}  # as stored: 10 is the digit 0


def write_svhn_mat(path: Path, labels: list[int]) -> None:
    """SVHN's layout: X[h, w, c, n] uint8 of shape (32, 32, 3, n), y of shape (n, 1)."""
    n = len(labels)
    h, w, c, k = np.indices((32, 32, 3, n))
    x = (pixel(k, c, h, w) % 256).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"X": x, "y": np.array(labels, np.uint8).reshape(n, 1)})


@pytest.fixture
def svhn_files(cache, monkeypatch) -> dict[str, Path]:
    paths = {}
    for split, (name, _) in svhn.FILES.items():
        paths[split] = cache / "svhn" / name
        write_svhn_mat(paths[split], SVHN_LABELS[split])
    monkeypatch.setattr(svhn, "FILES", {s: (p.name, md5(p)) for s, p in paths.items()})
    return paths


def test_svhn_pixels_orientation_labels_and_split(svhn_files):
    ds = load_data("svhn")
    assert ds.x_train.shape == (5, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    assert ds.x_train.dtype == torch.float32 and ds.x_train.is_contiguous()
    np.testing.assert_array_equal(ds.x_train.numpy(), expected_images(5))
    np.testing.assert_array_equal(ds.x_test.numpy(), expected_images(3))
    # X[h=1, w=2, c=0, n=3] in the file is x[3, 0, 1, 2]: channel first, rows before columns.
    assert ds.x_train[3, 0, 1, 2].item() == pytest.approx(pixel(3, 0, 1, 2) / 255)
    assert ds.y_train.tolist() == [0, 1, 2, 0, 9] and ds.y_test.tolist() == [3, 0, 7]
    assert ds.y_train.dtype == torch.int64


def test_svhn_distinctive_pixel_lands_at_its_place(cache, monkeypatch):
    x = np.zeros((32, 32, 3, 2), np.uint8)
    x[1, 2, 0, 1] = 250  # row 1, column 2, red, second image
    x[5, 0, 2, 0] = 17  # row 5, column 0, blue, first image
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (cache / "svhn").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(cache / "svhn" / name, {"X": x, "y": np.array([[1], [10]], np.uint8)})
    monkeypatch.setattr(svhn, "FILES", {s: (n, md5(cache / "svhn" / n)) for s, (n, _) in
                                        svhn.FILES.items()})
    got = (load_data("svhn").x_train.numpy() * 255).round().astype(int)
    assert got[1, 0, 1, 2] == 250 and got[0, 2, 5, 0] == 17
    assert np.count_nonzero(got) == 2


def test_svhn_file_with_wrong_content_is_one_clear_error(cache, monkeypatch):
    bad = cache / "svhn" / "train_32x32.mat"
    bad.parent.mkdir(parents=True)
    scipy.io.savemat(bad, {"X": np.zeros((28, 28, 1, 2), np.uint8), "y": np.ones((2, 1))})
    monkeypatch.setattr(svhn, "FILES", {"train": (bad.name, md5(bad))})
    with pytest.raises(DataError, match=r"does not hold SVHN's X \(32, 32, 3, n\)"):
        load_data("svhn")


# ----------------------------------------------------------------------------- CIFAR-10 fixture


def cifar_record(n: int, label: int) -> bytes:
    """One record as the CIFAR page describes it: label byte, then R, G, B planes row by row."""
    plane = [pixel(n, c, h, w) for c in range(3) for h in range(32) for w in range(32)]
    return bytes([label, *plane])


def write_cifar_archive(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def cifar_members() -> tuple[dict[str, bytes], list[int], list[int]]:
    """The six batch files (plus the archive's text file), train labels, test labels."""
    members = {"cifar-10-batches-bin/batches.meta.txt": b"airplane\nautomobile\n"}
    n, y_train = 0, []
    for i, size in enumerate(CIFAR_TRAIN_SIZES, 1):
        blob = b""
        for _ in range(size):
            y_train.append((3 * n + 1) % 10)
            blob += cifar_record(n, y_train[-1])
            n += 1
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = blob
    y_test = [9, 0, 4]
    members["cifar-10-batches-bin/test_batch.bin"] = b"".join(
        cifar_record(k, y) for k, y in enumerate(y_test))
    return members, y_train, y_test


@pytest.fixture
def cifar_file(cache, monkeypatch) -> Path:
    path = cache / "cifar10" / cifar.FILENAME
    write_cifar_archive(path, cifar_members()[0])
    monkeypatch.setattr(cifar, "MD5", md5(path))
    return path


def test_cifar10_pixels_orientation_labels_and_split(cifar_file):
    _, y_train, y_test = cifar_members()
    ds = load_data("cifar10")
    n_train = sum(CIFAR_TRAIN_SIZES)
    assert ds.x_train.shape == (n_train, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    # Training examples in batch order 1..5, each batch's records in file order.
    np.testing.assert_array_equal(ds.x_train.numpy(), expected_images(n_train))
    np.testing.assert_array_equal(ds.x_test.numpy(), expected_images(3))
    # Byte 1 + 0*1024 + 1*32 + 2 of a record (red, row 1, column 2) is x[i, 0, 1, 2].
    assert ds.x_train[4, 0, 1, 2].item() == pytest.approx(pixel(4, 0, 1, 2) / 255)
    assert ds.y_train.tolist() == y_train and ds.y_test.tolist() == y_test


@pytest.mark.parametrize("damage, needle", [
    ("drop_test", "lacks cifar-10-batches-bin/test_batch.bin"),
    ("ragged", "not a whole number of 3073-byte records"),
    ("bad_label", "labels must be 0..9"),
    ("not_gzip", "not a readable .tar.gz"),
])
def test_cifar10_archive_with_wrong_content_is_one_clear_error(cache, monkeypatch, damage, needle):
    members, _, _ = cifar_members()
    path = cache / "cifar10" / cifar.FILENAME
    if damage == "drop_test":
        del members["cifar-10-batches-bin/test_batch.bin"]
    elif damage == "ragged":
        members["cifar-10-batches-bin/data_batch_2.bin"] += b"\0" * 10
    elif damage == "bad_label":
        members["cifar-10-batches-bin/test_batch.bin"] = cifar_record(0, 10)
    write_cifar_archive(path, members)
    if damage == "not_gzip":
        path.write_bytes(b"this is not an archive")
    monkeypatch.setattr(cifar, "MD5", md5(path))
    with pytest.raises(DataError, match=re.escape(needle)) as e:
        load_data("cifar10")
    assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- checksums


def test_published_checksums():
    assert {n: m for n, m in svhn.FILES.values()} == {
        k: v for k, v in PUBLISHED_MD5.items() if k.endswith(".mat")}
    assert cifar.MD5 == PUBLISHED_MD5[cifar.FILENAME]


@pytest.mark.parametrize("name", ["svhn", "cifar10"])
def test_cached_file_with_wrong_checksum_is_refused_before_parsing(name, cache, offline,
                                                                     monkeypatch):
    # The real published MD5s stay in place; the fixture file cannot match them.
    path = cache / name / ("train_32x32.mat" if name == "svhn" else cifar.FILENAME)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the real file")
    monkeypatch.setattr(svhn, "read_mat", lambda p: pytest.fail("parsed before the checksum"))
    monkeypatch.setattr(cifar, "read_archive", lambda p: pytest.fail("parsed before the checksum"))
    with pytest.raises(DataError) as e:
        load_data(name)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in (str(path), hashlib.md5(b"not the real file").hexdigest(),
                   PUBLISHED_MD5[path.name], "delete it"):
        assert needle in msg, msg
    assert path.read_bytes() == b"not the real file"  # the user's file is left alone


# ----------------------------------------------------------------------------- offline, downloads


def test_offline_error_names_every_missing_file_its_url_md5_and_place(cache, offline):
    with pytest.raises(DataError) as e:
        load_data("svhn")
    msg = str(e.value)
    assert "\n" not in msg and "refused" in msg
    for name in ("train_32x32.mat", "test_32x32.mat"):
        for needle in (offline + name, PUBLISHED_MD5[name], str(cache / "svhn" / name)):
            assert needle in msg, msg
    assert list((cache / "svhn").iterdir()) == []  # no partial download left behind


def test_offline_error_asks_only_for_what_is_missing(cache, offline, monkeypatch):
    write_svhn_mat(cache / "svhn" / "train_32x32.mat", [1, 2])
    train_md5 = md5(cache / "svhn" / "train_32x32.mat")
    monkeypatch.setattr(svhn, "FILES", {"train": ("train_32x32.mat", train_md5),
                                        "test": svhn.FILES["test"]})
    with pytest.raises(DataError) as e:
        load_data("svhn")
    assert "test_32x32.mat" in str(e.value) and "train_32x32.mat" not in str(e.value)


def test_offline_cli_train_exits_2_with_one_line(cache, offline, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "cifar10", "--out", str(run), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in (cifar.FILENAME, PUBLISHED_MD5[cifar.FILENAME],
                   str(cache / "cifar10" / cifar.FILENAME), offline + cifar.FILENAME):
        assert needle in lines[0], lines[0]
    assert not run.exists()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server for tmp_path/www: the real download code path, without internet."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def test_download_then_cache_reuse(cache, server, monkeypatch):
    root, url = server
    write_cifar_archive(root / cifar.FILENAME, cifar_members()[0])
    monkeypatch.setattr(cifar, "URL", url + cifar.FILENAME)
    monkeypatch.setattr(cifar, "MD5", md5(root / cifar.FILENAME))
    logs = []
    ds = load_data("cifar10", log=logs.append)
    cached = cache / "cifar10" / cifar.FILENAME
    assert cached.read_bytes() == (root / cifar.FILENAME).read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cifar.FILENAME]  # temp file renamed
    assert any("verified" in s for s in logs)
    (root / cifar.FILENAME).unlink()  # a second load must not need the server
    again = load_data("cifar10", log=logs.append)
    np.testing.assert_array_equal(again.x_train.numpy(), ds.x_train.numpy())


def test_download_with_wrong_checksum_leaves_nothing(cache, server, monkeypatch):
    root, url = server
    (root / "train_32x32.mat").write_bytes(b"tampered")
    (root / "test_32x32.mat").write_bytes(b"tampered")
    monkeypatch.setattr(svhn, "BASE_URL", url)
    with pytest.raises(DataError) as e:
        load_data("svhn")
    assert "downloaded file has MD5 " + hashlib.md5(b"tampered").hexdigest() in str(e.value)
    assert list((cache / "svhn").iterdir()) == []


def test_http_error_is_named(cache, server, monkeypatch):
    _, url = server
    monkeypatch.setattr(cifar, "URL", url + "missing.tar.gz")
    with pytest.raises(DataError, match="HTTP 404"):
        load_data("cifar10")


def test_datasets_command_lists_them(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^svhn\s+SVHN", out, re.M) and re.search(r"^cifar10\s+CIFAR-10", out, re.M)


def test_downloads_use_a_short_timeout(cache, monkeypatch):
    # An unreachable host must fail within seconds, not after the OS's minutes-long default.
    seen = []

    def silent_host(url, timeout=None):
        seen.append(timeout)
        raise urllib.error.URLError(socket.timeout("timed out"))

    monkeypatch.setattr(fetch.urllib.request, "urlopen", silent_host)
    with pytest.raises(DataError, match=r"cannot download cifar10 \(timed out\)"):
        load_data("cifar10")
    assert seen and all(t is not None and 0 < t <= 10 for t in seen)


def test_datasets_marks_what_is_in_the_cache(tmp_path, monkeypatch, capsys):
    from vaekit.cli.main import main

    monkeypatch.setenv("VAEKIT_DATA", str(tmp_path))
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-binary.tar.gz").write_bytes(b"")
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "train_32x32.mat").write_bytes(b"")  # the test file is still missing
    assert main(["datasets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert lines["cifar10"].endswith("[cached]")
    assert not lines["svhn"].endswith("[cached]") and not lines["mnist"].endswith("[cached]")
    assert not lines["digits"].endswith("[cached]")
