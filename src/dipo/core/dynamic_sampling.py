"""DAPO's dynamic sampling, DiPO-aware (spec §7, last paragraph; ``docs/algorithm.md`` "Dynamic sampling").

DAPO drops every group whose rewards are all equal (zero variance: it has no group-relative advantage) and samples
fresh prompts until the batch holds enough groups with signal. BRR acts *only* on zero-variance groups, so plain
dynamic sampling would throw away every group DiPO reallocated. :func:`groups_to_keep` keeps a zero-variance group
when BRR reallocated it (its R_r carries the α-weighted signal), unless ``keep_reallocated=False`` (ablation: DAPO's
filter applied after DiPO).
"""

from __future__ import annotations

from torch import Tensor

from dipo.core._checks import (
    check_1d,
    check_finite_rewards,
    check_group_size,
    check_same_device,
    float_rewards,
    valid_mask,
)
from dipo.core.groups import zero_variance_groups

DS_QUEUE_CHOICES = ("all", "kept")


def groups_to_keep(
    rewards: Tensor,
    group_size: int,
    reallocated: Tensor | None = None,
    *,
    valid: Tensor | None = None,
    keep_reallocated: bool = True,
    zero_variance_tol: float = 1e-6,
) -> Tensor:
    """``[B]`` bool: the groups DiPO-aware dynamic sampling keeps (spec §7; DAPO's dynamic sampling).

    A group is dropped iff its verifier rewards have zero variance — the same test as BRR's extreme groups
    (:func:`dipo.core.zero_variance_groups`, tolerance ``zero_variance_tol × max(1, max|r|)``; binary rewards: all
    equal) — and it was not reallocated by BRR (or ``keep_reallocated`` is False). A group with an invalid row
    (e.g. a reward function that returned None) is never zero-variance, so it is kept, as BRR never touches it.

    Args:
        rewards: ``[N]`` verifier rewards R (never R_r), ``N = B × G``, groups contiguous; float, int or bool.
        group_size: G >= 2.
        reallocated: optional ``[B]`` bool, the groups BRR reallocated this step
            (``DiPOStepOutput.realloc_hard | DiPOStepOutput.realloc_easy``); None = plain DAPO filter.
        valid: optional ``[N]`` bool of rows that have a reward.
        keep_reallocated: keep reallocated zero-variance groups (default; False drops them as plain DAPO would).
        zero_variance_tol: relative tolerance of the zero-variance test (use the DiPO config's ``zero_variance_tol``).
    """
    check_1d("rewards", rewards)
    num_groups = check_group_size(rewards.numel(), group_size)
    check_same_device(rewards=rewards, valid=valid, reallocated=reallocated)
    rewards = float_rewards(rewards)  # float64, as BRR's zero-variance test in DiPO.step
    valid = valid_mask(rewards.numel(), valid, rewards.device)
    check_finite_rewards(rewards, valid)
    keep = ~zero_variance_groups(rewards, valid, group_size, zero_variance_tol)
    if reallocated is not None:
        check_1d("reallocated", reallocated)
        if reallocated.numel() != num_groups:
            raise ValueError(
                f"reallocated must hold one flag per group ({num_groups} groups of {group_size}), "
                f"got {reallocated.numel()}; pass realloc_hard | realloc_easy from DiPO.step."
            )
        if keep_reallocated:
            keep = keep | reallocated.bool()
    return keep


__all__ = ["DS_QUEUE_CHOICES", "groups_to_keep"]
