"""The tiny local models, tokenizers, datasets and rewards of the TRL tests: they live in :mod:`dipo.testing` (shared
with ``benchmarks/``); this module keeps the tests' ``from trl_helpers import ...`` working."""

from dipo.testing import (
    SPECIAL_TOKENS,
    VOCAB,
    WORDS,
    build_dataset,
    build_tiny_model,
    build_tiny_model_dir,
    build_tokenizer,
    kind_reward,
    load_tiny,
    parity_reward,
    tiny_grpo_kwargs,
)

__all__ = [
    "SPECIAL_TOKENS",
    "VOCAB",
    "WORDS",
    "build_dataset",
    "build_tiny_model",
    "build_tiny_model_dir",
    "build_tokenizer",
    "kind_reward",
    "load_tiny",
    "parity_reward",
    "tiny_grpo_kwargs",
]
