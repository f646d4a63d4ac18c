"""Reward-shaping baselines the paper compares DiPO against (spec §11)."""

from __future__ import annotations

import torch
from torch import Tensor


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
