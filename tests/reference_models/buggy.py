"""Planted bugs in clipping, locked / embedding dropout, weight drop and decay groups; each is one realistic mistake
away from a correct version in correct.py (the buggy training steps are in steps.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_models.correct import VOCAB, AWDEmbeddingDropout, FunctionalWeightDrop

# ---------------------------------------------------------------------------------------------------------------
# Clipping
# ---------------------------------------------------------------------------------------------------------------


def clip_consumes_generator_twice(parameters: Any, max_norm: float) -> Tensor:
    """Norm over the generator, then a scaling loop over the same (now empty) generator."""
    total = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters if p.grad is not None]))
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def clip_to_half(parameters: Any, max_norm: float) -> Tensor:
    """Over-clipping: scales to half of max_norm."""
    params = [p for p in parameters if p.grad is not None]
    total = nn.utils.get_total_norm([p.grad for p in params])
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for p in params:
        p.grad.mul_(coef * 0.5 if total > max_norm else coef)
    return total


# ---------------------------------------------------------------------------------------------------------------
# Locked dropout
# ---------------------------------------------------------------------------------------------------------------


class CachedLockedDropout(nn.Module):
    """Draws its (B, 1, D) mask on the first call and reuses it."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.mask: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return x
        if self.mask is None or self.mask.shape[0] != x.shape[0]:
            self.mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * self.mask


# ---------------------------------------------------------------------------------------------------------------
# Embedding dropout
# ---------------------------------------------------------------------------------------------------------------


