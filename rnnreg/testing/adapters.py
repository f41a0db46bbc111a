"""Adapters: check models whose call convention is not ``model(tokens, lengths) -> logits``.

Every model check takes ``call=``, a function ``call(model, tokens, lengths) -> logits[B, C]``. Write one by hand, or
build one from an input convention and an output convention::

    from rnnreg.testing import adapters, checks

    call = adapters.adapter(inputs=adapters.input_ids_attention_mask, output=adapters.first)
    checks.check_padding_invariance(model, batch, call=call)  # model(input_ids=..., attention_mask=...)[0]

Models that need rows sorted by decreasing length (``pack_padded_sequence(..., enforce_sorted=True)``) take
``call=adapters.sorted_by_length()``, or ``sorted_by_length(call)`` around another call.

``rnnreg check MODULE:FACTORY --call MODULE:FN`` takes the same function.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "adapter",
    "first",
    "input_ids_attention_mask",
    "logits_attribute",
    "packed_tokens",
    "sorted_by_length",
    "tokens_and_lengths",
    "tokens_only",
]

Inputs = Callable[[Tensor, Tensor], tuple[tuple[Any, ...], dict[str, Any]]]
Call = Callable[[Any, Tensor, Tensor], Any]  # call(model, tokens, lengths) -> logits[B, C]


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
    """``output[0]``: for models returning ``(logits, state)`` or ``(logits, attention)``, or a mapping whose first
    value is the logits (a Hugging Face ``ModelOutput``; as its ``output[0]``, values that are None are passed over)."""
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    if isinstance(output, Mapping):
        values = [v for v in output.values() if v is not None]
        if values:
            return values[0]
    raise TypeError(
        f"expected a non-empty tuple or list whose first item is the logits, or a mapping whose first value is "
        f"(got {type(output).__name__}); for an output object with a .logits attribute use logits_attribute"
    )


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


def sorted_by_length(call: Call | None = None) -> Callable[[Any, Tensor, Tensor], Tensor]:
    """A ``call(model, tokens, lengths)`` for models that need the rows sorted by decreasing length
    (``pack_padded_sequence(..., enforce_sorted=True)``, as pipelines with torchtext's ``sort_within_batch=True``):
    sorts the rows (stable), calls ``call`` (default: ``model(tokens, lengths)``) and returns the logits in the
    original row order."""
    if call is not None and not callable(call):
        raise TypeError(
            f"call must be a function call(model, tokens, lengths) -> logits or None (got {call!r}); e.g. "
            "sorted_by_length(adapter(output=first))"
        )

    def sorted_call(model: Any, tokens: Tensor, lengths: Tensor) -> Tensor:
        order = torch.sort(lengths.cpu(), descending=True, stable=True).indices  # [B], longest row first
        sorted_tokens, sorted_lengths = tokens[order.to(tokens.device)], lengths[order.to(lengths.device)]
        out = model(sorted_tokens, sorted_lengths) if call is None else call(model, sorted_tokens, sorted_lengths)
        if not isinstance(out, Tensor) or out.dim() == 0 or out.shape[0] != len(order):
            got = f"a tensor of shape {tuple(out.shape)}" if isinstance(out, Tensor) else type(out).__name__
            raise TypeError(
                f"sorted_by_length needs logits[B, C] with B={len(order)} to put back in order (got {got}); "
                "adapt the output inside it, e.g. sorted_by_length(adapter(output=first))"
            )
        return out[torch.argsort(order).to(out.device)]  # row i of the result is row i of the caller's batch

    sorted_call.__name__ = f"sorted_by_length({getattr(call, '__name__', 'call') if call is not None else ''})"
    return sorted_call
