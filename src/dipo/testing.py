"""Tiny local models, tokenizers, datasets and reward functions for TRL tests and benchmarks (no hub access).

Shared by ``tests/`` (through ``tests/trl_helpers.py``) and ``benchmarks/``: ``build_tiny_model_dir(path)`` writes a
tiny Qwen2 causal LM and a word-level ``PreTrainedTokenizerFast`` (plain-text prompts, no chat template) to ``path``
and returns it; ``load_tiny(path)`` loads both back. Everything is deterministic for a given ``seed``.

Load the tokenizer with ``PreTrainedTokenizerFast.from_pretrained`` (as ``load_tiny`` does): transformers 5's
``AutoTokenizer`` picks ``Qwen2Tokenizer`` from the model config, which misreads this word-level vocabulary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

from dipo.tiny_model import build_decoder, build_word_tokenizer

SPECIAL_TOKENS = ["<pad>", "<eos>", "<unk>"]
WORDS = [
    "easy",
    "hard",
    "mixed",
    "what",
    "is",
    "the",
    "answer",
    "yes",
    "no",
    "a",
    "b",
    "c",
    "d",
    *[str(i) for i in range(10)],
]
VOCAB = SPECIAL_TOKENS + WORDS  # 26 tokens; the model's vocab is padded to 32


def build_tokenizer() -> Any:
    """A word-level fast tokenizer over ``VOCAB`` (whitespace-split; decodes with spaces;
    :func:`dipo.tiny_model.build_word_tokenizer`)."""
    return build_word_tokenizer(VOCAB, unk_token="<unk>")


def build_tiny_model(seed: int = 0, vocab_size: int = 32, hidden_size: int = 16, num_layers: int = 1) -> Any:
    """A randomly initialised tiny ``Qwen2ForCausalLM`` (float32, no dropout; :func:`dipo.tiny_model.build_decoder`,
    seeded on the global RNG), with a bare generation config (pad 0, eos 1)."""
    model = build_decoder(
        "qwen2",
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_layers=num_layers,
        num_heads=2,
        num_kv_heads=1,
        max_positions=64,
        pad_token_id=0,
        eos_token_id=1,
        seed=seed,
        isolate_rng=False,
    )
    model.generation_config = GenerationConfig(pad_token_id=0, eos_token_id=1)
    return model


#: A minimal chat template (messages' contents, space-separated) for tests that need a tokenizer with one.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def build_tiny_model_dir(
    path: str | Path, seed: int = 0, chat_template: str | None = None, **model_kwargs: Any
) -> Path:
    """Save a tiny model and its tokenizer (with ``chat_template``, e.g. :data:`CHAT_TEMPLATE`, if given) to
    ``path`` (created) and return the path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    build_tiny_model(seed=seed, **model_kwargs).save_pretrained(path)
    tokenizer = build_tokenizer()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(path)
    return path


def load_tiny(path: str | Path) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` saved by :func:`build_tiny_model_dir`."""
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    return model, tokenizer


def build_dataset(num_prompts: int = 8) -> Any:
    """Plain-text prompts whose first word says which reward regime applies (see :func:`kind_reward`)."""
    kinds = ["easy", "hard", "mixed", "mixed"]
    prompts = [f"{kinds[i % len(kinds)]} what is the answer {i % 10}" for i in range(num_prompts)]
    return Dataset.from_dict({"prompt": prompts, "kind": [p.split()[0] for p in prompts]})


def kind_reward(completions: Any, completion_ids: list[list[int]], kind: list[str], **kwargs: Any) -> list[float]:
    """Binary reward: 1 for every ``easy`` prompt, 0 for every ``hard`` one (extreme groups by construction), and for
    ``mixed`` prompts 1 iff the first completion token id is even (normally a mix inside the group)."""
    out = []
    for ids, k in zip(completion_ids, kind, strict=True):
        if k == "easy":
            out.append(1.0)
        elif k == "hard":
            out.append(0.0)
        else:
            out.append(float(len(ids) > 0 and ids[0] % 2 == 0))
    return out


def parity_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """Binary reward: 1 iff the completion's first token id is even."""
    return [float(len(ids) > 0 and ids[0] % 2 == 0) for ids in completion_ids]


def tiny_grpo_kwargs(output_dir: str | Path, **overrides: Any) -> dict[str, Any]:
    """Common small, fast, CPU-only, hub-free config arguments for GRPOConfig/DiPOConfig."""
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=6,
        max_steps=3,
        learning_rate=0.05,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=0,
        use_cpu=True,
        bf16=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return kwargs
