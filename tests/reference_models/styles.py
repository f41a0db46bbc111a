"""Regularizers written the way well-known public code writes them, correct and with the bugs users hit.

Written for this corpus after the published patterns: AWD-LSTM's ``embedded_dropout`` and ``WeightDrop``
(salesforce/awd-lstm-lm), fastai's ``EmbeddingDropout`` and ``WeightDropout``, PyTorch-NLP's ``WeightDropLSTM``,
a ``torch.nn.utils.parametrize`` weight drop, and BERT / Hugging Face / nanoGPT decay groups (the torch AMP recipe
and its buggy variants are in steps.py). Names start with the style; a ``Buggy``/``buggy_`` prefix marks a planted
bug, whose docstring says what a check must report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from reference_models.correct import _length_mask

# ---------------------------------------------------------------------------------------------------------------
# Embedding dropout: AWD-LSTM's function, fastai's module
# ---------------------------------------------------------------------------------------------------------------


def embedded_dropout(embed: nn.Embedding, words: Tensor, dropout: float = 0.1, *, rescale: bool = True) -> Tensor:
    """AWD-LSTM's ``embedded_dropout``: one Bernoulli per row of W, expanded over the embedding, then F.embedding."""
    if dropout:
        mask = embed.weight.new_empty((embed.weight.size(0), 1)).bernoulli_(1 - dropout).expand_as(embed.weight)
        if rescale:
            mask = mask / (1 - dropout)
        masked_embed_weight = mask * embed.weight
    else:
        masked_embed_weight = embed.weight
    padding_idx = -1 if embed.padding_idx is None else embed.padding_idx
    return F.embedding(words, masked_embed_weight, padding_idx, embed.max_norm, embed.norm_type)


class AWDEncoder(nn.Module):
    """How AWD-LSTM's RNNModel calls it: ``dropout=self.dropoute if self.training else 0``."""

    def __init__(self, vocab: int, dim: int, dropoute: float) -> None:
        super().__init__()
        self.encoder = nn.Embedding(vocab, dim)
        self.dropoute = dropoute

    def forward(self, tokens: Tensor) -> Tensor:
        return embedded_dropout(self.encoder, tokens, dropout=self.dropoute if self.training else 0)


class BuggyAWDEncoderNoRescale(AWDEncoder):
    """The mask without ``/ (1 - dropout)``: caught as non-inverted (kept vectors x1, not 1/(1-p))."""

    def forward(self, tokens: Tensor) -> Tensor:
        return embedded_dropout(self.encoder, tokens, self.dropoute if self.training else 0, rescale=False)


def fastai_dropout_mask(x: Tensor, sz: Iterable[int], p: float) -> Tensor:
    """fastai's ``dropout_mask``: bernoulli(1-p) / (1-p) of shape ``sz``, like ``x``."""
    return x.new_empty(*sz).bernoulli_(1 - p).div_(1 - p)


class FastaiEmbeddingDropout(nn.Module):
    """fastai's ``EmbeddingDropout(emb, embed_p)``: a (vocab, 1) mask over the weight, F.embedding with the copy."""

    def __init__(self, emb: nn.Embedding, embed_p: float) -> None:
        super().__init__()
        self.emb, self.embed_p = emb, embed_p

    def forward(self, words: Tensor) -> Tensor:
        if self.training and self.embed_p != 0:
            mask = fastai_dropout_mask(self.emb.weight.data, (self.emb.weight.size(0), 1), self.embed_p)
            masked_embed = self.emb.weight * mask
        else:
            masked_embed = self.emb.weight
        padding_idx = -1 if self.emb.padding_idx is None else self.emb.padding_idx
        return F.embedding(words, masked_embed, padding_idx, self.emb.max_norm, self.emb.norm_type)


def fastai_embedding_dropout(vocab: int, embed_p: float, dim: int = 8) -> nn.Module:
    return FastaiEmbeddingDropout(nn.Embedding(vocab, dim, padding_idx=1), embed_p)


# ---------------------------------------------------------------------------------------------------------------
# Weight drop: fastai, salesforce (AWD-LSTM), PyTorch-NLP, torch.nn.utils.parametrize, functional_call
# ---------------------------------------------------------------------------------------------------------------


