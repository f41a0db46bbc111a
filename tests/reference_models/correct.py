"""Correct implementations written in styles other than rnnreg's own: every check must pass each of them.

Each is small and written the way public code writes it (torch idioms, Hugging Face-style call conventions,
hand-written optimizers; the correct AMP steps are in steps.py). A FAIL on any of them is a false alarm.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reference_models.steps import amp_step_bf16
from rnnreg.batch import PAD_ID
from rnnreg.layers import EmbeddingDropout, LockedDropout, WeightDrop

VOCAB, CLASSES = 40, 3


def _length_mask(lengths: Tensor, T: int, device: torch.device) -> Tensor:
    return torch.arange(T, device=device)[None, :] < lengths.to(device)[:, None]  # [B, T] True on real tokens


# ---------------------------------------------------------------------------------------------------------------
# Models: model(tokens, lengths) -> logits unless the docstring says otherwise
# ---------------------------------------------------------------------------------------------------------------


class PackedGRU(nn.Module):
    """Bidirectional GRU over a packed sequence, final states of both directions, dropout before the head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8, padding_idx=PAD_ID)
        self.rnn = nn.GRU(8, 6, num_layers=2, dropout=0.2, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(12, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(tokens), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        _, h_n = self.rnn(packed)  # [layers * 2, B, H]
        return self.head(self.drop(torch.cat([h_n[-2], h_n[-1]], dim=1)))


class MaskedMeanGRU(nn.Module):
    """Unidirectional GRU on the padded batch (no packing), mean over each row's real steps from lengths."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.rnn = nn.GRU(8, 6, batch_first=True)
        self.drop = nn.Dropout(0.25)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(self.drop(self.embedding(tokens)))  # [B, T, H]; a forward RNN never sees later pads
        mask = _length_mask(lengths, tokens.shape[1], tokens.device).unsqueeze(-1)  # [B, T, 1]
        pooled = (out * mask).sum(1) / lengths.to(out.device)[:, None]  # [B, H]
        return self.head(pooled)


class LastStateLSTM(nn.Module):
    """Unidirectional LSTM on the padded batch, output gathered at lengths - 1."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.rnn = nn.LSTM(8, 6, batch_first=True)
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(6, CLASSES))

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(tokens))  # [B, T, H]
        last = out[torch.arange(len(tokens)), lengths.to(out.device) - 1]  # [B, H]
        return self.head(last)


class MaskFromPadIds(nn.Module):
    """Masks by ``tokens != PAD`` (no lengths): correct while pads hold PAD; pad_content must say so, as a WARN."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        mask = (tokens != PAD_ID).unsqueeze(-1).float()  # [B, T, 1]
        pooled = (self.embedding(tokens) * mask).sum(1) / mask.sum(1)  # [B, E]
        return self.head(self.drop(pooled))


class TransformerClassifier(nn.Module):
    """A small Transformer encoder with a key-padding mask and a masked mean: positions from a learned table."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16, padding_idx=PAD_ID)
        self.position = nn.Embedding(64, 16)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(16, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        T = tokens.shape[1]
        real = _length_mask(lengths, T, tokens.device)  # [B, T]
        x = self.embedding(tokens) + self.position(torch.arange(T, device=tokens.device))[None]  # [B, T, E]
        h = self.encoder(x, src_key_padding_mask=~real)  # [B, T, E]
        pooled = (h * real[..., None]).sum(1) / real.sum(1, keepdim=True)  # [B, E]
        return self.head(pooled)


class HFStyleClassifier(nn.Module):
    """``model(input_ids=..., attention_mask=...) -> (logits, hidden)``: checked through an adapter."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.rnn = nn.GRU(8, 6, batch_first=True)
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(6, CLASSES)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        out, _ = self.rnn(self.drop(self.embedding(input_ids)))  # [B, T, H]
        m = attention_mask.unsqueeze(-1).to(out.dtype)  # [B, T, 1]
        pooled = (out * m).sum(1) / m.sum(1)
        return self.head(pooled), out


class PackedInputClassifier(nn.Module):
    """``model(packed_token_ids) -> logits``: takes a PackedSequence of ids, as some training loops build them."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.rnn = nn.LSTM(8, 6, batch_first=True, bidirectional=True)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(12, CLASSES)

    def forward(self, packed: nn.utils.rnn.PackedSequence) -> Tensor:
        embedded = nn.utils.rnn.PackedSequence(
            self.embedding(packed.data), packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices
        )
        _, (h_n, _) = self.rnn(embedded)
        return self.head(self.drop(torch.cat([h_n[-2], h_n[-1]], dim=1)))


# ---------------------------------------------------------------------------------------------------------------
# Clipping, losses, optimizers
# ---------------------------------------------------------------------------------------------------------------


def clip_foreach(parameters: Any, max_norm: float) -> Tensor:
    return nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True)


