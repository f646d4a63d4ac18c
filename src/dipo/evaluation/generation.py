"""Batched sampling of k completions per prompt with a transformers model (any local folder or Hub id)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from dipo.evaluation.decoding import response_end, sample_sequences
from dipo.tasks.assets import resolve_model

# Imported inside functions: transformers, only to load a model (users of dipo.evaluation.metrics do not pay for it).

logger = logging.getLogger(__name__)


@dataclass
class SamplingConfig:
    """How completions are sampled. ``temperature=0`` means greedy decoding (then k must be 1)."""

    k: int = 8
    max_new_tokens: int = 512
    temperature: float = 0.6
    top_p: float = 0.95
    batch_size: int = 4  # prompts per generate call; each call produces batch_size * k sequences
    seed: int = 0
    chat_template: bool | None = None  # None: use the tokenizer's chat template if it has one

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.k > 1:
            raise ValueError("greedy decoding (temperature=0) gives k identical samples; use k=1 or temperature > 0")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError(
                f"max_new_tokens and batch_size must be >= 1, got {self.max_new_tokens} and {self.batch_size}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass
class Generations:
    """``texts[i][j]``: sample j of prompt i; ``num_tokens`` / ``truncated`` likewise; ``seconds``: wall time."""

    texts: list[list[str]]
    num_tokens: list[list[int]]
    truncated: list[list[bool]]
    seconds: float
    meta: dict[str, Any] = field(default_factory=dict)


def load_model(model: str, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """Model and tokenizer from a local folder or Hub id (``smollm2-135m-instruct``: the converted offline asset).

    ``dtype="auto"``: float32 on CPU, bfloat16 on GPU. The tokenizer pads on the left for batched generation.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype == "auto":
        torch_dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    else:
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype).to(device).eval()
    return lm, tokenizer


def render(prompt: Sequence[dict[str, str]] | str, tokenizer: Any, chat_template: bool | None = None) -> str:
    """Prompt text: chat template (with the generation prompt) if available/asked, else the plain contents."""
    if isinstance(prompt, str):
        return prompt
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise ValueError(
            "chat template requested (--chat_template yes) but the tokenizer has none; use --chat_template auto or no"
        )
    if has_template if chat_template is None else chat_template:
        return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    return plain_prompt(prompt)


def plain_prompt(messages: Sequence[dict[str, str]]) -> str:
    """Chat messages as plain text for a model without a chat template: the contents, separated by blank lines."""
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def encode_prompts(
    prompts: Sequence[Sequence[dict[str, str]] | str], tokenizer: Any, chat_template: bool | None, device: Any
) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` of the rendered prompts (:func:`render`), left-padded, on ``device``.

    A chat template writes the special tokens itself; plain-text prompts get the tokenizer's (e.g. BOS).
    """
    texts = [render(p, tokenizer, chat_template) for p in prompts]
    has_template = bool(getattr(tokenizer, "chat_template", None)) if chat_template is None else chat_template
    add_special = not (has_template and all(not isinstance(p, str) for p in prompts))
    enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special)
    return {key: enc[key].to(device) for key in ("input_ids", "attention_mask")}


def eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token id that ends a response: the model's generation-config EOS ids and the tokenizer's EOS."""
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


#: How :func:`generate` orders the prompts into batches: ``"length"`` (shortest first: less padding; the default) or
#: ``"input"`` (the order given: batch j holds prompts ``j·batch_size ...``).
ORDERS = ("length", "input")
#: How :func:`generate` seeds the global torch RNG: ``"per_batch"`` (``seed + batch index`` before each batch, so a
#: batch's draws do not depend on the batches before it; the default) or ``"once"`` (``seed`` before the first batch:
#: one random stream through every batch, as one long ``generate`` call split into pieces would draw).
SEEDINGS = ("per_batch", "once")


@contextmanager
def evaluating(model: Any) -> Iterator[None]:
    """Evaluate ``model`` in eval mode without disturbing a training run: its train/eval mode is restored afterwards
    and the global CPU RNG (which :func:`generate` reseeds) is left as it was (``fork_rng(devices=[])``)."""
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        model.train(was_training)


@torch.inference_mode()
def generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[dict[str, str]] | str],
    config: SamplingConfig,
    progress: Callable[[int, int], None] | None = None,
    *,
    order: str = "length",
    seeding: str = "per_batch",
    prune_finished: bool = True,
    share_prompt: bool = True,
    grouped_attention: bool = True,
) -> Generations:
    """Sample ``config.k`` completions for every prompt, ``config.batch_size`` prompts per ``generate`` call.

    The k samples of a prompt are consecutive rows of one call (``num_return_sequences``). ``order`` (:data:`ORDERS`)
    chooses which prompts share a batch: by length (less padding) or as given; results come back in input order.
    ``seeding`` (:data:`SEEDINGS`): each batch seeded with ``seed + batch index`` (the default), or ``seed`` once
    before the first. Either way a run is reproducible on the same hardware and batch size. The global torch RNG is
    reseeded and left advanced; callers that must not disturb it wrap the call in ``torch.random.fork_rng``.

    Each batch is one :func:`~dipo.evaluation.decoding.sample_sequences` call: the sampling parameters are
    ``config``'s, with ``top_k=0`` and no repetition penalty whatever the checkpoint's generation config says (as TRL
    samples in training). ``prune_finished`` (drop a response from the batch once it has ended: the draws differ
    from ``generate``'s after the first row ends, from the same distribution), ``share_prompt`` (one prefill per
    prompt for its k samples) and ``grouped_attention`` (grouped-query decode steps without copying the cache);
    all ``False`` gives the plain ``generate`` path (the demo keeps it, so that its published draws stay bit for
    bit).
    """
    for name, value, choices in (("order", order, ORDERS), ("seeding", seeding, SEEDINGS)):
        if value not in choices:
            raise ValueError(f"generate: {name}={value!r} is not one of {', '.join(choices)}")
    texts = [render(p, tokenizer, config.chat_template) for p in prompts]
    batch_order = (
        sorted(range(len(texts)), key=lambda i: len(texts[i])) if order == "length" else list(range(len(texts)))
    )
    stop_ids = eos_ids(model, tokenizer)
    out_text: list[list[str]] = [[] for _ in texts]
    out_tokens: list[list[int]] = [[] for _ in texts]
    out_trunc: list[list[bool]] = [[] for _ in texts]
    device = next(model.parameters()).device
    start = time.perf_counter()
    k = config.k if config.temperature > 0 else 1
    for batch_index, begin in enumerate(range(0, len(batch_order), config.batch_size)):
        idx = batch_order[begin : begin + config.batch_size]
        enc = encode_prompts([prompts[i] for i in idx], tokenizer, config.chat_template, device)
        if seeding == "per_batch" or batch_index == 0:
            torch.manual_seed(config.seed + batch_index)
        responses, _ = sample_sequences(
            model,
            enc,
            k=k,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            eos_token_id=stop_ids,
            pad_token_id=tokenizer.pad_token_id,
            prune_finished=prune_finished,
            share_prompt=share_prompt,
            grouped_attention=grouped_attention,
        )
        for row, ids in enumerate(responses.cpu()):
            target = idx[row // k]
            ids_list = ids.tolist()
            length, truncated = response_end(ids_list, stop_ids)
            out_text[target].append(tokenizer.decode(ids_list[:length], skip_special_tokens=True))
            out_tokens[target].append(length)
            out_trunc[target].append(truncated)
        if progress:
            progress(min(begin + config.batch_size, len(batch_order)), len(batch_order))
    return Generations(out_text, out_tokens, out_trunc, time.perf_counter() - start)
