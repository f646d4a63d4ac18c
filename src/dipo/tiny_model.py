"""Randomly initialised small decoders built locally from a transformers config (no hub access).

The one builder behind the tests' tiny Qwen2 (:func:`dipo.testing.build_tiny_model`), the demo's Llama
(:func:`dipo.demo.model.build_model`) and the GPU benchmark's random-init policy (:mod:`dipo.benchmarking.policy`).
"""

from __future__ import annotations

from typing import Any

import torch
import transformers

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
