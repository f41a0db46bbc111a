"""What the toolkit's tests (tests/test_check_*.py) share: the pattern of a diagnosis, a seeded build, a batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch

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
