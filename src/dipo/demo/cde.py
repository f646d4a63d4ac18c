"""CDE-style perplexity bonus (spec §11, arXiv 2509.09675) as a TRL reward function.

TRL's reward functions never see log-probs, so this callable holds a reference to the policy (set
``bonus.model = trainer.model`` after building the trainer) and computes each response's log-PPL with one no-grad
forward pass over ``prompt + completion_ids`` (the ``completion_ids`` that TRL passes to every reward function).
The bonus itself is :func:`dipo.core.perplexity_bonus` minus the verifier reward, so that summing this column with
the verifier's (TRL's reward sum) gives exactly ``r + min(coef·s, clip_ratio·|r|)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from dipo.core import perplexity_bonus, sequence_log_ppl
from dipo.demo.instruments import completion_logits


class PerplexityBonusReward:
    """Reward function ``fn(prompts, completions, completion_ids, **kw) -> list[float]`` adding the CDE bonus."""

    def __init__(
        self,
        verifier: Callable[..., list[float]],
        tokenizer: PreTrainedTokenizerBase,
        coef: float = 0.1,
        clip_ratio: float = 0.5,
    ) -> None:
        if coef < 0 or clip_ratio < 0:
            raise ValueError(f"PerplexityBonusReward: coef={coef} and clip_ratio={clip_ratio} must be >= 0")
        self.verifier, self.tokenizer, self.coef, self.clip_ratio = verifier, tokenizer, coef, clip_ratio
        self.model: torch.nn.Module | None = None
        self.__name__ = f"cde_bonus_{coef:g}"

    def log_ppl(self, prompts: list[str], completion_ids: list[list[int]]) -> torch.Tensor:
        """Per-response mean token NLL of ``completion_ids`` given ``prompts`` under ``self.model`` (spec §3)."""
        if self.model is None:
            raise ValueError("PerplexityBonusReward.model is not set: assign `bonus.model = trainer.model` first")
        logits, ids, cmask = completion_logits(self.model, self.tokenizer, prompts, completion_ids)
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids.unsqueeze(-1))
        return sequence_log_ppl(logps.squeeze(-1), cmask)

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kwargs: Any):
        rewards = torch.tensor(self.verifier(prompts=prompts, completions=completions, **kwargs), dtype=torch.float32)
        s = self.log_ppl([str(p) for p in prompts], completion_ids)
        return (perplexity_bonus(rewards, s, self.coef, self.clip_ratio) - rewards).tolist()
