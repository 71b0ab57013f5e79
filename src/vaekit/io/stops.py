"""Stop requests (Ctrl-C, SIGTERM): honoured between units of work, never inside one.

One mechanism serves every loop (training of every kind, importance sampling, sampler fitting,
export): SIGINT raises ``KeyboardInterrupt`` (Python's default), and inside
:func:`stop_requests` SIGTERM raises :class:`Terminated`, a ``KeyboardInterrupt`` too. Either
surfaces at the main thread's next Python instruction, so no loop has to poll a flag, and the
``finally`` blocks on the way out remove temp files and release the run's lock.

What must not be cut in two is a *unit* of files that belong together: one epoch's results
(images, latent map, weights, checkpoint, metrics), a sampler's tensors and the record that
vouches for them, an export's graphs and the ``export.json`` that names their checksums, and
each single atomic write (temp file created, written, renamed, or removed). Such a unit is
written inside :func:`held_stops`: a stop request that comes meanwhile is held and honoured the
moment the unit is complete (a unit is a few file writes: well under a second).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

STOPS = (signal.SIGINT, signal.SIGTERM)
_holding = False  # inside the outermost held_stops block of the main thread


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler or ``kill``): stopped like Ctrl-C, reported with status 143."""


def sigterm_as_interrupt(signum, frame):  # noqa: ARG001 (signal API)
    raise Terminated


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def stop_requests(whole_process: bool = False) -> Iterator[None]:
    """Within this block SIGTERM stops the process like Ctrl-C (raises :class:`Terminated`);
    the previous handler comes back on leaving. Outside the main thread, signals are left alone.

    ``whole_process``: the block is all the work of the process (the ``vaekit`` command), which
    only exits once it ends; then SIGINT and SIGTERM are ignored from there on instead, since a
    request that came during the exit would change nothing but its status (a death by the
    signal, or a KeyboardInterrupt traceback, in place of the command's own status).
    """
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, sigterm_as_interrupt)
    try:
        yield
    finally:
        if whole_process:
            for s in STOPS:
                signal.signal(s, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def held_stops() -> Iterator[None]:
    """Write one unit of files: SIGINT and SIGTERM that arrive inside the block are held, and
    the first is delivered to its own handler when the block ends (also when it ends by an
    exception), so a stop request never leaves half a unit. Nested blocks make one unit;
    outside the main thread (where no handler runs) this does nothing. A signal that is
    ignored (``SIG_IGN``) stays ignored; one with the default action still ends the process,
    after the unit."""
    global _holding
    if _holding or not _main_thread():
        yield
        return
    arrived: list[int] = []
    previous: dict[int, object] = {}
    try:
        for s in STOPS:
            handler = signal.getsignal(s)
            if callable(handler) or handler == signal.SIG_DFL:
                previous[s] = signal.signal(s, lambda signum, frame: arrived.append(signum))
        _holding = True
        yield
    finally:
        _holding = False
        for s, handler in previous.items():
            signal.signal(s, handler)
        if arrived:
            _deliver(arrived[0], previous[arrived[0]])


def _deliver(signum: int, handler) -> None:
    """Run ``handler`` for the held ``signum`` (it raises), or let the default action happen."""
    if callable(handler):
        handler(signum, None)
    else:  # SIG_DFL, restored above: the process ends by the signal, as it would have
        signal.raise_signal(signum)


__all__ = ["STOPS", "Terminated", "held_stops", "sigterm_as_interrupt", "stop_requests"]
