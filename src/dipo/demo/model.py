"""A tiny decoder built locally from a transformers config (Llama architecture, RoPE) for the arithmetic demo."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from dipo.tiny_model import build_decoder


@dataclass(frozen=True)
class ModelSpec:
    """Size of the demo model. The default has about 0.2 M parameters."""

    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    max_position_embeddings: int = 64

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def build_model(spec: ModelSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> LlamaForCausalLM:
    """A freshly initialised ``LlamaForCausalLM`` of size ``spec`` (:func:`dipo.tiny_model.build_decoder`);
    deterministic given ``seed``, the global RNG untouched."""
    if spec.hidden_size % spec.num_attention_heads:
        raise ValueError(
            f"ModelSpec: hidden_size={spec.hidden_size} must be divisible by num_attention_heads="
            f"{spec.num_attention_heads}"
        )
    return build_decoder(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_layers=spec.num_hidden_layers,
        num_heads=spec.num_attention_heads,
        num_kv_heads=spec.num_attention_heads,
        max_positions=spec.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        seed=seed,
    )


def num_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
