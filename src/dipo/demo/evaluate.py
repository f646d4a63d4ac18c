"""Held-out evaluation of the demo model: greedy accuracy, mean@k and pass@k (sampled) per difficulty level.

Generation and metrics are :mod:`dipo.evaluation`'s. The demo's draws are fixed by how it asks for them: prompts in
item order (``order="input"``), one seed for all batches (``seeding="once"``), at most :data:`ROWS_PER_CALL`
sequences per ``generate`` call, plain sampling (top-p 1, no top-k) and all of it inside a forked CPU RNG, so the
training's random stream is untouched. These are the draws of the demo's former own loop, so its published numbers
stay the same (bit for bit when k divides :data:`ROWS_PER_CALL`, as for every k the demo uses)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from dipo.evaluation.generation import SamplingConfig, evaluating, generate
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


#: Sequences per ``generate`` call: greedy, this many prompts; sampled, ``ROWS_PER_CALL // k`` prompts × k samples.
ROWS_PER_CALL = 1024


def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int,
    k: int = 1,
    temperature: float = 0.0,
    seed: int = 0,
) -> list[list[str]]:
    """``k`` completions per prompt (greedy if ``temperature == 0``) through :func:`dipo.evaluation.generate`, with
    the demo's batching and seeding (module docstring); the model is evaluated in eval mode and the global CPU RNG is
    left as it was."""
    config = SamplingConfig(
        k=k,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=1.0,
        batch_size=max(1, ROWS_PER_CALL // k),
        seed=seed,
        chat_template=False,
    )
    # The plain generate path (no pruning, no shared prefill, no grouped decode): the draws of the demo's published
    # numbers bit for bit; on this tiny model the fast path would save nothing worth changing them.
    with evaluating(model):
        plain = {"prune_finished": False, "share_prompt": False, "grouped_attention": False}
        gens = generate(model, tokenizer, prompts, config, order="input", seeding="once", **plain)
    return gens.texts


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
    greedy = [texts[0] for texts in generate_answers(model, tokenizer, prompts, max_new_tokens)]
    greedy_ok = [verify(c, it.answer) for c, it in zip(greedy, items, strict=True)]
    result = EvalResult(greedy=mean_at_k(greedy_ok), mean_at_k=float("nan"), k=k)
    result.greedy_by_level = _by_level(items, greedy_ok, 1)
    if k > 0:
        per_item = generate_answers(model, tokenizer, prompts, max_new_tokens, k, temperature, seed=seed)
        sampled = [text for texts in per_item for text in texts]  # item-major: the k samples of item i at i*k...
        sampled_ok = [verify(c, items[i // k].answer) for i, c in enumerate(sampled)]
        result.mean_at_k = mean_at_k(sampled_ok)
        result.mean_at_k_by_level = _by_level(items, sampled_ok, k)
        result.item_hits = [sum(sampled_ok[i * k : (i + 1) * k]) for i in range(len(items))]
        solved = [pass_at_k(k, hits, k) == 1.0 for hits in result.item_hits]
        result.pass_at_k = mean_at_k(solved)
        result.pass_at_k_by_level = _by_level(items, solved, 1)
        result.filler_rate = sum(c.startswith(" ") for c in sampled) / len(sampled)
    return result
