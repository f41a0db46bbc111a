"""Keep freed memory in the process, so that each training step reuses the pages of the step before.

With glibc's defaults a block over 128 KiB comes from its own ``mmap`` and goes back to the OS when freed; the
threshold then grows with the blocks freed, and the top of the heap is trimmed whenever twice that much is free
there. A training step allocates and frees the same large blocks every time (the embedding's gradient alone is
V x E floats), so depending on the history of the process each step may fault fresh zeroed pages in again.
Measured on the main job's step (movies, batch 64, embed and hidden 128, one thread, a 2-core AMD EPYC, glibc
2.36): a process that alternates steps of two models took 55-58 ms a step with ~6,000 page faults each, 43-45 ms
and none with the settings below; one model trained over a movies epoch took 4.30-4.54 s with 360-580 faults a
step, 4.22-4.39 s with 197. Nothing else changes: the same kernels, the same numbers.

The cost is memory: a process keeps up to :data:`TRIM_THRESHOLD` of freed heap instead of returning it, which for
the models trained here is far more than they ever free at once. Only the processes rnnreg starts for itself call
:func:`keep_freed_memory` (the CLI, the sweep's workers, the benchmarks); a library user may call it too. It does
nothing where malloc is not glibc's, or where the user has tuned glibc's malloc through its environment variables.
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt's parameter numbers (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest value glibc accepts on 64-bit: blocks up to 32 MiB come from the heap
TRIM_THRESHOLD = 2**30  # free heap kept at its top before any is returned to the OS
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
OTHER_MALLOCS = ("jemalloc", "tcmalloc", "mimalloc")  # preloaded in place of glibc's

_state: str | None = None  # what keep_freed_memory did in this process, once it has run


def keep_freed_memory() -> str:
    """Ask glibc's malloc to keep freed blocks for reuse; returns what this process's allocator does, in words.

    Safe to call more than once and from any process; the settings last for the life of the process.
    """
    global _state
    if _state is not None:
        return _state
    user = [name for name in USER_SETTINGS if os.environ.get(name)]
    user += [f"LD_PRELOAD {name}" for name in OTHER_MALLOCS if name in os.environ.get("LD_PRELOAD", "")]
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = "system default (not glibc: left alone)"
    elif user:
        _state = f"as the environment sets it ({', '.join(user)}: left alone)"
    else:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        _state = "glibc, freed memory kept (mmap above 32 MiB, trim above 1 GiB)" if ok else "glibc defaults (refused)"
    return _state
