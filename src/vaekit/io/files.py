"""Crash-safe file writing (temp file, flush, fsync, rename) and guarded reading.

A reader never sees a half-written file: it finds the old version or the new one. A reader
never blocks on a FIFO or device that sits where a file should be, and never reads more than
it was told to expect.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import queue
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

from vaekit.errors import VaekitError

from .stops import held_stops

UMASK = os.umask(0)
os.umask(UMASK)

# Test hook for bench/kill_resume.py, tests/test_store_checkpoint.py and tests/test_battery_stop.py:
# SIGKILL this process right after its Nth atomic write, so recovery can be tested at every
# write boundary, and log each write's path. KILL_SIGNAL_ENV names another signal to send
# (SIGTERM, SIGINT: a stop request at that boundary). Read once at import; unset, it costs one
# integer test per write.
KILL_AFTER_ENV, WRITE_LOG_ENV = "VAEKIT_TEST_KILL_AFTER_WRITES", "VAEKIT_TEST_WRITE_LOG"
KILL_SIGNAL_ENV = "VAEKIT_TEST_KILL_SIGNAL"
try:
    _KILL_AFTER = int(os.environ.get(KILL_AFTER_ENV, "0"))
except ValueError:
    _KILL_AFTER = 0
_KILL_SIGNAL = getattr(signal, os.environ.get(KILL_SIGNAL_ENV, "SIGKILL"), signal.SIGKILL)
_WRITE_LOG = os.environ.get(WRITE_LOG_ENV, "")
_writes = 0


def _fault() -> None:
    # SIGKILL: no cleanup, no flush, as a real kill -9; another signal is a stop request
    os.kill(os.getpid(), _KILL_SIGNAL)


def _after_write(path: Path) -> None:
    global _writes
    _writes += 1
    if _WRITE_LOG:
        with open(_WRITE_LOG, "a") as f:
            f.write(f"{_writes}\t{path}\n")
    if _KILL_AFTER and _writes == _KILL_AFTER:
        _fault()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (same-directory temp file + ``os.replace``).

    Inside :func:`deferred_sync`, the fsync and the rename are left to a background thread
    that does them in the order of the writes, so the caller does not wait for the disk.
    """
    with held_stops():  # a stop request never leaves the temp file behind
        _atomic_write_bytes(Path(path), data)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    if _deferred is not None:
        _deferred.raise_error()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{NONCE}-", suffix=".tmp")
    except OSError as e:
        raise VaekitError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o666 & ~UMASK)  # mkstemp makes 0600; give the usual permissions
        if _deferred is not None:
            f = os.fdopen(fd, "wb")
            try:
                f.write(data)
                f.flush()
            except BaseException:
                f.close()
                raise
            _deferred.put(f, tmp, path)  # it closes the file
            return
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise VaekitError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    _written(path)


def _written(path: Path) -> None:
    if _KILL_AFTER or _WRITE_LOG:
        _after_write(path)


class _DeferredSync:
    """One thread that makes written temp files durable (fsync) and renames them into place,
    in the order they were written: the same files, the same order of replacements, and
    the same guarantee after a crash (a file is replaced only once its data are on disk)."""

    def __init__(self) -> None:
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None  # the first failure; later writes are dropped
        self.raised = False
        self.thread = threading.Thread(target=self.run, name="vaekit-sync", daemon=True)
        self.thread.start()

    def put(self, f, tmp: str, path: Path) -> None:
        self.queue.put((f, tmp, path))

    def run(self) -> None:
        while (item := self.queue.get()) is not None:
            f, tmp, path = item
            try:
                with f:
                    if self.error is None:
                        os.fsync(f.fileno())
                if self.error is None:
                    os.replace(tmp, path)
                    _written(path)
                else:  # a failed write stops the later ones: their order must hold
                    Path(tmp).unlink(missing_ok=True)
            except BaseException as e:  # raised in the writing thread at its next write
                Path(tmp).unlink(missing_ok=True)
                if self.error is None:
                    self.error = (VaekitError(f"cannot write {path}: {e.strerror or e}")
                                  if isinstance(e, OSError) else e)
            finally:
                self.queue.task_done()
        self.queue.task_done()

    def drain(self) -> None:
        """Wait until every write so far is in place."""
        self.queue.join()

    def raise_error(self) -> None:
        """Raise the first failure in the caller's thread, once."""
        if self.error is not None and not self.raised:
            self.raised = True
            raise self.error

    def stop(self) -> None:
        self.queue.put(None)
        self.thread.join()


_deferred: _DeferredSync | None = None


