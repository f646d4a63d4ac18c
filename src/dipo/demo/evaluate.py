"""Held-out evaluation of the demo model: greedy accuracy, mean@k and pass@k (sampled) per difficulty level.

The metrics are :mod:`dipo.evaluation.metrics`'. The generation loop stays the demo's own: it samples all ``k × items``
rows from one seed inside a forked RNG (training's RNG untouched) in chunks of 1024 rows, in item order, whereas
:func:`dipo.evaluation.generation.generate` sorts prompts by length and reseeds every batch — its draws, and so the
demo's published numbers, would change."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dipo.evaluation.metrics import mean_at_k, pass_at_k
from dipo.tasks.arithmetic import ArithmeticItem, verify


@dataclass
class EvalResult:
    """Accuracies in [0, 1]: overall and per level, greedy, mean@k and pass@k; per-item sampled hits."""

    greedy: float
    mean_at_k: float
    k: int
    greedy_by_level: dict[int, float] = field(default_factory=dict)
    mean_at_k_by_level: dict[int, float] = field(default_factory=dict)
    pass_at_k: float = float("nan")
    pass_at_k_by_level: dict[int, float] = field(default_factory=dict)
    item_hits: list[int] = field(default_factory=list)  # correct samples (of k) per item
    filler_rate: float = float("nan")  # share of sampled completions that start with a space (surface form)

    def as_dict(self) -> dict[str, object]:
        return {
            "greedy": self.greedy,
            "mean_at_k": self.mean_at_k,
            "k": self.k,
            "greedy_by_level": {str(k): v for k, v in self.greedy_by_level.items()},
            "mean_at_k_by_level": {str(k): v for k, v in self.mean_at_k_by_level.items()},
            "pass_at_k": self.pass_at_k,
            "pass_at_k_by_level": {str(k): v for k, v in self.pass_at_k_by_level.items()},
            "item_hits": list(self.item_hits),
            "filler_rate": self.filler_rate,
        }


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    do_sample: bool,
    temperature: float = 1.0,
    batch_size: int = 1024,
    seed: int = 0,
) -> list[str]:
    """Completions (special tokens removed) for ``prompts``, batched with left padding."""
    was_training = model.training
    model.eval()
    out: list[str] = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                temperature=temperature if do_sample else None,
                top_k=0 if do_sample else None,
                top_p=1.0 if do_sample else None,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            out.extend(tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    model.train(was_training)
    return out


def _by_level(items: Sequence[ArithmeticItem], correct: Sequence[bool], repeat: int) -> dict[int, float]:
    """Mean of ``correct`` (``repeat`` consecutive entries per item) per difficulty level (:func:`mean_at_k`)."""
    by_level: dict[int, list[bool]] = defaultdict(list)
    for i, ok in enumerate(correct):
        by_level[items[i // repeat].level].append(bool(ok))
    return {level: mean_at_k(hits) for level, hits in sorted(by_level.items())}


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[ArithmeticItem],
    k: int = 8,
    max_new_tokens: int = 8,
    temperature: float = 1.0,
    seed: int = 0,
) -> EvalResult:
    """Greedy accuracy, mean@k and pass@k (k samples per item at ``temperature``) on ``items``; the metrics are
    :mod:`dipo.evaluation.metrics`' (pass@k with n = k samples: 1 if any sample is correct)."""
    if not items:
        raise ValueError("evaluate: empty item list; build it with ArithmeticTask.heldout_set(n_per_level)")
    prompts = [it.prompt for it in items]
    greedy = generate_answers(model, tokenizer, prompts, max_new_tokens, do_sample=False)
    greedy_ok = [verify(c, it.answer) for c, it in zip(greedy, items, strict=True)]
    result = EvalResult(greedy=mean_at_k(greedy_ok), mean_at_k=float("nan"), k=k)
    result.greedy_by_level = _by_level(items, greedy_ok, 1)
    if k > 0:
        sampled = generate_answers(
            model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens, True, temperature, seed=seed
        )
        sampled_ok = [verify(c, items[i // k].answer) for i, c in enumerate(sampled)]
        result.mean_at_k = mean_at_k(sampled_ok)
        result.mean_at_k_by_level = _by_level(items, sampled_ok, k)
        result.item_hits = [sum(sampled_ok[i * k : (i + 1) * k]) for i in range(len(items))]
        solved = [pass_at_k(k, hits, k) == 1.0 for hits in result.item_hits]
        result.pass_at_k = mean_at_k(solved)
        result.pass_at_k_by_level = _by_level(items, solved, 1)
        result.filler_rate = sum(c.startswith(" ") for c in sampled) / len(sampled)
    return result
