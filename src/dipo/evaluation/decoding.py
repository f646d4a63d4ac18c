"""The sampling call behind every sampler of dipo (held-out evaluation, ``dipo eval``, the demo, ``dipo probe``).

Each caller forms, encodes (:func:`dipo.evaluation.generation.encode_prompts`) and seeds its batches its own way;
:func:`sample_sequences` is shared, so that they all sample the same distribution the same fast way. Every sampling
parameter is dipo's, none comes from the checkpoint's generation config: ``top_k=0`` and no repetition penalty, as
TRL samples in training (instruct checkpoints often ship a penalty, Qwen2.5-Instruct 1.05–1.1, which would change the
distribution). Two decoders draw from that distribution:

- :func:`decode_pruned` (the default): a plain decode loop that drops each response from the batch once it has
  ended, so that a batch of chains of thought stops paying for its finished rows (``generate`` keeps computing them
  until the longest row ends), and that prefills each prompt once for its ``k`` samples.
- ``model.generate`` (``prune_finished=False``): transformers' own loop, with the prompt's cache shared across the k
  samples (:func:`shared_prompt_cache`) unless ``share_prompt=False``.

Both read a grouped-query cache in place at decode steps (:func:`~dipo.evaluation.attention.grouped_decode_attention`)
unless ``grouped_attention=False``. Until the first response ends, both decoders make the same random draws from the
same seed; after that the pruned loop draws for fewer rows, so the samples differ but come from the same
distribution. ``benchmarks/sampling_bench.py`` measures each path against the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache, LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

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


class SampledTokenLogps(LogitsProcessor):
    """Records ``log softmax(z_t / T)[y_t]`` of every sampled token during ``generate``, one step's distribution at a
    time, and applies the temperature itself (``generate`` then runs with ``temperature=1``).

    ``generate(..., output_logits=True)`` would keep every step's logits until the end: rows × steps × vocabulary fp32,
    10 GB for 32 rows × 512 tokens × Qwen's 152k vocabulary, and three times that to take their log-softmax. Here the
    distribution of step t is kept only until step t + 1, whose ``input_ids`` end with the token drawn from it; the
    last step's token is gathered from the returned sequences by :meth:`token_logps`. Placed before top-p, with no
    warper of ``generate``'s own before it, it sees the raw logits as ``output_logits`` would and divides them by ``T``
    exactly as ``TemperatureLogitsWarper`` does, so the drawn tokens are unchanged.
    """

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self._pending: torch.Tensor | None = None
        self._logps: list[torch.Tensor] = []

    def _collect(self, input_ids: torch.Tensor) -> None:
        if self._pending is not None:
            self._logps.append(self._pending.gather(-1, input_ids[:, -1:]).squeeze(-1))
            self._pending = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        self._collect(input_ids)
        scores = scores / self.temperature
        self._pending = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def token_logps(self, sequences: torch.Tensor) -> torch.Tensor:
        """``[rows, steps]`` log-probs of the generated tokens, given ``generate``'s returned ``sequences``."""
        self._collect(sequences)
        if not self._logps:
            return torch.zeros(sequences.shape[0], 0)
        return torch.stack(self._logps, dim=1)


