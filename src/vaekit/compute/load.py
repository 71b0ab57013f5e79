"""How many cores other processes keep busy, from /proc/stat, without waiting for it.

The window of the measurement opens when this module is first imported (the CLI imports it
before torch), so a command's own start-up is the window, and this process's CPU time over it
is subtracted; the 0.2 s sleep that a measurement from scratch needs is paid only where the
window is shorter than that, or older than :data:`MAX_AGE` (a long-lived Python session).
No torch here, so that importing it costs nothing.
"""

from __future__ import annotations

import os
import time

MIN_WINDOW = 0.2  # seconds: /proc/stat counts in ticks of 10 ms
MAX_AGE = 10.0  # seconds: an older window says little about the machine now


def _sample() -> tuple[float, int, int, float] | None:
    """(wall clock, total ticks, idle + iowait ticks, this process's CPU seconds), or None
    where /proc/stat cannot be read."""
    try:
        with open("/proc/stat") as f:
            v = [int(t) for t in f.readline().split()[1:]]
        return time.monotonic(), sum(v), v[3] + (v[4] if len(v) > 4 else 0), time.process_time()
    except (OSError, ValueError, IndexError):
        return None


_window = _sample()


def busy_cores() -> float:
    """Cores kept busy by other processes since the window opened (this process's own CPU time
    left out); the 1-minute load average where /proc/stat is missing. Opens a new window."""
    global _window
    start = _window
    if start is None or time.monotonic() - start[0] > MAX_AGE:
        start = _sample()
    if start is not None and time.monotonic() - start[0] < MIN_WINDOW:
        time.sleep(MIN_WINDOW - (time.monotonic() - start[0]))
    end = _window = _sample()
    if start is None or end is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    cores = os.cpu_count() or 1
    busy = cores * (1 - (end[2] - start[2]) / max(end[1] - start[1], 1))
    own = (end[3] - start[3]) / max(end[0] - start[0], 1e-9)
    return max(0.0, busy - own)
