"""Adapters: check models whose call convention is not ``model(tokens, lengths) -> logits``.

Every model check takes ``call=``, a function ``call(model, tokens, lengths) -> logits[B, C]``. Write one by hand, or
build one from an input convention and an output convention::

    from rnnreg.testing import adapters, checks

    call = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)
    checks.check_padding_invariance(model, batch, call=call)  # model(input_ids=..., attention_mask=...)[0]

``rnnreg check MODULE:FACTORY --call MODULE:FN`` takes the same function.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "adapter",
    "first",
    "input_ids_attention_mask",
    "logits_attribute",
    "packed_tokens",
    "tokens_and_lengths",
    "tokens_only",
]

Inputs = Callable[[Tensor, Tensor], tuple[tuple[Any, ...], dict[str, Any]]]


def tokens_and_lengths(tokens: Tensor, lengths: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``model(tokens, lengths)``: the default convention."""
    return (tokens, lengths), {}


def tokens_only(tokens: Tensor, lengths: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``model(tokens)``: the model finds the padding itself (from PAD ids)."""
    return (tokens,), {}


def input_ids_attention_mask(tokens: Tensor, lengths: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``model(input_ids=tokens, attention_mask=mask)`` with mask 1 on real tokens and 0 on padding (int64)."""
    steps = torch.arange(tokens.shape[1], device=tokens.device)  # [T]
    mask = (steps[None, :] < lengths.to(tokens.device)[:, None]).long()  # [B, T]
    return (), {"input_ids": tokens, "attention_mask": mask}


def packed_tokens(tokens: Tensor, lengths: Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """``model(PackedSequence of token ids)``, packed with ``enforce_sorted=False`` (rows keep their order)."""
    packed = nn.utils.rnn.pack_padded_sequence(tokens, lengths.cpu(), batch_first=True, enforce_sorted=False)
    return (packed,), {}


def first(output: Any) -> Tensor:
    """``output[0]``: for models returning ``(logits, state)`` or ``(logits, attention)``."""
    if not isinstance(output, (tuple, list)) or not output:
        raise TypeError(f"expected a non-empty tuple whose first item is the logits (got {type(output).__name__})")
    return output[0]


def logits_attribute(output: Any) -> Tensor:
    """``output.logits``: for models returning an output object (Hugging Face style)."""
    if not hasattr(output, "logits"):
        raise TypeError(f"expected an output with a .logits attribute (got {type(output).__name__})")
    return output.logits


def _identity(output: Any) -> Any:
    return output


def adapter(
    inputs: Inputs = tokens_and_lengths, output: Callable[[Any], Tensor] = _identity
) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """A ``call(model, tokens, lengths)`` that builds the model's arguments with ``inputs`` and maps the result
    through ``output``."""
    if not callable(inputs) or not callable(output):
        raise TypeError(
            f"inputs and output must be callables (got {inputs!r}, {output!r}); e.g. "
            "adapter(inputs=input_ids_attention_mask, output=first)"
        )

    def call(model: Any, tokens: Tensor, lengths: Tensor) -> Tensor:
        args, kwargs = inputs(tokens, lengths)
        return output(model(*args, **kwargs))

    call.__name__ = f"adapter({getattr(inputs, '__name__', 'inputs')}, {getattr(output, '__name__', 'output')})"
    return call
