"""Reward-shaping baselines the paper compares DiPO against (spec §11)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dipo.core.advantages import group_advantages


def perplexity_bonus(rewards: Tensor, log_ppl: Tensor, coef: float = 0.1, clip_ratio: float = 0.5) -> Tensor:
    """Spec §11, CDE-style actor curiosity (arXiv 2509.09675): ``r_i + min(coef·s_i, clip_ratio·|r_i|)``.

    Every response's reward gets a bonus growing with its log-PPL ``s_i``, clipped so it never exceeds
    ``clip_ratio`` of the reward's magnitude (so a reward of 0 gets no bonus). Rows with NaN log-PPL get no bonus.
    Unlike BRR this changes every reward, including those of normal groups.
    """
    if coef < 0 or clip_ratio < 0:
        raise ValueError(f"coef and clip_ratio must be >= 0, got coef={coef}, clip_ratio={clip_ratio}.")
    bonus = torch.minimum(coef * log_ppl.clamp(min=0), clip_ratio * rewards.abs())
    return rewards + torch.where(torch.isnan(log_ppl), torch.zeros_like(bonus), bonus)


@dataclass
class PerplexityBonusDelta:
    """What the CDE-style baseline adds to the base advantages, and its two diagnostics (NaN on an empty batch)."""

    delta: Tensor  # [N] advantages of the bonus-shaped rewards minus those of the plain rewards
    bonus_mean: float  # mean bonus over the valid rows
    frac_rows_with_bonus: float  # share of valid rows whose reward got a positive bonus

    def metrics(self, prefix: str = "cde/") -> dict[str, float]:
        return {f"{prefix}bonus_mean": self.bonus_mean, f"{prefix}frac_rows_with_bonus": self.frac_rows_with_bonus}


def perplexity_bonus_delta(
    rewards: Tensor,
    log_ppl: Tensor,
    group_size: int,
    coef: float = 0.1,
    clip_ratio: float = 0.5,
    scale_rewards: str = "group",
    valid: Tensor | None = None,
    std: str = "unbiased",
    eps: float = 1e-4,
) -> PerplexityBonusDelta:
    """Spec §11, CDE-style baseline as an advantage delta: the group advantages of :func:`perplexity_bonus`-shaped
    rewards minus those of the plain rewards (added to the base method's advantages, it trains on the shaped rewards).

    ``scale_rewards``, ``std``, ``eps`` and ``valid`` are passed to :func:`dipo.core.group_advantages` (the defaults
    are TRL's GRPO normalisation).
    """
    shaped = perplexity_bonus(rewards, log_ppl, coef, clip_ratio)
    norm = {"scale_rewards": scale_rewards, "std": std, "eps": eps, "valid": valid}
    bonus = shaped - rewards if valid is None else (shaped - rewards)[valid]
    delta = group_advantages(shaped, group_size, **norm) - group_advantages(rewards, group_size, **norm)
    if bonus.numel() == 0:
        return PerplexityBonusDelta(delta, math.nan, math.nan)
    return PerplexityBonusDelta(delta, float(bonus.mean()), float((bonus > 0).float().mean()))
