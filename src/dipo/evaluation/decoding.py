"""The one ``model.generate`` call behind every sampler of dipo (held-out evaluation, the demo, ``dipo probe``).

Each caller forms, encodes (:func:`dipo.evaluation.generation.encode_prompts`) and seeds its batches its own way;
the call itself is shared, so that they all sample the same distribution the same fast way:

- :func:`sample_sequences`: ``k`` responses per prompt from one ``generate`` call. Every sampling parameter is
  dipo's, none comes from the checkpoint's generation config: ``top_k=0`` and ``repetition_penalty=1`` as TRL samples
  in training (instruct checkpoints often ship a penalty, Qwen2.5-Instruct 1.05–1.1, which would change the
  distribution). By default each prompt is prefilled once for its ``k`` samples (:func:`shared_prompt_cache`) and
  decode steps read a grouped-query cache in place (:func:`~dipo.evaluation.attention.grouped_decode_attention`);
  both change only float rounding and can be turned off (the reference paths of ``benchmarks/sampling_bench.py``).
- :func:`response_end`: where a response stops (its first EOS, included) and whether it was truncated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessorList

from dipo.evaluation.attention import grouped_decode_attention


def mask_positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids of left-padded rows: each real token's index among the real tokens of its row, as ``generate``
    numbers them (padding gets 0; it is masked out anyway)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


@torch.inference_mode()
def shared_prompt_cache(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int
) -> DynamicCache | None:
    """The KV cache of every prompt but its last token, computed once per prompt and repeated for its ``k`` samples.

    ``generate(num_return_sequences=k)`` copies each prompt ``k`` times *before* the prefill, so each sample pays for
    the whole prompt again; with short answers that prefill is most of the work (a chat-templated prompt of ~45
    tokens against answers of 2–5). With this cache, ``generate`` runs on the ``k`` copies but feeds only their last
    prompt token. Positions follow the attention mask, as in ``generate``. The sampling distribution is unchanged;
    the prompt's keys and values differ from the unshared prefill only by float rounding (a batch of B rows instead of
    B·k). ``None`` when there is nothing to share (``k = 1`` or one-token prompts).
    """
    if k < 2 or input_ids.shape[1] < 2:
        return None
    cache = DynamicCache(config=model.config)
    positions = mask_positions(attention_mask)
    model(
        input_ids=input_ids[:, :-1],
        attention_mask=attention_mask[:, :-1],
        position_ids=positions[:, :-1],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    cache.batch_repeat_interleave(k)
    return cache


@torch.inference_mode()
def sample_sequences(
    model: Any,
    enc: dict[str, torch.Tensor],
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_token_id: list[int],
    pad_token_id: int | None,
    logits_processor: LogitsProcessorList | None = None,
    share_prompt: bool = True,
    grouped_attention: bool = True,
) -> torch.Tensor:
    """Prompt and response ids, ``[B·k, prompt width + new tokens]``: the ``k`` samples of prompt ``b`` are rows
    ``b·k … b·k + k − 1``. ``temperature=0``: greedy decoding (``k`` must be 1).

    The caller seeds the global torch RNG; the shared prefill draws nothing from it, so the same seed gives the same
    draws with or without it (up to the float rounding noted in :func:`shared_prompt_cache`).
    """
    greedy = temperature == 0
    if greedy and k != 1:
        raise ValueError(f"greedy decoding (temperature=0) gives k identical samples; use k=1, got k={k}")
    options: dict[str, Any] = {"do_sample": not greedy, "repetition_penalty": 1.0}
    if not greedy:
        options.update(temperature=temperature, top_p=top_p, top_k=0)
    with grouped_decode_attention(model) if grouped_attention else contextlib.nullcontext():
        cache = shared_prompt_cache(model, enc["input_ids"], enc["attention_mask"], k) if share_prompt else None
        if cache is not None:
            inputs = {key: enc[key].repeat_interleave(k, dim=0) for key in ("input_ids", "attention_mask")}
        else:
            inputs = {key: enc[key] for key in ("input_ids", "attention_mask")}
        return model.generate(
            **inputs,
            **options,
            past_key_values=cache,
            num_return_sequences=1 if cache is not None else k,
            max_new_tokens=max_new_tokens,
            logits_processor=logits_processor or LogitsProcessorList(),
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            return_dict_in_generate=False,
        )


def response_end(ids: Sequence[int], stop: Sequence[int]) -> tuple[int, bool]:
    """``(length, truncated)`` of a generated row: up to and including its first token in ``stop``; a row with
    none ran into the length limit (truncated) and keeps all its tokens."""
    ended = next((j for j, t in enumerate(ids) if t in stop), None)
    return (len(ids), True) if ended is None else (ended + 1, False)
