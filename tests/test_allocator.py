"""rnnreg.allocator: freed blocks stay in the process where glibc is the allocator, and nothing changes elsewhere."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from rnnreg import allocator

# Allocates and frees one 16 MiB tensor and prints how much resident memory the free gave back to the OS.
RELEASED = """
import os, sys, torch
from rnnreg.allocator import keep_freed_memory
if sys.argv[1] == "keep":
    print(keep_freed_memory(), file=sys.stderr)
page = os.sysconf("SC_PAGE_SIZE")
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
x = torch.ones(4 * 2**20)  # 16 MiB, touched
held = resident()
del x
print(held - resident())
"""
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def released_mib(mode: str, **env: str) -> tuple[float, str]:
    clean = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS and k != "LD_PRELOAD"}
    done = subprocess.run(
        [sys.executable, "-c", RELEASED, mode], env=clean | env, capture_output=True, text=True, check=True
    )
    return int(done.stdout) / 2**20, done.stderr.strip()


@pytest.mark.skipif(not GLIBC, reason="the setting exists only in glibc's malloc (Linux)")
def test_a_freed_16_mib_block_goes_back_to_the_os_by_default_and_stays_with_keep_freed_memory() -> None:
    default, _ = released_mib("default")
    kept, said = released_mib("keep")
    assert default > 12, f"glibc's default should unmap a 16 MiB block when freed; {default:.1f} MiB came back"
    assert kept < 4, f"keep_freed_memory should keep the 16 MiB block in the heap; {kept:.1f} MiB went back"
    assert said == "glibc, freed memory kept (mmap above 32 MiB, trim above 1 GiB)"


@pytest.mark.skipif(not GLIBC, reason="the setting exists only in glibc's malloc (Linux)")
def test_a_user_tuned_malloc_is_left_alone() -> None:
    released, said = released_mib("keep", MALLOC_TRIM_THRESHOLD_="0")
    assert said == "as the environment sets it (MALLOC_TRIM_THRESHOLD_: left alone)"
    assert released > 12  # nothing was changed: the block is unmapped as by default


def test_another_c_library_is_left_alone_and_the_answer_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("musl", "1.2"))
    assert allocator.keep_freed_memory() == "system default (not glibc: left alone)"
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert allocator.keep_freed_memory() == "system default (not glibc: left alone)"  # decided once per process


def test_a_preloaded_allocator_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_state", None)
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    for name in allocator.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/lib/libjemalloc.so.2")
    assert allocator.keep_freed_memory() == "as the environment sets it (LD_PRELOAD jemalloc: left alone)"