@contextlib.contextmanager
def deferred_sync() -> Iterator[None]:
    """Within this block, :func:`atomic_write_bytes` returns once the data are written to the
    temp file; a background thread fsyncs and renames in order. On leaving (also by an
    exception) every write is in place, and a failed one raises. Nested blocks share one."""
    global _deferred
    if _deferred is not None:
        yield
        return
    _deferred = _DeferredSync()
    try:
        yield
    finally:
        d, _deferred = _deferred, None
        d.drain()
        d.stop()
        if sys.exc_info()[0] is None:
            d.raise_error()


def drain_writes() -> None:
    """Wait until every deferred write is in place (before reading a file just written)."""
    if _deferred is not None:
        _deferred.drain()
        _deferred.raise_error()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by None: ``NaN`` and ``Infinity`` are not
    JSON, and a strict reader (ours, or any other language's) refuses them."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_dumps(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text of ``obj`` (non-finite floats become ``null``)."""
    return json.dumps(json_safe(obj), indent=indent, allow_nan=False)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (see :func:`json_dumps`), atomically."""
    atomic_write_text(path, json_dumps(obj, indent=2) + "\n")


def read_regular(path: str | Path, limit: int, error: type[VaekitError] = VaekitError) -> bytes:
    """The bytes of the regular file ``path``, refusing anything else.

    Parameters
    ----------
    path : path
    limit : int
        Most bytes expected; a larger file is refused before it is read.
    error : type
        The :class:`VaekitError` subclass to raise.

    Raises
    ------
    error
        ``path`` is missing, unreadable, not a regular file (a FIFO would block a plain
        ``open`` forever: it is opened non-blocking and checked with ``fstat``), or too large.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except OSError as e:
        raise error(f"cannot read {path}: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # checked before fdopen, which refuses a folder itself
        os.close(fd)
        raise error(f"{path} is not a regular file (a folder, FIFO, socket or device); "
                    "vaekit reads only plain files")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise error(f"{path} is {st.st_size:,} bytes, more than the {limit:,} expected of it; "
                        "it is not a file vaekit wrote")
        try:
            data = f.read(st.st_size + 1)  # +1: notice a file that grows while being read
        except OSError as e:
            raise error(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > limit:
        raise error(f"{path} is larger than the {limit:,} bytes expected of it")
    return data


# This process's mark, in the names of its temp files and in the lock files it held: a temp file
# is removed only when its mark is one a lock file recorded (proof that vaekit wrote it).
NONCE = os.urandom(4).hex()
MAX_WRITERS = 32  # marks a lock file keeps (the writers since its folder was created)
_HELD: dict[str, list[int]] = {}  # folder -> [lock fd, depth]: a lock is reentrant in a process


@contextlib.contextmanager
def exclusive_lock(folder: Path, name: str, error: type[VaekitError] = VaekitError) -> Iterator[None]:
    """Hold an exclusive, non-blocking ``flock`` on ``folder/name``; the kernel drops it when
    the process dies (even by SIGKILL), so a stale lock never needs removing by hand.

    Raises ``error`` if another process holds it (naming that process's pid) or the file
    cannot be created. Reentrant within a process. A folder this call had to create is
    removed again on the way out if nothing but the lock file is in it.
    """
    key = os.path.realpath(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    folder, created = Path(folder), not Path(folder).exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise error(f"cannot lock run directory {folder} ({e.strerror or e}): it must be a "
                    "writable folder; choose another --out") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pid = (os.pread(fd, 32, 0).decode(errors="replace").split() or ["unknown"])[0]
        os.close(fd)
        raise error(f"{folder} is in use by another vaekit process (pid {pid}); wait for it to "
                    "finish, or choose another --out") from None
    with contextlib.suppress(OSError):  # the pid for the message; the writers' marks
        marks = [m for m in _marks(os.pread(fd, 4096, 0)) if m != NONCE][-(MAX_WRITERS - 1):]
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\nwriters {' '.join([*marks, NONCE])}\n".encode(), 0)
    _HELD[key] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[key]
        if created and os.listdir(folder) == [name]:
            with contextlib.suppress(OSError):
                (folder / name).unlink()
                folder.rmdir()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _marks(content: bytes) -> list[str]:
    """The writers' marks a lock file's ``content`` records (its ``writers`` line)."""
    for line in content.decode(errors="replace").splitlines():
        if line.startswith("writers "):
            return [m for m in line.split()[1:] if len(m) == 8 and all(c in "0123456789abcdef" for c in m)]
    return []


def lock_writers(folder: Path, name: str) -> set[str]:
    """The marks of the processes that held the lock ``folder/name`` (each wrote its temp files
    with its mark); empty when there is no lock file or it cannot be read."""
    try:
        fd = os.open(Path(folder) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return set()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return set()
        return set(_marks(os.pread(fd, 4096, 0)))
    finally:
        os.close(fd)