def clip_foreach_by_hand(parameters: Any, max_norm: float) -> Tensor:
    """The multi-tensor way: torch._foreach_norm, then one _foreach_mul_ by the clamped coefficient."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total


def clip_by_hand(parameters: Any, max_norm: float) -> float:
    """Plain Python: the total norm as a float, every gradient scaled only above the threshold."""
    params = [p for p in parameters if p.grad is not None]
    total = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in params))
    if total > max_norm:
        for p in params:
            p.grad.mul_(max_norm / total)
    return total


def smoothing_cross_entropy(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    return F.cross_entropy(logits, targets, label_smoothing=eps)


def smoothing_kl_divergence(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    """KL(q || p) with q = (1-eps)*onehot + eps/K: cross-entropy minus q's entropy, the same gradients."""
    K = logits.shape[1]
    q = torch.full_like(logits, eps / K).scatter_(1, targets[:, None], 1 - eps + eps / K)
    return F.kl_div(F.log_softmax(logits, dim=1), q, reduction="batchmean")


def smoothing_soft_targets(logits: Tensor, targets: Tensor, eps: float) -> Tensor:
    q = F.one_hot(targets, logits.shape[1]).float() * (1 - eps) + eps / logits.shape[1]
    return -(q * logits.log_softmax(-1)).sum(-1).mean()


class HandAdamW(torch.optim.Optimizer):
    """AdamW by hand, decay first (as torch.optim.AdamW)."""

    def __init__(self, params: Any, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "betas": betas, "eps": 1e-8})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["t"] += 1
                p.mul_(1 - group["lr"] * group["weight_decay"])
                state["m"].mul_(b1).add_(p.grad, alpha=1 - b1)
                state["v"].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = state["m"] / (1 - b1 ** state["t"])
                v_hat = state["v"] / (1 - b2 ** state["t"])
                p.sub_(group["lr"] * m_hat / (v_hat.sqrt() + group["eps"]))


class HandAdamWDecayAfter(HandAdamW):
    """AdamW as some popular libraries wrote it: the Adam update first, then decay of the updated weights."""

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        decays = [(g["weight_decay"], g["lr"]) for g in self.param_groups]
        for g in self.param_groups:
            g["weight_decay"] = 0.0
        super().step()
        for g, (wd, lr) in zip(self.param_groups, decays, strict=True):
            g["weight_decay"] = wd
            for p in g["params"]:
                p.mul_(1 - lr * wd)


class HandSGDL2(torch.optim.Optimizer):
    """SGD with momentum and L2 added to the gradient, by hand."""

    def __init__(self, params: Any, lr: float, weight_decay: float) -> None:
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": 0.9})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                d = p.grad + group["weight_decay"] * p
                buf = self.state[p].get("buf")
                buf = d.clone() if buf is None else buf.mul_(group["momentum"]).add_(d)
                self.state[p]["buf"] = buf
                p.sub_(group["lr"] * buf)


def hand_adamw(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return HandAdamW(params, lr, wd)


def hand_adamw_decay_after(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return HandAdamWDecayAfter(params, lr, wd)


def hand_sgd_l2(params: list[Tensor], lr: float, wd: float) -> torch.optim.Optimizer:
    return HandSGDL2(params, lr, wd)


def nanogpt_groups(model: nn.Module) -> torch.optim.Optimizer:
    """nanoGPT's rule: every parameter with dim >= 2 decays (embeddings included), the rest do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=1e-3)


def named_groups_sparing_embeddings(model: nn.Module) -> torch.optim.Optimizer:
    """timm-style: no decay for 1-D parameters and for the embedding table."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.startswith("embedding") else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}])


class ClassTokenEncoder(nn.Module):
    """ViT/BERT-style: a learned class token and position table as bare parameters, read through a Transformer."""

    T_MAX = 32

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 16, padding_idx=PAD_ID)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, 16))
        self.pos_table = nn.Parameter(0.02 * torch.randn(1, self.T_MAX + 1, 16))
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(16, CLASSES)

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "pos_table"}

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        B, T = tokens.shape
        x = torch.cat([self.cls_token.expand(B, -1, -1), self.embedding(tokens)], dim=1)  # [B, T+1, 16]
        x = x + self.pos_table[:, : T + 1]
        pad = ~_length_mask(lengths + 1, T + 1, tokens.device)  # the class token is always real
        return self.head(self.encoder(x, src_key_padding_mask=pad)[:, 0])