@torch.inference_mode()
def decode_pruned(
    model: Any,
    enc: dict[str, torch.Tensor],
    *,
    k: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    eos_token_id: Sequence[int],
    pad_token_id: int | None,
    record_logps: bool = False,
    share_prompt: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(responses, token_logps)``: ``[B·k, steps]`` response ids (``pad_token_id`` after a row's EOS) and, with
    ``record_logps``, ``log softmax(z_t / T)[y_t]`` of each drawn token (else ``None``); ``steps`` is the longest
    response's length.

    Each step is ``generate``'s sampling step: the logits divided by ``T``, top-p, softmax, one ``multinomial`` draw
    per row (``argmax`` when ``temperature=0``). A row that draws an EOS leaves the batch and the cache
    (``batch_select_indices``); the others go on with the positions and padding mask they had. The prompts are
    prefilled once (with ``share_prompt``, B rows whose cache and last logits are repeated k times; without it, the
    B·k copies), and the first response token is drawn from that prefill's logits.
    """
    greedy = temperature == 0
    stop = torch.tensor(list(eos_token_id), device=enc["input_ids"].device)
    top_p_warper = TopPLogitsWarper(top_p=top_p) if not greedy and top_p < 1.0 else None
    copies = 1 if share_prompt else k
    ids, mask = (enc[key].repeat_interleave(copies, dim=0) for key in ("input_ids", "attention_mask"))
    positions = mask_positions(mask)
    cache = DynamicCache(config=model.config)
    logits = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
        logits_to_keep=1,
    ).logits[:, -1]  # fmt: skip
    next_position = positions[:, -1] + 1
    if copies < k:
        cache.batch_repeat_interleave(k)
        logits, mask, next_position = (t.repeat_interleave(k, dim=0) for t in (logits, mask, next_position))
    rows = logits.shape[0]
    fill = pad_token_id if pad_token_id is not None else 0
    responses = torch.full((rows, max_new_tokens), fill, dtype=ids.dtype, device=ids.device)
    logps_out = torch.zeros(rows, max_new_tokens, device=ids.device) if record_logps else None
    active = torch.arange(rows, device=ids.device)
    steps = 0
    for step in range(max_new_tokens):
        scores = logits.float() if greedy else logits.float() / temperature
        if greedy:
            token = torch.argmax(scores, dim=-1)
        else:
            warped = top_p_warper(None, scores) if top_p_warper is not None else scores
            token = torch.multinomial(torch.softmax(warped, dim=-1), num_samples=1).squeeze(1)
        responses[active, step] = token
        if logps_out is not None:
            drawn = torch.log_softmax(scores, dim=-1).gather(-1, token[:, None]).squeeze(1)
            logps_out[active, step] = drawn
        steps = step + 1
        going = ~torch.isin(token, stop)
        if step + 1 == max_new_tokens or not going.any():
            break
        if not going.all():
            keep = going.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, token, mask, next_position = active[keep], token[keep], mask[keep], next_position[keep]
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        logits = model(
            input_ids=token[:, None], attention_mask=mask, position_ids=next_position[:, None],
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        ).logits[:, -1]  # fmt: skip
        next_position = next_position + 1
    return responses[:, :steps], (logps_out[:, :steps] if logps_out is not None else None)


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
    record_logps: bool = False,
    prune_finished: bool = True,
    share_prompt: bool = True,
    grouped_attention: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(responses, token_logps)``: ``[B·k, steps]`` response ids, the ``k`` samples of prompt ``b`` in rows
    ``b·k … b·k + k − 1`` (anything after a row's first EOS is padding), and with ``record_logps`` the tempered
    log-prob ``log softmax(z_t / T)[y_t]`` of each (``None`` otherwise). ``temperature=0``: greedy (``k`` must be 1).

    ``prune_finished`` picks :func:`decode_pruned` (default) or ``model.generate`` (with :class:`SampledTokenLogps`
    recording the log-probs); ``share_prompt`` and ``grouped_attention`` as in the module docstring. The caller
    seeds the global torch RNG; the prefill draws nothing from it.
    """
    greedy = temperature == 0
    if greedy and k != 1:
        raise ValueError(f"greedy decoding (temperature=0) gives k identical samples; use k=1, got k={k}")
    if greedy and record_logps:
        raise ValueError(
            "record_logps needs sampling (temperature > 0): the log-probs are those of the tempered policy"
        )
    sampling = {"k": k, "max_new_tokens": max_new_tokens, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id}
    with grouped_decode_attention(model) if grouped_attention else contextlib.nullcontext():
        if prune_finished:
            return decode_pruned(
                model, enc, temperature=temperature, top_p=top_p, record_logps=record_logps,
                share_prompt=share_prompt, **sampling,
            )  # fmt: skip
        return _generate(model, enc, temperature, top_p, record_logps, share_prompt, **sampling)


def _generate(
    model: Any,
    enc: dict[str, torch.Tensor],
    temperature: float,
    top_p: float,
    record_logps: bool,
    share_prompt: bool,
    *,
    k: int,
    max_new_tokens: int,
    eos_token_id: list[int],
    pad_token_id: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`sample_sequences` through ``model.generate``."""
    greedy = temperature == 0
    # With the recorder, it applies the temperature (then top-p), so generate adds no warper of its own; the drawn
    # tokens are those generate's own warpers would draw.
    recorder = SampledTokenLogps(temperature) if record_logps else None
    processors = LogitsProcessorList([recorder] if recorder else [])
    if recorder and top_p < 1.0:
        processors.append(TopPLogitsWarper(top_p=top_p))
    options: dict[str, Any] = {"do_sample": not greedy, "repetition_penalty": 1.0}
    if not greedy:
        options.update(temperature=1.0 if recorder else temperature, top_p=1.0 if recorder else top_p, top_k=0)
    cache = shared_prompt_cache(model, enc["input_ids"], enc["attention_mask"], k) if share_prompt else None
    if cache is not None:
        inputs = {key: enc[key].repeat_interleave(k, dim=0) for key in ("input_ids", "attention_mask")}
    else:
        inputs = {key: enc[key] for key in ("input_ids", "attention_mask")}
    sequences = model.generate(
        **inputs,
        **options,
        past_key_values=cache,
        num_return_sequences=1 if cache is not None else k,
        max_new_tokens=max_new_tokens,
        logits_processor=processors,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        return_dict_in_generate=False,
    )
    responses = sequences[:, enc["input_ids"].shape[1] :]
    return responses, (recorder.token_logps(sequences) if recorder else None)


def response_end(ids: Sequence[int], stop: Sequence[int]) -> tuple[int, bool]:
    """``(length, truncated)`` of a generated row: up to and including its first token in ``stop``; a row with
    none ran into the length limit (truncated) and keeps all its tokens."""
    ended = next((j for j, t in enumerate(ids) if t in stop), None)
    return (len(ids), True) if ended is None else (ended + 1, False)
