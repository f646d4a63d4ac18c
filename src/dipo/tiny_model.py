"""Randomly initialised small decoders built locally from a transformers config (no hub access).

The one builder behind the tests' tiny Qwen2 (:func:`dipo.testing.build_tiny_model`), the demo's Llama
(:func:`dipo.demo.model.build_model`) and the GPU benchmark's random-init policy (:mod:`dipo.benchmarking.policy`);
:func:`build_word_tokenizer` is the word-level tokenizer of the tests and of the benchmark.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

#: ``arch`` choices: name → (transformers config class, causal-LM class).
ARCHITECTURES = {"llama": ("LlamaConfig", "LlamaForCausalLM"), "qwen2": ("Qwen2Config", "Qwen2ForCausalLM")}


def build_decoder(
    arch: str,
    *,
    vocab_size: int,
    hidden_size: int,
    intermediate_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    max_positions: int,
    pad_token_id: int,
    eos_token_id: int,
    seed: int,
    isolate_rng: bool = True,
    **config_kwargs: Any,
) -> Any:
    """A freshly initialised causal LM of architecture ``arch`` ("llama" or "qwen2"): tied input/output embeddings,
    no BOS token, ``pad_token_id`` / ``eos_token_id`` in its config and its generation config. Deterministic given
    ``seed``. ``isolate_rng=True`` seeds inside a forked RNG (the caller's global RNG is untouched); ``False`` seeds
    the global RNG with ``torch.manual_seed(seed)``. ``config_kwargs`` go to the config (e.g. ``rope_theta``)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown arch={arch!r}; choose one of {', '.join(repr(a) for a in ARCHITECTURES)}.")
    config_name, model_name = ARCHITECTURES[arch]
    config = getattr(transformers, config_name)(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        bos_token_id=None,
        **config_kwargs,
    )
    model_class = getattr(transformers, model_name)
    if isolate_rng:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(config)
    else:
        torch.manual_seed(seed)
        model = model_class(config)
    generation = model.generation_config
    generation.pad_token_id, generation.eos_token_id, generation.bos_token_id = pad_token_id, eos_token_id, None
    return model


def build_word_tokenizer(words: Sequence[str], unk_token: str) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` over ``words`` (token id = position), built locally: whitespace-split,
    decodes with spaces, left padding (as generation needs); ``"<pad>"`` and ``"<eos>"`` (which ``words`` must hold)
    are its pad and eos tokens, ``unk_token`` (one of ``words``) stands for any other word."""
    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=unk_token))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins tokens with spaces
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", unk_token=unk_token, padding_side="left"
    )
