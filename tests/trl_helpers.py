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


def reference_log_ppl(model, output):
    """Per-response log-PPL of a TRL batch ``output`` by one plain forward of ``model`` (temperature 1): the
    reference the trainer's own log-PPL is checked against."""
    import torch

    with torch.no_grad():
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logps = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        c = output["completion_ids"].size(1)
        logps, cmask = logps[:, -c:], output["completion_mask"].float()
        return -(logps * cmask).sum(1) / cmask.sum(1)


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
    "reference_log_ppl",
    "tiny_grpo_kwargs",
]
