"""rnnreg.batch: every index in exactly one batch, bucketing by length, determinism given the generator, padding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from rnnreg.batch import BUCKET_WINDOW_BATCHES, PAD_ID, batch_indices, iterate_batches

seeds = st.integers(0, 2**31 - 1)


@given(
    st.lists(st.integers(1, 30), max_size=300),
    st.integers(1, 20),
    st.booleans(),
    st.booleans(),
    seeds,
)
def test_every_index_lands_in_exactly_one_batch(
    lengths: list[int], batch_size: int, shuffle: bool, bucket: bool, seed: int
) -> None:
    batches = batch_indices(
        lengths, batch_size, shuffle=shuffle, bucket=bucket, generator=torch.Generator().manual_seed(seed)
    )
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == math.ceil(len(lengths) / batch_size)
    assert all(1 <= len(b) <= batch_size for b in batches)


@given(st.lists(st.integers(1, 30), max_size=400), st.integers(1, 4))
def test_bucketing_sorts_each_window_by_length(lengths: list[int], batch_size: int) -> None:
    batches = batch_indices(lengths, batch_size, shuffle=False, bucket=True)
    order = [i for b in batches for i in b]
    window = batch_size * BUCKET_WINDOW_BATCHES
    for start in range(0, len(order), window):
        chunk = [lengths[i] for i in order[start : start + window]]
        assert chunk == sorted(chunk)
        assert sorted(order[start : start + window]) == list(range(start, min(start + window, len(lengths))))


def _padding(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


@given(seeds)
def test_bucketing_cuts_padding_on_skewed_lengths(seed: int) -> None:
    lengths = np.clip(np.random.default_rng(0).lognormal(2.0, 0.8, size=2000).astype(int), 1, 200).tolist()
    bucketed = batch_indices(lengths, 16, shuffle=True, bucket=True, generator=torch.Generator().manual_seed(seed))
    random = batch_indices(lengths, 16, shuffle=True, bucket=False, generator=torch.Generator().manual_seed(seed))
    # Over 200 seeds the ratio measured 0.040-0.056; 0.15 leaves a wide margin, and no sorting gives about 1.
    assert _padding(bucketed, lengths) < 0.15 * _padding(random, lengths)


@given(seeds, st.booleans())
def test_batches_are_deterministic_given_the_generator_seed(seed: int, bucket: bool) -> None:
    encoded = [([1 + (i * 7) % 13] * (1 + i % 9), i % 2) for i in range(60)]

    def run() -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(seed)
        return [
            (b.tokens, b.lengths, b.labels)
            for b in iterate_batches(encoded, 8, shuffle=True, bucket=bucket, generator=gen)
        ]

    first, second = run(), run()
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y)


def test_shuffling_changes_the_order_between_seeds() -> None:
    lengths = list(range(1, 101))
    a = batch_indices(lengths, 4, shuffle=True, bucket=True, generator=torch.Generator().manual_seed(0))
    b = batch_indices(lengths, 4, shuffle=True, bucket=True, generator=torch.Generator().manual_seed(1))
    assert a != b
    assert batch_indices(lengths, 4, shuffle=False, bucket=False) == [list(range(s, s + 4)) for s in range(0, 100, 4)]


@given(seeds)
def test_iterate_batches_pads_each_example_into_its_row(seed: int) -> None:
    encoded = [([2 + (i % 5)] * (1 + (i * 3) % 7), i % 3) for i in range(37)]
    seen = 0
    for batch in iterate_batches(encoded, 5, shuffle=True, bucket=True, generator=torch.Generator().manual_seed(seed)):
        assert batch.tokens.dtype == batch.lengths.dtype == batch.labels.dtype == torch.int64
        for row in range(len(batch)):
            n = int(batch.lengths[row])
            ids = batch.tokens[row, :n].tolist()
            assert (ids, int(batch.labels[row])) in encoded
            assert (batch.tokens[row, n:] == PAD_ID).all()
        seen += len(batch)
    assert seen == len(encoded)


def test_batch_size_must_be_a_positive_int() -> None:
    with pytest.raises(ValueError, match=r"batch_size must be >= 1 \(got 0\)"):
        batch_indices([1, 2], 0, shuffle=False, bucket=False)
    with pytest.raises(TypeError, match=r"batch_size must be an int \(got 2\.0"):
        batch_indices([1, 2], 2.0, shuffle=False, bucket=False)  # type: ignore[arg-type]
