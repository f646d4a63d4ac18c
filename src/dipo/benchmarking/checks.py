"""Semantic checks of the fast generation path (``scripts/gpu_check.py``): the sampler's log-probs against TRL's
loss-side reference forward, and greedy completions of two generation configs token by token."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch

# Imported inside functions: TRL, only when the check runs.


@contextlib.contextmanager
def generation_context(trainer: Any) -> Iterator[None]:
    """As TRL generates: training mode (the compiled step is specialised on it), no grad, no gradient
    checkpointing (which would switch the KV cache off)."""
    from trl.models.utils import disable_gradient_checkpointing

    trainer.model.train()
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        yield


def logprob_check(trainer: Any, generation_config: Any, prompts: list[str], seed: int) -> dict[str, float]:
    """Sample with ``generation_config``; compare the sampled tokens' log-probs from the sampler's own logits with
    TRL's loss-side log-probs (full reference forward, temperature applied) over TRL's completion mask."""
    tok, model = trainer.processing_class, trainer.model
    temperature = float(trainer.temperature)
    rows = [p for p in prompts for _ in range(trainer.num_generations)]
    batch = tok(rows, padding=True, pad_to_multiple_of=trainer.args.pad_to_multiple_of, return_tensors="pt")
    batch = {k: v.to(trainer.accelerator.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    config = copy.deepcopy(generation_config)
    config.output_logits, config.return_dict_in_generate = True, True
    torch.manual_seed(seed)
    with generation_context(trainer):
        out = model.generate(**batch, generation_config=config)
    prompt_len = batch["input_ids"].size(1)
    completion = out.sequences[:, prompt_len:]
    sampler = torch.stack(
        [
            torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, completion[:, t : t + 1]).squeeze(-1)
            for t, logits in enumerate(out.logits)
        ],
        dim=1,
    )
    is_eos = torch.isin(completion, torch.tensor(trainer.eos_token_ids, device=completion.device))
    mask = (is_eos.int().cumsum(dim=1) - is_eos.int()) == 0  # TRL: everything up to and including the first EOS
    with generation_context(trainer):
        reference, _, _ = trainer._get_per_token_logps_and_entropies(
            model,
            out.sequences,
            torch.cat([batch["attention_mask"], mask.long()], dim=1),
            completion.size(1),
            batch_size=max(1, len(rows) // 8),
        )
    diff = (sampler - reference.float()).abs()[mask]
    return {
        "tokens": int(mask.sum()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "mean_logprob": float(reference.float()[mask].mean()),
    }


def greedy_check(trainer: Any, configs: dict[str, Any], prompts: list[str]) -> dict[str, float]:
    """Greedy completions of the default and fast configs on the same weights: identical rows, agreeing prefix."""
    tok, model = trainer.processing_class, trainer.model
    rows = [p for p in prompts for _ in range(trainer.num_generations)]
    batch = tok(rows, padding=True, pad_to_multiple_of=trainer.args.pad_to_multiple_of, return_tensors="pt")
    batch = {k: v.to(trainer.accelerator.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    outs = {}
    for name, config in configs.items():
        config = copy.deepcopy(config)
        config.do_sample = False
        with generation_context(trainer):
            outs[name] = model.generate(**batch, generation_config=config)[:, batch["input_ids"].size(1) :]
    a, b = outs["default"], outs["fast"]
    width = min(a.size(1), b.size(1))
    same = (a[:, :width] == b[:, :width]).int()
    prefix = same.cumprod(dim=1).sum(dim=1).float() / width
    return {"identical_rows": float((prefix == 1).float().mean()), "mean_agreeing_prefix": float(prefix.mean())}
