"""Correctness and group types (spec §1, §2, §6): normal, hard (all wrong) and easy (all right) groups."""

from __future__ import annotations

from enum import IntEnum

import torch
from torch import Tensor


class GroupType(IntEnum):
    NORMAL = 0
    HARD = 1  # every response wrong: zero advantage, needs exploration
    EASY = 2  # every response right: zero advantage, needs exploitation


def correctness(rewards: Tensor, valid: Tensor, correct_threshold: float = 0.5) -> Tensor:
    """Spec §2: ``c_i = 1`` iff the response is judged correct (binary: ``r_i = 1``; graded: ``r_i >= threshold``).

    Invalid rows are never correct.
    """
    return valid & (rewards >= correct_threshold)


def zero_variance_groups(rewards: Tensor, valid: Tensor, group_size: int, tolerance: float = 1e-6) -> Tensor:
    """Spec §6 [choice]: a group is extreme iff all its rows are valid and ``max − min ≤ tolerance × scale``.

    ``scale = max(1, max |r|)`` over the valid rows of the batch. For binary rewards this is "all equal". Returns a
    ``[B]`` bool tensor. A group with an invalid row is never extreme.
    """
    r = rewards.view(-1, group_size)
    v = valid.view(-1, group_size)
    finite_r = torch.where(v, r, torch.zeros_like(r))
    scale = finite_r.abs().max().clamp(min=1.0) if r.numel() else torch.tensor(1.0)
    spread = torch.where(v, r, torch.full_like(r, -torch.inf)).amax(1) - torch.where(
        v, r, torch.full_like(r, torch.inf)
    ).amin(1)
    return v.all(1) & (spread <= tolerance * scale)


def classify_groups(
    rewards: Tensor, valid: Tensor, group_size: int, correct_threshold: float = 0.5, tolerance: float = 1e-6
) -> Tensor:
    """``[B]`` long tensor of :class:`GroupType`: extreme groups are hard if their common value is below
    ``correct_threshold`` (all wrong), else easy (all right); all other groups are normal."""
    extreme = zero_variance_groups(rewards, valid, group_size, tolerance)
    common = rewards.view(-1, group_size).mean(1)
    types = torch.full(extreme.shape, int(GroupType.NORMAL), dtype=torch.long, device=rewards.device)
    types[extreme & (common < correct_threshold)] = int(GroupType.HARD)
    types[extreme & (common >= correct_threshold)] = int(GroupType.EASY)
    return types
