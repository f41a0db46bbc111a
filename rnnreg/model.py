"""Models: the padding-invariant AWD-style SequenceClassifier, the notebook's BiLSTM, and build_model(cfg).

Protocol everywhere: ``model(tokens[B, T] int64, lengths[B] int64) -> logits[B, C]``.
"""

from __future__ import annotations

import warnings
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnreg.config import ModelConfig
from rnnreg.layers import (
    LOW_PRECISION_ROW_STEP,
    RNN_TYPES,
    EmbeddingDropout,
    LockedDropout,
    OutputDropout,
    WeightDrop,
    masked_pool,
    plan_segments,
    reverse_index_time_major,
    reverse_within_lengths,
    rnn_step_loop,
    rnn_supports_autocast,
    run_in_segments,
    run_rnn,
    segment_call_cost,
    time_major,
)


class RegularizerNoOpWarning(UserWarning):
    """A configured regularizer cannot act in this model (the notebook's one-layer ``nn.LSTM(dropout=0.3)``)."""


def check_inputs(tokens: object, lengths: object, vocab_size: int) -> None:
    """Raise a clear ValueError/TypeError for a batch the model cannot take, before torch fails deep inside."""
    if not isinstance(tokens, Tensor) or not isinstance(lengths, Tensor):
        raise TypeError(
            f"model(tokens, lengths) takes two tensors (got {type(tokens).__name__} and {type(lengths).__name__})"
        )
    if tokens.dim() != 2 or tokens.dtype != torch.int64:
        raise ValueError(
            f"tokens must be a 2-D int64 tensor [batch, time] (got shape {tuple(tokens.shape)}, dtype {tokens.dtype}); "
            "use rnnreg.batch.collate, or tokens.long()"
        )
    B, T = tokens.shape  # batch, time
    if B == 0 or T == 0:
        raise ValueError(f"tokens is empty (shape {tuple(tokens.shape)}); a batch needs >= 1 sequence of >= 1 step")
    if lengths.shape != (B,) or lengths.dtype != torch.int64:
        raise ValueError(
            f"lengths must be an int64 tensor of shape ({B},), one length per sequence "
            f"(got shape {tuple(lengths.shape)}, dtype {lengths.dtype})"
        )
    if lengths.device.type != "cpu" and lengths.device != tokens.device:
        raise ValueError(
            f"lengths is on {lengths.device} but tokens on {tokens.device}; keep lengths on the CPU (Batch.to does)"
        )
    shortest, longest = int(lengths.min()), int(lengths.max())
    if shortest < 1 or longest > T:
        raise ValueError(
            f"every length must be in [1, {T}] (tokens has {T} steps; got lengths from {shortest} to {longest}); "
            "drop empty sequences and pad tokens to the longest length"
        )
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(
            f"token ids must be in [0, {vocab_size - 1}] for vocab_size={vocab_size} (got ids from {low} to {high}); "
            "build the model with the vocabulary the batches were encoded with"
        )


def _check_sizes(vocab_size: int, num_classes: int) -> None:
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2 to hold PAD and one word (got {vocab_size})")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (got {num_classes})")


