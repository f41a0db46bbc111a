"""Text data: tokenize, Vocab, datasets, collate into a padded Batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

PAD_ID = 0
UNK_ID = 1


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


def collate(examples: Sequence[tuple[Sequence[int], int]], pad_id: int = PAD_ID) -> Batch:
    """Pad ``(token_ids, label)`` pairs into a Batch; raises ValueError on empty input or an empty sequence."""
    if len(examples) == 0:
        raise ValueError("collate got no examples; a batch needs at least one (token_ids, label) pair")
    lengths = [len(ids) for ids, _ in examples]
    if min(lengths) == 0:
        i = lengths.index(0)
        raise ValueError(f"example {i} has no tokens; drop empty texts before batching (an RNN needs length >= 1)")
    tokens = torch.full((len(examples), max(lengths)), pad_id, dtype=torch.int64)
    for row, (ids, _) in enumerate(examples):
        tokens[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.int64)
    labels = torch.tensor([label for _, label in examples], dtype=torch.int64)
    return Batch(tokens, torch.tensor(lengths, dtype=torch.int64), labels)