class FastaiWeightDropout(nn.Module):
    """fastai's ``WeightDropout``: the raw weight is a parameter of the wrapper; every forward sets a dropped copy
    (train) or a clone (eval) as a plain tensor on the wrapped RNN."""

    def __init__(self, module: nn.Module, weight_p: float, layer_names: Iterable[str] = ("weight_hh_l0",)) -> None:
        super().__init__()
        self.module, self.weight_p, self.layer_names = module, weight_p, list(layer_names)
        for layer in self.layer_names:
            w = getattr(self.module, layer)
            delattr(self.module, layer)
            self.register_parameter(f"{layer}_raw", nn.Parameter(w.data))
            setattr(self.module, layer, w.clone())

    def _setweights(self) -> None:
        for layer in self.layer_names:
            raw_w = getattr(self, f"{layer}_raw")
            w = F.dropout(raw_w, p=self.weight_p) if self.training else raw_w.clone()
            setattr(self.module, layer, w)

    def forward(self, *args: Any) -> Any:
        self._setweights()
        return self.module(*args)


def fastai_weight_dropout(weight_p: float) -> nn.Module:
    return FastaiWeightDropout(nn.LSTM(5, 6, batch_first=True), weight_p)


class SalesforceWeightDrop(nn.Module):
    """AWD-LSTM's ``WeightDrop`` as published (salesforce/awd-lstm-lm): ``del module._parameters[name]``, then every
    forward sets ``F.dropout(raw_w, training=self.training)`` on the module. With ``fixed`` the eval pass sets a
    clone instead of the raw Parameter itself."""

    def __init__(self, module: nn.Module, weights: list[str], dropout: float = 0.0, *, fixed: bool = False) -> None:
        super().__init__()
        self.module, self.weights, self.dropout, self.fixed = module, weights, dropout, fixed
        for name_w in self.weights:
            w = getattr(self.module, name_w)
            del self.module._parameters[name_w]
            self.module.register_parameter(name_w + "_raw", nn.Parameter(w.data))

    def _setweights(self) -> None:
        for name_w in self.weights:
            raw_w = getattr(self.module, name_w + "_raw")
            w = F.dropout(raw_w, p=self.dropout, training=self.training)
            if self.fixed and not self.training:
                w = raw_w.clone()
            setattr(self.module, name_w, w)

    def forward(self, *args: Any) -> Any:
        self._setweights()
        return self.module.forward(*args)


def salesforce_weight_drop_fixed(p: float) -> nn.Module:
    return SalesforceWeightDrop(nn.LSTM(5, 6, batch_first=True), ["weight_hh_l0"], p, fixed=True)


def buggy_salesforce_weight_drop(p: float) -> nn.Module:
    """As published: in eval F.dropout returns the raw Parameter itself, setattr registers it as the LSTM's
    ``weight_hh_l0`` parameter, and the next train forward raises TypeError ("cannot assign ... as parameter")."""
    return SalesforceWeightDrop(nn.LSTM(5, 6, batch_first=True), ["weight_hh_l0"], p)


