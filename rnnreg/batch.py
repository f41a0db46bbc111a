"""Padded batches: ``PAD_ID``, :class:`Batch`, :func:`collate` and length-bucketed batch order.

The one room every consumer of batches shares — the step, the model, the checking toolkit, the benchmarks — so
none of them imports the data sources (and with them the downloader). Imports nothing else from rnnreg.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

PAD_ID = 0


def _check_count(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (got {value!r} that is a {type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (got {value})")


@dataclass(frozen=True)
class Batch:
    """A padded batch: ``tokens[B, T]`` int64 (pads = PAD_ID), ``lengths[B]`` int64 on the CPU, ``labels[B]`` int64."""

    tokens: Tensor
    lengths: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: torch.device | str) -> Batch:
        """Move tokens and labels; lengths stay on the CPU (packing and masks want them there)."""
        return Batch(self.tokens.to(device), self.lengths, self.labels.to(device))


_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)
_INT64_MAX = 2**63 - 1


def _token_ids(ids: object, row: int) -> Tensor:
    """One example's ids as a 1-D int64 tensor, or a TypeError/ValueError naming the example."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, Tensor, np.ndarray)):
        raise TypeError(f"example {row}: token ids must be a list of ints (got a {type(ids).__name__}: {ids!r:.60})")
    try:
        t = torch.as_tensor(ids)
    except (RuntimeError, TypeError, ValueError, OverflowError) as e:  # None, str, an int beyond int64 inside
        raise ValueError(f"example {row}: token ids must be ints in the int64 range (got {ids!r:.60}; {e})") from None
    if t.dim() != 1 or (len(t) and t.dtype not in _INT_DTYPES):
        raise TypeError(f"example {row}: token ids must be a flat list of ints (got dtype {t.dtype}: {ids!r:.60})")
    return t.to(torch.int64)


def _class_id(label: object, row: int) -> int:
    try:
        if isinstance(label, (bool, np.bool_)):
            raise TypeError
        value = operator.index(label)  # type: ignore[arg-type]  # ints, NumPy ints, 1-element int tensors
    except TypeError:
        raise TypeError(f"example {row}: the label must be an int class id (got {label!r:.40})") from None
    if not 0 <= value <= _INT64_MAX:
        raise ValueError(f"example {row}: the label must be a class id >= 0 (got {value})")
    return value


def collate(examples: Sequence[tuple[Sequence[int], int]], pad_id: int = PAD_ID) -> Batch:
    """Pad ``(token_ids, label)`` pairs into a Batch; raises ValueError/TypeError naming the first bad example."""
    if len(examples) == 0:
        raise ValueError("collate got no examples; a batch needs at least one (token_ids, label) pair")
    rows, labels = [], []
    for i, example in enumerate(examples):
        if isinstance(example, (str, bytes)) or not isinstance(example, Sequence) or len(example) != 2:
            raise TypeError(f"example {i} must be a (token_ids, label) pair (got {example!r:.60})")
        rows.append(_token_ids(example[0], i))
        labels.append(_class_id(example[1], i))
    lengths = [len(ids) for ids in rows]
    if min(lengths) == 0:
        i = lengths.index(0)
        raise ValueError(f"example {i} has no tokens; drop empty texts before batching (an RNN needs length >= 1)")
    tokens = torch.full((len(examples), max(lengths)), pad_id, dtype=torch.int64)
    for row, ids in enumerate(rows):
        tokens[row, : len(ids)] = ids
    return Batch(tokens, torch.tensor(lengths, dtype=torch.int64), torch.tensor(labels, dtype=torch.int64))


BUCKET_WINDOW_BATCHES = 50  # sort by length within windows of 50 batches: little padding, batches still vary


def batch_indices(
    lengths: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool,
    bucket: bool,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Group ``range(len(lengths))`` into batches of ``batch_size`` (the last may be smaller), each index once.

    ``shuffle`` permutes the examples and then the order of the batches, drawing from ``generator`` (torch's
    global generator when None). ``bucket`` sorts every window of ~50 batches by length before cutting it, so
    batch-mates have similar lengths and padding shrinks.
    """
    _check_count("batch_size", batch_size, 1)
    sizes = [int(x) for x in lengths]
    n = len(sizes)
    order = torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))
    if bucket:
        window = batch_size * BUCKET_WINDOW_BATCHES
        order = [i for s in range(0, n, window) for i in sorted(order[s : s + window], key=sizes.__getitem__)]
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    if shuffle:
        # Sorted windows would otherwise run from short to long batches, the same way in every epoch.
        batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
    return batches


def iterate_batches(
    encoded: Sequence[tuple[Sequence[int], int]],
    batch_size: int,
    *,
    shuffle: bool,
    bucket: bool,
    generator: torch.Generator | None = None,
) -> Iterator[Batch]:
    """Padded Batches over ``encoded`` in the order of :func:`batch_indices`."""
    lengths = [len(ids) for ids, _ in encoded]
    for idx in batch_indices(lengths, batch_size, shuffle=shuffle, bucket=bucket, generator=generator):
        yield collate([encoded[i] for i in idx])
