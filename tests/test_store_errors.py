"""Library exceptions that are user errors (out of memory, a full or read-only disk) map to one
clear VaekitError; the user-error kinds are ValueErrors too, as scikit-learn expects."""

import errno

import pytest
import torch

from vaekit.errors import (ConfigError, DataError, OutOfMemory, RunDirError, VaekitError,
                           user_error)


@pytest.mark.parametrize("kind", [DataError, ConfigError, RunDirError])
def test_user_error_kinds_are_value_errors(kind):
    assert issubclass(kind, VaekitError) and issubclass(kind, ValueError)


@pytest.mark.parametrize("exc,where", [
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                  "memory: you tried to allocate 80000000000 bytes. Error code 12"), "host"),
    (RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB"), "host"),
    (RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 15.78 GiB total)"), "GPU"),
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "GPU"),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), "GPU (MPS)"),
    (MemoryError(), "host"),
    (OSError(errno.ENOMEM, "Cannot allocate memory"), None),
])
def test_out_of_memory_says_so_and_what_to_try(exc, where):
    mapped = user_error(exc)
    assert isinstance(mapped, OutOfMemory) and isinstance(mapped, VaekitError)
    msg = str(mapped)
    assert msg.startswith("out of memory") and "\n" not in msg
    assert where is None or f"on the {where}" in msg
    for hint in ("-n", "--k", "--batch-size", "--eval-batch-size", "--prior-components", "--stream"):
        assert hint in msg


def test_a_real_cpu_allocation_failure_maps(monkeypatch):
    try:
        torch.empty(2 ** 62, dtype=torch.uint8)
    except RuntimeError as e:
        assert isinstance(user_error(e), OutOfMemory)
    else:  # pragma: no cover - an allocator that says yes to 4 EiB
        pytest.skip("the allocator accepted the request")


@pytest.mark.parametrize("err,needle", [
    (OSError(errno.ENOSPC, "No space left on device", "/run/model.safetensors"), "disk full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/run/x"), "disk full"),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/run/config.json"), "read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/run/x"), "permission denied"),
])
def test_disk_errors_name_the_file_and_what_to_do(err, needle):
    mapped = user_error(err)
    assert isinstance(mapped, VaekitError) and needle in str(mapped)
    assert err.filename in str(mapped) and "--out" in str(mapped)


@pytest.mark.parametrize("exc", [RuntimeError("shape mismatch"), ValueError("x"), KeyError("k"),
                                 OSError(errno.ENOENT, "No such file"), TypeError("bug")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(exc):
    assert user_error(exc) is None


def test_a_vaekit_error_maps_to_itself():
    e = DataError("bad")
    assert user_error(e) is e
