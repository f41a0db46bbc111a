"""How many cores this process may use, and how many of them are free: one count for the sweep and the benchmarks."""

from __future__ import annotations

import math
import os


def available_cores() -> int:
    """Cores this process may use (the affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def free_cores() -> int:
    """The default thread count: cores this process may use, less the machine's load (1-minute average), >= 1.

    On a shared machine a thread more than the free cores waits for a busy core at every parallel region.
    """
    allowed = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    idle = (os.cpu_count() or allowed) - load
    return max(1, min(allowed, math.floor(idle + 0.5)))