class ContextAttentionGRU(nn.Module):
    """HAN-style attention pooling: scores against a learned 1-D context vector, masked softmax over time."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 12)
        self.rnn = nn.GRU(12, 12, batch_first=True)
        self.proj = nn.Linear(12, 12)
        self.context = nn.Parameter(torch.randn(12))
        self.drop = nn.Dropout(0.2)
        self.head = nn.Linear(12, CLASSES)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.rnn(self.drop(self.embedding(tokens)))  # [B, T, 12]
        scores = torch.tanh(self.proj(h)) @ self.context  # [B, T]
        scores = scores.masked_fill(~_length_mask(lengths, tokens.shape[1], tokens.device), float("-inf"))
        return self.head((scores.softmax(dim=1).unsqueeze(-1) * h).sum(dim=1))


def timm_style_groups(model: nn.Module) -> torch.optim.Optimizer:
    """timm's rule: 1-D parameters, biases and the names the model lists in no_weight_decay() do not decay."""
    skip = set(getattr(model, "no_weight_decay", set)())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") or name in skip else decay).append(p)
    return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}])


def hf_trainer_groups(model: nn.Module) -> torch.optim.Optimizer:
    """Hugging Face Trainer's rule: everything decays except biases and LayerNorm weights (found by module type)."""
    no_decay = {
        f"{m_name}.{p_name}".lstrip(".")
        for m_name, m in model.named_modules()
        for p_name, _ in m.named_parameters(recurse=False)
        if "bias" in p_name or isinstance(m, nn.LayerNorm)
    }
    named = list(model.named_parameters())
    return torch.optim.AdamW(
        [
            {"params": [p for n, p in named if n not in no_decay], "weight_decay": 0.01},
            {"params": [p for n, p in named if n in no_decay], "weight_decay": 0.0},
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------


class HandLockedDropout(nn.Module):
    """Locked dropout written with bernoulli_ on a (B, 1, D) mask."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


class AWDEmbeddingDropout(nn.Module):
    """AWD-LSTM's embedded_dropout: one mask over the rows of W per forward, then F.embedding with the copy."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.embed = nn.Embedding(VOCAB, 6)

    def forward(self, tokens: Tensor) -> Tensor:
        weight = self.embed.weight
        if self.training and self.p > 0:
            mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - self.p) / (1 - self.p)
            weight = weight * mask
        return F.embedding(tokens, weight)


class PerSequenceEmbeddingDropout(nn.Module):
    """Gal & Ghahramani's variant: one word-type mask per sequence, gathered by the tokens."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.embed = nn.Embedding(VOCAB, 6)

    def forward(self, tokens: Tensor) -> Tensor:
        out = self.embed(tokens)  # [B, T, D]
        if not self.training:
            return out
        keep = torch.empty(tokens.shape[0], VOCAB, device=tokens.device).bernoulli_(1 - self.p) / (1 - self.p)
        return out * keep.gather(1, tokens)[..., None]


class ProjectEmbeddingDropout(nn.Module):
    """rnnreg's own EmbeddingDropout, which takes (embedded, tokens)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 6)
        self.drop = EmbeddingDropout(VOCAB, p)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.drop(self.embed(tokens), tokens)


class FunctionalWeightDrop(nn.Module):
    """Weight drop with torch.func.functional_call over every weight_hh (both directions, two layers)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.rnn = nn.GRU(5, 4, num_layers=2, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        return self.run_dropped(x)

    def run_dropped(self, x: Tensor) -> Any:
        """The RNN run on dropped copies of every weight_hh; the raw parameters stay as they are."""
        dropped = {name: self.drop_weight(w) for name, w in self.rnn.named_parameters() if name.startswith("weight_hh")}
        return torch.func.functional_call(self.rnn, dropped, (x,))

    def drop_weight(self, w: Tensor) -> Tensor:
        return F.dropout(w, self.p, training=True)


class ProjectedWeightDrop(FunctionalWeightDrop):
    """An input projection (10 -> 5 features) in front of the weight-dropped GRU: the input has 10 features."""

    def __init__(self, p: float) -> None:
        super().__init__(p)
        self.proj = nn.Linear(10, 5)
        self.register_module("rnn", self._modules.pop("rnn"))  # registered after the projection, as it runs

    def forward(self, x: Tensor) -> Any:
        return super().forward(self.proj(x))


def project_weight_drop(p: float) -> nn.Module:
    return WeightDrop(nn.LSTM(5, 4, batch_first=True, bidirectional=True), p)


def project_locked_dropout(p: float) -> nn.Module:
    return LockedDropout(p)


def whole_suite_setup() -> dict[str, Any]:
    """run_checks / pytest_checks keyword arguments giving every check a correct reference: none is skipped."""
    return {
        "num_classes": CLASSES,
        "loss_fn": smoothing_kl_divergence,
        "clip_fn": clip_foreach,
        "optimizer_factory": hand_adamw_decay_after,
        "decoupled": True,
        "train_step": amp_step_bf16,
        "groups_fn": nanogpt_groups,
        "locked_dropout": functools.partial(HandLockedDropout, 0.3),
        "embedding_dropout": functools.partial(AWDEmbeddingDropout, 0.3),
        "weight_drop": functools.partial(FunctionalWeightDrop, 0.3),
        "layer_p": 0.3,
    }
