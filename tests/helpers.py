"""What several test files share: the pattern of a diagnosis, a seeded build, a batch, and a disk that fails."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import torch

from rnnreg import fsio
from rnnreg.batch import Batch, collate

T = TypeVar("T")

# Between the observation and the diagnosis of a failure message: "<invariant>: <observed>\n  Likely cause: <cause>".
CAUSE = r"(.|\n)*Likely cause: .*"


def fresh(build: Callable[[], T]) -> T:
    """``build()`` after ``torch.manual_seed(0)``: the same initial weights on every call."""
    torch.manual_seed(0)
    return build()


def corpus_batch(vocab_size: int = 40, num_classes: int = 3) -> Batch:
    """Six rows of lengths 7, 5, 3, 1, 6, 2 over ids 1..vocab_size-1 (T = 7): padding in most rows, a one-token row."""
    gen = torch.Generator().manual_seed(11)
    rows = [torch.randint(1, vocab_size, (n,), generator=gen).tolist() for n in (7, 5, 3, 1, 6, 2)]
    return collate([(ids, i % num_classes) for i, ids in enumerate(rows)])


def failing_os_write(monkeypatch: pytest.MonkeyPatch, err: int, after: int = 0) -> None:
    """``os.write`` (as fsio sees it) writes ``after`` bytes, then fails with ``err`` (ENOSPC, EIO)."""
    real_write, budget = os.write, [after]

    def write(fd: int, data: bytes | memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(err, os.strerror(err))
        n = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= n
        return n

    monkeypatch.setattr(fsio.os, "write", write)


def temp_files(folder: Path) -> list[str]:
    """The temporary files fsio's atomic writes left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))
