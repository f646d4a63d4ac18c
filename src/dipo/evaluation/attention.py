"""Grouped-query attention at one-token decode steps without expanding the key/value cache (faster CPU sampling).

transformers' ``sdpa`` attention copies every key/value head once per query head of its group (``repeat_kv``) before
calling :func:`torch.nn.functional.scaled_dot_product_attention` whenever an attention mask is passed, which is
always once a batch is left-padded. While sampling, that copy of the whole cache at every step dominates long
responses (Qwen2.5-0.5B: 14 query heads on 2 key/value heads, so 7 copies). At a decode step the query has a single
position, so the query heads of a group can take the place of query positions instead: ``[B, H, 1, D]`` becomes
``[B, KV, H/KV, D]`` and attends to the cache ``[B, KV, L, D]`` as it is, under the same padding mask (broadcast over
the group). The result is the same attention up to float rounding. Prefill (several query positions) and anything
outside this shape go to transformers' ``sdpa`` unchanged.

    with grouped_decode_attention(model):
        model.generate(...)

``benchmarks/sampling_bench.py`` and ``docs/results/sampling.md`` have the measured speed-up.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

#: The name under which the attention function (and its mask, transformers' sdpa mask) is registered.
GROUPED_DECODE_SDPA = "dipo_grouped_decode_sdpa"


def _is_grouped_decode(module: Any, query: torch.Tensor, mask: torch.Tensor | None, kwargs: dict[str, Any]) -> bool:
    """One query position, query heads in groups, a mask shared by the heads, and nothing sdpa itself would reject."""
    if query.shape[2] != 1 or getattr(module, "num_key_value_groups", 1) <= 1:
        return False
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1):
        return False
    extras = ("s_aux", "softcap")  # attention sinks, logit soft-capping: left to the reference path
    return not kwargs.get("output_attentions") and all(kwargs.get(name) is None for name in extras)


def grouped_decode_sdpa(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; returns ``([B, q, H, D], None)`` like its ``sdpa``."""
    if dropout > 0.0 or not _is_grouped_decode(module, query, attention_mask, kwargs):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    batch, heads, _, dim = query.shape
    # Query head j uses key/value head j // groups (repeat_kv's order), so the heads of a group are contiguous.
    grouped = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Register the attention function and its mask with transformers (idempotent); returns the name."""
    AttentionInterface.register(GROUPED_DECODE_SDPA, grouped_decode_sdpa)
    AttentionMaskInterface.register(GROUPED_DECODE_SDPA, sdpa_mask)
    return GROUPED_DECODE_SDPA


@contextmanager
def grouped_decode_attention(model: Any) -> Iterator[bool]:
    """Within the block, a model on transformers' ``sdpa`` attention runs :func:`grouped_decode_sdpa`; any other
    attention (eager, flash, ...) is left alone. Yields whether the switch was made; restored on exit."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    config._attn_implementation = register()
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"
