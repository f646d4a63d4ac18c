"""DAPO's dynamic sampling, DiPO-aware (spec §7), as both adapters decide it: which groups a filter keeps, and — for a
filter that decides before the step, from the queue as it stands — which groups BRR would reallocate."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dipo.core import DiPO, DiPOCoreConfig, find_threshold, groups_to_keep, judge, reallocate


def kept_groups(
    rewards: Tensor,
    group_size: int,
    reallocated: Tensor | None = None,
    valid: Tensor | None = None,
    keep_reallocated: bool = True,
    zero_variance_tol: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """``([B] keep, [B] kept only because BRR reallocated them)`` (:func:`dipo.core.groups_to_keep`; ``reallocated``
    ``None``: plain DAPO, nothing kept by BRR)."""
    plain = groups_to_keep(rewards, group_size, valid=valid, zero_variance_tol=zero_variance_tol)
    if reallocated is None:
        return plain, torch.zeros_like(plain)
    keep = groups_to_keep(
        rewards,
        group_size,
        reallocated,
        valid=valid,
        keep_reallocated=keep_reallocated,
        zero_variance_tol=zero_variance_tol,
    )
    return keep, keep & ~plain


def reallocation_threshold(core: DiPO) -> float:
    """τ* of the PPL queue as it stands, if BRR would act on it (judgment passed or off), else NaN; read-only
    (spec §5: the same rule as :meth:`DiPO.step`, without pushing a batch)."""
    log_ppl, correct = core.queue.values()
    if log_ppl.numel() == 0:
        return math.nan
    tau = find_threshold(log_ppl, correct)
    if math.isnan(tau):
        return math.nan
    cfg = core.config
    if cfg.judgment and not judge(log_ppl, correct, tau, cfg.judgment_confidence).passed:
        return math.nan
    return tau


def predicted_reallocation(
    config: DiPOCoreConfig, rewards: Tensor, log_ppl: Tensor, group_size: int, threshold: float
) -> Tensor:
    """``[B]`` bool: the groups BRR reallocates at ``threshold`` (spec §6), with the run's BRR options.

    ``selection="random"`` moves a random response's reward but reallocates the same groups, so the group decision
    is taken with the maximum-PPL rule and draws nothing from the core's generator.
    """
    out = reallocate(
        rewards,
        log_ppl,
        group_size,
        threshold,
        config.membership,
        reward_mode=config.reward_mode,
        correct_threshold=config.correct_threshold,
        graded_delta=config.graded_delta,
        reallocate_hard=config.reallocate_hard,
        reallocate_easy=config.reallocate_easy,
        zero_variance_tol=config.zero_variance_tol,
        selection="max_ppl",
    )
    return out.hard | out.easy