class BuggyTorchNLPWeightDropLSTM(nn.LSTM):
    """PyTorch-NLP's ``WeightDropLSTM``: the same setattr in a patched forward, so it fails the same way after eval."""

    def __init__(self, *args: Any, weight_dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.weight_dropout = weight_dropout
        for name_w in [f"weight_hh_l{i}" for i in range(self.num_layers)]:
            w = getattr(self, name_w)
            del self._parameters[name_w]
            self.register_parameter(name_w + "_raw", nn.Parameter(w.data))

    def forward(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        for name_w in [f"weight_hh_l{i}" for i in range(self.num_layers)]:
            raw_w = getattr(self, name_w + "_raw")
            setattr(self, name_w, F.dropout(raw_w, p=self.weight_dropout, training=self.training))
        return super().forward(*args, **kwargs)


class DropConnect(nn.Module):
    """A parametrization: the weight the RNN sees is the raw one with DropConnect applied in train mode."""

    def __init__(self, p: float, *, rescale: bool = True) -> None:
        super().__init__()
        self.p, self.rescale = p, rescale

    def forward(self, w: Tensor) -> Tensor:
        if not self.training:
            return w
        if self.rescale:
            return F.dropout(w, self.p, training=True)
        return w * torch.bernoulli(torch.full_like(w, 1 - self.p))


def parametrized_weight_drop(p: float, *, rescale: bool = True) -> nn.Module:
    """``torch.nn.utils.parametrize`` on both directions of a bidirectional LSTM."""
    rnn = nn.LSTM(5, 4, batch_first=True, bidirectional=True)
    for name in ("weight_hh_l0", "weight_hh_l0_reverse"):
        parametrize.register_parametrization(rnn, name, DropConnect(p, rescale=rescale))
    return rnn


def buggy_parametrized_no_rescale(p: float) -> nn.Module:
    """DropConnect by ``w * bernoulli(1-p)``: the RNN trains with (1-p) x the eval weight on average."""
    return parametrized_weight_drop(p, rescale=False)


class BuggyMaskOnlyWeightDrop(nn.Module):
    """functional_call with ``torch.where(keep, w, 0)``: right mask, no 1/(1-p) (the check once missed this one)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.rnn = nn.GRU(5, 4, batch_first=True, bidirectional=True)

    def forward(self, x: Tensor) -> Any:
        if not self.training:
            return self.rnn(x)
        dropped = {
            name: torch.where(torch.rand_like(w) >= self.p, w, torch.zeros_like(w))
            for name, w in self.rnn.named_parameters()
            if name.startswith("weight_hh")
        }
        return torch.func.functional_call(self.rnn, dropped, (x,))


# ---------------------------------------------------------------------------------------------------------------
# Weight-decay groups
# ---------------------------------------------------------------------------------------------------------------

NO_DECAY = ("bias", "LayerNorm.weight", "norm.weight", "norm1.weight", "norm2.weight")


def _bert_groups(model: nn.Module, key: str, wd: float) -> list[dict[str, Any]]:
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not any(nd in n for nd in NO_DECAY)], key: wd},
        {"params": [p for n, p in named if any(nd in n for nd in NO_DECAY)], key: 0.0},
    ]


def bert_groups(model: nn.Module) -> torch.optim.Optimizer:
    """The BERT / Hugging Face recipe with torch's key: ``weight_decay``."""
    return torch.optim.AdamW(_bert_groups(model, "weight_decay", 0.01), lr=2e-5)


def buggy_bert_groups_weight_decay_rate(model: nn.Module) -> torch.optim.Optimizer:
    """BERT's TensorFlow key ``weight_decay_rate`` given to torch's AdamW: ignored, every group decays by AdamW's
    default 0.01, biases and LayerNorm included."""
    return torch.optim.AdamW(_bert_groups(model, "weight_decay_rate", 0.01), lr=2e-5)


def buggy_bert_groups_weight_decay_rate_adam(model: nn.Module) -> torch.optim.Optimizer:
    """The same groups with torch's Adam (default weight_decay 0): nothing decays at all."""
    return torch.optim.Adam(_bert_groups(model, "weight_decay_rate", 0.01), lr=2e-5)


def buggy_hf_groups_config_default(model: nn.Module) -> torch.optim.Optimizer:
    """The Hugging Face groups fed ``args.weight_decay``, left at its default 0.0: nothing decays, although the user
    configured (and expects) decay."""
    return torch.optim.AdamW(_bert_groups(model, "weight_decay", 0.0), lr=2e-5)


def timm_layer_decay_groups(model: nn.Module) -> torch.optim.Optimizer:
    """timm-style groups carrying ``lr_scale`` for its scheduler: a key torch does not read, and need not."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
            {"params": decay, "weight_decay": 0.05, "lr_scale": 1.0},
        ],
        lr=1e-3,
    )


# ---------------------------------------------------------------------------------------------------------------
# A model for autocast parity: attention pooling with a masked softmax
# ---------------------------------------------------------------------------------------------------------------


class AttentionPoolGRU(nn.Module):
    """GRU, attention pooling over real positions (masked softmax), linear head. ``fill`` is the masked score."""

    fill: float | None = None  # None: the dtype's own minimum

    def __init__(self, vocab: int = 40, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 8, padding_idx=0)
        self.rnn = nn.GRU(8, 8, batch_first=True)
        self.score = nn.Linear(8, 1)
        self.head = nn.Linear(8, classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        h, _ = self.rnn(self.embed(tokens))  # [B, T, H]
        scores = self.score(h).squeeze(-1)  # [B, T]
        pad = ~_length_mask(lengths, tokens.shape[1], tokens.device)  # [B, T] True on padding
        fill = torch.finfo(scores.dtype).min if self.fill is None else self.fill
        scores = scores.masked_fill(pad, fill)
        weights = torch.softmax(scores.float(), dim=1)  # [B, T]
        return self.head((weights[..., None] * h.float()).sum(1))  # [B, C]


class BuggyAttentionPoolMinus1e9(AttentionPoolGRU):
    """``masked_fill(pad, -1e9)``: -1e9 does not fit in float16 (max 65504), so it raises under fp16 autocast."""

    fill = -1e9