class SequenceClassifier(nn.Module):
    """Embedding -> embedding dropout -> locked input dropout -> (Bi)LSTM/GRU layers with weight drop and locked
    dropout between them -> masked pooling -> output dropout -> linear.

    Exactly padding-invariant without packing: the forward direction runs on the padded batch (it is causal, so
    steps before a sequence's end never see its pads) and the reverse direction runs on each sequence reversed
    within its own length (pads stay at the end), so both start on real tokens. Each direction of each layer is
    its own one-layer RNN, ``rnns['l{k}']`` and ``rnns['l{k}_reverse']`` (nn.LSTM's suffixes), which keeps CPU
    (oneDNN) and CUDA (cuDNN) on their fast unpacked kernels. Rows are sorted longest first and time is cut into
    a few segments, each run on the rows that still have tokens (see ``plan_segments``): most padding is skipped,
    as packing skips it, and steps past the longest length never run at all. A cut costs one more kernel call per
    layer and direction, so it is made only where the padding it skips costs more (``plan_segments``): a bucketed
    batch runs in one piece.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, num_classes: int) -> None:
        super().__init__()
        _check_sizes(vocab_size, num_classes)
        self.cfg = cfg
        self.vocab_size = vocab_size
        self.suffixes = ("", "_reverse") if cfg.bidirectional else ("",)
        H, D = cfg.hidden_dim, len(self.suffixes)  # hidden units per direction, directions
        self.embedding = nn.Embedding(vocab_size, cfg.embed_dim, padding_idx=0)
        self.embed_drop = EmbeddingDropout(vocab_size, cfg.embed_p)
        self.input_drop = LockedDropout(cfg.input_p)
        self.hidden_drop = LockedDropout(cfg.hidden_p)
        rnn_type = RNN_TYPES[cfg.rnn]
        self.rnns = nn.ModuleDict(
            {
                f"l{k}{suffix}": WeightDrop(
                    rnn_type(cfg.embed_dim if k == 0 else H * D, H, batch_first=True), cfg.weight_p
                )
                for k in range(cfg.num_layers)
                for suffix in self.suffixes
            }
        )
        self.output_drop = OutputDropout(cfg.output_p)
        self.head = nn.Linear(H * D, num_classes)
        # What one more time segment costs, in row-steps of these layers (plan_segments); 0 cuts at every length.
        gates = 4 if cfg.rnn == "lstm" else 3
        layer_inputs = [cfg.embed_dim] + [H * D] * (cfg.num_layers - 1)
        self.segment_call_cost = segment_call_cost([gates * H * (d_in + H) for d_in in layer_inputs])

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        check_inputs(tokens, lengths, self.vocab_size)
        # Longest first, so each time segment runs a prefix of the rows; steps past the longest are never run.
        order = torch.argsort(lengths.cpu(), descending=True, stable=True)  # (B,)
        lengths = lengths.cpu()[order]  # (B,)
        T = int(lengths[0])  # time actually run
        tokens = tokens.index_select(0, order.to(tokens.device))[:, :T]  # (B, T)
        segments = plan_segments(lengths, self._call_cost(tokens.device.type))
        # Activations are (B, T, .) but stored time-major, as the RNN kernels read them (see time_major): the
        # embedding of tokens.t() is laid out so, and the element-wise dropouts keep their input's layout.
        x = self.embedding(tokens.t()).transpose(0, 1)  # (B, T, E)
        x = self.embed_drop(x, tokens)  # (B, T, E)
        x = self.input_drop(x)  # (B, T, E)
        flip = reverse_index_time_major(lengths, T, x.device) if self.cfg.bidirectional else None  # (T*B,)
        outs: list[Tensor] = []
        for k in range(self.cfg.num_layers):
            if k > 0:
                # Realign the reverse output to natural time, then one mask per (sequence, feature), which
                # commutes with the time reversal below.
                if flip is not None:
                    outs[1] = reverse_within_lengths(outs[1], lengths, flip)
                x = self.hidden_drop(torch.cat(outs, dim=2))  # (B, T, D*H)
                x = time_major(x)  # (B, T, D*H): the one copy the kernels of both directions would each make
            outs = [self._run_direction(f"l{k}", x, segments)]  # (B, T, H)
            if flip is not None:
                # Reversed within each length, pads stay last: the same segments apply. This output stays in
                # reversed time: its step len-1 is the state after reading token 0.
                x_rev = reverse_within_lengths(x, lengths, flip)
                outs.append(self._run_direction(f"l{k}_reverse", x_rev, segments))
        # 'last' reads step len-1 of each run: the end of the forward pass and of the reverse one; 'mean' and
        # 'max' ignore the order of the valid steps, so the last layer's reverse output is never realigned.
        pooled = torch.cat([masked_pool(out, lengths, self.cfg.pooling) for out in outs], dim=1)  # (B, D*H)
        pooled = pooled.index_select(0, torch.argsort(order).to(pooled.device))  # back to the caller's row order
        return self.head(self.output_drop(pooled))  # (B, C)

    def _call_cost(self, device_type: str) -> float:
        """``segment_call_cost`` in the row-steps of the precision the RNN kernels will run in."""
        if torch.is_autocast_enabled(device_type):
            dtype = torch.get_autocast_dtype(device_type)
            if dtype != torch.float32 and rnn_supports_autocast(self.cfg.rnn, device_type, dtype):
                return self.segment_call_cost / LOW_PRECISION_ROW_STEP
        return self.segment_call_cost

    def _run_direction(self, name: str, x: Tensor, segments: list[tuple[int, int, int]]) -> Tensor:
        """All hidden states ``(B, T, H)`` of the one-direction RNN ``rnns[name]`` over ``x[B, T, D]``."""
        rnn = cast(WeightDrop, self.rnns[name])
        if self.training and self.cfg.recurrent_p > 0.0:
            raw = dict(rnn.rnn.named_parameters())
            w_hh = rnn.dropped_weights()["weight_hh_l0"]  # weight drop still applies on the slow path
            weights = (raw["weight_ih_l0"], w_hh, raw["bias_ih_l0"], raw["bias_hh_l0"])
            return time_major(rnn_step_loop(x, weights, self.cfg.rnn, self.cfg.recurrent_p, training=True))
        # One DropConnect mask for the whole pass, shared by its time segments.
        dropped = rnn.dropped_weights() if self.training and rnn.weight_p > 0 else None

        def step(piece: Tensor, state: Any) -> tuple[Tensor, Any]:
            return run_rnn(rnn, piece, self.cfg.rnn, state, weights=dropped)

        return time_major(run_in_segments(step, x, segments))  # a no-op for the kernels' own output

    def extra_repr(self) -> str:
        c = self.cfg
        return f"rnn={c.rnn}, bidirectional={c.bidirectional}, pooling={c.pooling!r}, recurrent_p={c.recurrent_p}"


class NotebookBiLSTM(nn.Module):
    """The notebook's packed BiLSTM (cells In[5] and In[20]), kept so the notebook's runs replay exactly.

    Modules are created in the notebook's order, so ``torch.manual_seed(42)`` initializes the same weights.
    ``lstm_dropout`` is nn.LSTM's inter-layer dropout: with its single layer it does nothing (torch warns).
    """

    def __init__(
        self,
        vocab_size: int = 200,
        embed_dim: int = 32,
        hidden_dim: int = 64,
        num_classes: int = 2,
        lstm_dropout: float = 0.3,
        embed_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_sizes(vocab_size, num_classes)
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
        self.dropout = nn.Dropout(embed_dropout)  # no parameters: consumes no RNG at init, as in the notebook
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True, bidirectional=True, dropout=lstm_dropout)
        self.fc = nn.Linear(hidden_dim * 2, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        check_inputs(tokens, lengths, self.vocab_size)
        emb = self.dropout(self.embedding(tokens))  # (B, T, E)
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = run_rnn(self.lstm, packed, "lstm")  # h_n: (2, B, H), forward and reverse final states
        return self.fc(torch.cat((h_n[-2], h_n[-1]), dim=1))  # (B, C)


def build_model(cfg: ModelConfig, vocab_size: int, num_classes: int) -> nn.Module:
    """The model ``cfg.arch`` names: 'awd' -> SequenceClassifier, 'notebook' -> NotebookBiLSTM.

    For 'notebook', ``hidden_p`` becomes nn.LSTM's ``dropout`` and ``input_p`` the embedding dropout, as in the
    notebook; a setting the notebook model cannot honour raises, one it would silently ignore warns.
    """
    if cfg.arch == "awd":
        return SequenceClassifier(cfg, vocab_size, num_classes)
    if cfg.rnn != "lstm" or not cfg.bidirectional or cfg.num_layers != 1 or cfg.pooling != "last":
        raise ValueError(
            "model.arch='notebook' is a one-layer bidirectional LSTM read at its final states "
            f"(got model.rnn={cfg.rnn!r}, model.bidirectional={cfg.bidirectional}, model.num_layers={cfg.num_layers}, "
            f"model.pooling={cfg.pooling!r}); use model.arch='awd' for other shapes"
        )
    unused = ("embed_p", "weight_p", "output_p", "recurrent_p")
    ignored = [f"model.{name}={getattr(cfg, name)}" for name in unused if getattr(cfg, name) > 0]
    if cfg.hidden_p > 0:
        warnings.warn(
            f"model.hidden_p={cfg.hidden_p} becomes nn.LSTM(dropout=...) of the notebook model, which has one layer: "
            "it does nothing (the notebook's bug, kept for replay); use model.arch='awd' with model.input_p instead",
            RegularizerNoOpWarning,
            stacklevel=2,
        )
    if ignored:
        warnings.warn(
            f"{', '.join(ignored)} not used by model.arch='notebook' (it only has input_p as embedding dropout); "
            "set them to 0, or use model.arch='awd'",
            RegularizerNoOpWarning,
            stacklevel=2,
        )
    with warnings.catch_warnings():
        # torch's own one-layer dropout warning says the same as ours above
        warnings.filterwarnings("ignore", message="dropout option adds dropout after all but last recurrent layer")
        return NotebookBiLSTM(
            vocab_size,
            cfg.embed_dim,
            cfg.hidden_dim,
            num_classes,
            lstm_dropout=cfg.hidden_p,
            embed_dropout=cfg.input_p,
        )
