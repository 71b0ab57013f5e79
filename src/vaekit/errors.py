"""User-facing errors.

Anything a user can get wrong (data, flags, run directories) raises a subclass of
:class:`VaekitError`; the CLI turns it into one line ``error: ...`` and exit status 2.
:func:`user_error` names the few library exceptions that are user errors too (out of memory,
a full or read-only disk). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno


class VaekitError(Exception):
    """A problem with the user's input, stated with what to do about it."""


# The three kinds are ValueErrors too: scikit-learn's checks (and users' ``except ValueError``)
# expect a bad argument to raise ValueError.
class DataError(VaekitError, ValueError):
    """Data that cannot be read or used (unreadable file, NaN, ragged rows, ...)."""


class ConfigError(VaekitError, ValueError):
    """A bad option value or configuration key."""


class RunDirError(VaekitError, ValueError):
    """A run directory that is missing, incomplete, damaged, in use or would be overwritten."""


class OutOfMemory(VaekitError, MemoryError):
    """The host or the GPU ran out of memory for what was asked."""


# Substrings of torch's out-of-memory RuntimeErrors: CPU (c10 DefaultCPUAllocator, "not enough
# memory" on Windows), CUDA, MPS, and HIP. torch raises RuntimeError here, not MemoryError.
_OOM_MARKERS = ("DefaultCPUAllocator: can't allocate memory", "not enough memory",
                "CUDA out of memory", "out of memory", "CUDNN_STATUS_ALLOC_FAILED",
                "std::bad_alloc", "Cannot allocate memory")
_OOM_HINT = ("use less at once: a smaller -n / --k / --importance-samples / --batch-size / "
             "--eval-batch-size / --prior-components / model (--hidden, --latent-dim), "
             "or train data larger than memory with --stream")


def user_error(exc: BaseException) -> VaekitError | None:
    """The user error that ``exc`` stands for, or None if it is a bug (keep the traceback).

    Parameters
    ----------
    exc : BaseException
        Any exception that reached the top level.

    Returns
    -------
    VaekitError or None
        ``exc`` itself when it already is one; an :class:`OutOfMemory` for ``MemoryError`` and
        torch's out-of-memory ``RuntimeError`` (CPU allocator, CUDA, MPS); a :class:`VaekitError`
        for a full disk (ENOSPC, EDQUOT) and for writes refused by the system (EROFS, EACCES,
        EPERM); None for anything else.
    """
    if isinstance(exc, VaekitError):
        return exc
    if isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError)
                                        and any(m in str(exc) for m in _OOM_MARKERS)):
        where = "GPU" if "CUDA" in str(exc) or "HIP" in str(exc) else (
            "GPU (MPS)" if "MPS" in str(exc) else "host")
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return OutOfMemory(f"out of memory on the {where} ({first}); {_OOM_HINT}")
    if isinstance(exc, OSError) and exc.errno is not None:
        what = f" {exc.filename}" if exc.filename else ""
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return VaekitError(f"disk full: cannot write{what} ({exc.strerror}); free some space "
                               "or write somewhere else (--out)")
        if exc.errno == errno.EROFS:
            return VaekitError(f"cannot write{what}: the file system is read-only; write "
                               "somewhere else (--out)")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return VaekitError(f"permission denied for{what or ' a file'}; check its "
                               "permissions, or write somewhere else (--out)")
        if exc.errno == errno.ENOMEM:
            return OutOfMemory(f"out of memory ({exc.strerror}); {_OOM_HINT}")
    return None