class PositionEmbeddingDropout(nn.Module):
    """Drops positions (token occurrences) instead of word types: a [B, T, 1] mask."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.embed = nn.Embedding(VOCAB, 6)

    def forward(self, tokens: Tensor) -> Tensor:
        out = self.embed(tokens)
        if not self.training:
            return out
        return out * out.new_empty(*tokens.shape, 1).bernoulli_(1 - self.p) / (1 - self.p)


class ElementEmbeddingDropout(PositionEmbeddingDropout):
    """nn.Dropout on the embedded output: single features dropped."""

    def forward(self, tokens: Tensor) -> Tensor:
        return F.dropout(self.embed(tokens), self.p, self.training)


class InPlaceEmbeddingDropout(AWDEmbeddingDropout):
    """Masks the weight in place (fastai's old mistake): dropped rows stay dropped."""

    def forward(self, tokens: Tensor) -> Tensor:
        if self.training:
            with torch.no_grad():
                mask = self.embed.weight.new_empty(VOCAB, 1).bernoulli_(1 - self.p) / (1 - self.p)
                self.embed.weight.mul_(mask)
        return self.embed(tokens)


class NonInvertedEmbeddingDropout(AWDEmbeddingDropout):
    """Keeps rows unscaled in training (and would need 1-p at eval)."""

    def forward(self, tokens: Tensor) -> Tensor:
        weight = self.embed.weight
        if self.training:
            weight = weight * weight.new_empty(VOCAB, 1).bernoulli_(1 - self.p)
        return F.embedding(tokens, weight)


class KeepProbEmbeddingDropout(AWDEmbeddingDropout):
    """Uses p as the keep probability."""

    def forward(self, tokens: Tensor) -> Tensor:
        weight = self.embed.weight
        if self.training:
            weight = weight * weight.new_empty(VOCAB, 1).bernoulli_(self.p) / (1 - self.p)
        return F.embedding(tokens, weight)


class EvalDroppingEmbedding(AWDEmbeddingDropout):
    """Drops word types in eval mode too: the mask ignores self.training."""

    def forward(self, tokens: Tensor) -> Tensor:
        mask = self.embed.weight.new_empty(VOCAB, 1).bernoulli_(1 - self.p) / (1 - self.p)
        return F.embedding(tokens, self.embed.weight * mask)


class NeverDrops(nn.Module):
    """An embedding dropout whose mask is drawn and thrown away: the vectors pass unchanged."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 6)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.embed(tokens)


# ---------------------------------------------------------------------------------------------------------------
# Weight drop
# ---------------------------------------------------------------------------------------------------------------


class ForwardOnlyWeightDrop(FunctionalWeightDrop):
    """Drops weight_hh_l0 only (fastai / PyTorch-NLP style): reverse directions and upper layers untouched."""

    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        w = F.dropout(self.rnn.weight_hh_l0, self.p, training=True)
        return torch.func.functional_call(self.rnn, {"weight_hh_l0": w}, (x,))


class ReverseMissedWeightDrop(FunctionalWeightDrop):
    """Drops every layer's forward weight_hh but no *_reverse."""

    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        dropped = {
            name: F.dropout(w, self.p, training=True)
            for name, w in self.rnn.named_parameters()
            if name.startswith("weight_hh") and not name.endswith("reverse")
        }
        return torch.func.functional_call(self.rnn, dropped, (x,))


class PerStepWeightDrop(nn.Module):
    """A hand-written GRU-cell loop that redraws the DropConnect mask at every time step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.cell = nn.GRUCell(5, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.loop(x, lambda: F.dropout(self.cell.weight_hh, self.p, training=self.training))

    def loop(self, x: Tensor, weight_hh: Callable[[], Tensor]) -> Tensor:
        """The GRU recurrence over x [B, T, 5], taking weight_hh from ``weight_hh()`` at every step."""
        h = x.new_zeros(x.shape[0], 4)
        outs = []
        for t in range(x.shape[1]):
            w_hh = weight_hh()
            gi = F.linear(x[:, t], self.cell.weight_ih, self.cell.bias_ih)
            gh = F.linear(h, w_hh, self.cell.bias_hh)
            i_r, i_z, i_n = gi.chunk(3, 1)
            h_r, h_z, h_n = gh.chunk(3, 1)
            r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
            n = torch.tanh(i_n + r * h_n)
            h = (1 - z) * n + z * h
            outs.append(h)
        return torch.stack(outs, 1)


class PerForwardStepLoop(PerStepWeightDrop):
    """The same loop, with the mask drawn once per forward: correct."""

    def forward(self, x: Tensor) -> Tensor:
        w_hh = F.dropout(self.cell.weight_hh, self.p, training=self.training)
        return self.loop(x, lambda: w_hh)


class CachedMaskWeightDrop(FunctionalWeightDrop):
    """Draws the masks once, on the first training call."""

    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        if not hasattr(self, "masks"):
            self.masks = {
                n: F.dropout(torch.ones_like(w), self.p, training=True)
                for n, w in self.rnn.named_parameters()
                if n.startswith("weight_hh")
            }
        dropped = {n: getattr(self.rnn, n) * m for n, m in self.masks.items()}
        return torch.func.functional_call(self.rnn, dropped, (x,))


class SurgeryWeightDrop(FunctionalWeightDrop):
    """Writes the dropped weights into the raw parameters (the old awd-lstm WeightDrop 'surgery')."""

    def forward(self, x: Tensor) -> Any:
        if self.training:
            with torch.no_grad():
                for name, w in self.rnn.named_parameters():
                    if name.startswith("weight_hh"):
                        w.copy_(F.dropout(w, self.p, training=True))
        return self.rnn(x)


class EvalDroppingWeightDrop(FunctionalWeightDrop):
    """training=True hard-coded: eval is random."""

    def forward(self, x: Tensor) -> Any:
        return self.run_dropped(x)


class DetachedWeightDrop(FunctionalWeightDrop):
    """Builds the dropped copy from a detached weight: the raw weight never gets a gradient."""

    def drop_weight(self, w: Tensor) -> Tensor:
        return F.dropout(w.detach(), self.p, training=True)


# ---------------------------------------------------------------------------------------------------------------
# Decay groups
# ---------------------------------------------------------------------------------------------------------------


def decay_everything(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)


def spare_only_bias_names(model: nn.Module) -> torch.optim.Optimizer:
    """'bias' in the name spares biases, and misses LayerNorm gains."""
    decay = [p for n, p in model.named_parameters() if "bias" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}])


def spare_every_weight(model: nn.Module) -> torch.optim.Optimizer:
    """An inverted rule: 'weight' in the name goes to no-decay, so only biases decay... and norm biases."""
    decay = [p for n, p in model.named_parameters() if "weight" not in n]
    no_decay = [p for n, p in model.named_parameters() if "weight" in n]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}])


def drops_the_head(model: nn.Module) -> torch.optim.Optimizer:
    """Groups built from a fixed list of prefixes that forgets the head."""
    params = [p for n, p in model.named_parameters() if not n.startswith("head")]
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    )


def spare_matrices(model: nn.Module) -> torch.optim.Optimizer:
    """Only the embedding and 1-D parameters are in the decay group; other matrices are spared."""
    decay = [p for n, p in model.named_parameters() if p.dim() < 2 or n.startswith("embedding")]
    spared = [p for n, p in model.named_parameters() if p.dim() >= 2 and not n.startswith("embedding")]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": spared, "weight_decay": 0.0}])
