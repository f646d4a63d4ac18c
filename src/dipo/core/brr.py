"""Bidirectional Reward Reallocation (spec §6)."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from dipo.core._checks import (
    cast_result,
    check_1d,
    check_binary_rewards,
    check_choice,
    check_finite_rewards,
    check_group_size,
    check_log_ppl,
    check_same_device,
    check_same_shape,
    float_rewards,
    lookup,
    output_dtype,
    threshold_as,
    valid_mask,
)
from dipo.core.groups import GroupType, classify_groups

REWARD_MODES = ("binary", "graded")


@dataclass(frozen=True)
class Reallocation:
    """Everything BRR decided for one batch.

    Attributes:
        rewards: ``[N]`` R_r — equal to R except in reallocated groups.
        mask: ``[N]`` bool, rows of reallocated groups.
        group_types: ``[B]`` :class:`GroupType` of every group.
        selected: ``[B]`` index inside the group of the maximum-PPL response (``-1`` if the group has no valid PPL).
        hard: ``[B]`` bool, reallocated hard groups (maximum-PPL reward).
        easy: ``[B]`` bool, reallocated easy groups (maximum-PPL penalty).
    """

    rewards: Tensor
    mask: Tensor
    group_types: Tensor
    selected: Tensor
    hard: Tensor
    easy: Tensor


def select_max_ppl(log_ppl: Tensor, group_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Spec §6: index of the maximum-PPL response of each group (valid rows only; ties → lowest index; -1 if none).

    ``generator`` is unused (the rule draws nothing); it gives every rule of :data:`SELECTION_RULES` one signature.
    """
    s = log_ppl.view(-1, group_size)
    has_valid = ~torch.isnan(s)
    masked = torch.where(has_valid, s, torch.full_like(s, -torch.inf))
    idx = masked.argmax(dim=1)  # torch.argmax returns the first maximal index
    return torch.where(has_valid.any(1), idx, torch.full_like(idx, -1))


def select_random(log_ppl: Tensor, group_size: int, generator: torch.Generator | None = None) -> Tensor:
    """Control for spec §6 [choice: selection="random"]: a uniformly random valid response of each group (-1 if none).

    Used to test whether choosing the *maximum-PPL* response matters: the same groups are reallocated, but the reward
    of a random response moves instead. Draws come from ``generator`` (CPU), so the choice is reproducible and equal
    on every process that shares the generator state.
    """
    s = log_ppl.view(-1, group_size)
    has_valid = ~torch.isnan(s)
    noise = torch.rand(s.shape, generator=generator, dtype=torch.float64).to(s.device)
    noise = torch.where(has_valid, noise, torch.full_like(noise, -1.0))
    idx = noise.argmax(dim=1)
    return torch.where(has_valid.any(1), idx, torch.full_like(idx, -1))


#: ``selection`` choices (spec §6): name → rule ``(log_ppl [N], group_size, generator) -> [B]`` index inside each group
#: of the response whose reward BRR moves (-1: none). "max_ppl" is the paper's; "random" a control.
SELECTION_RULES: Mapping[str, Callable[[Tensor, int, torch.Generator | None], Tensor]] = MappingProxyType(
    {"max_ppl": select_max_ppl, "random": select_random}
)


def _selected_in_space(s: Tensor, ok: Tensor, selected: Tensor, side: Callable[[Tensor], Tensor]) -> Tensor:
    """``membership="selected"`` (spec §6 [choice], the default): the maximum-PPL response lies in the space."""
    return side(s.gather(1, selected.clamp(min=0).unsqueeze(1)).squeeze(1))


def _all_in_space(s: Tensor, ok: Tensor, selected: Tensor, side: Callable[[Tensor], Tensor]) -> Tensor:
    """``membership="all"`` (spec §6 [choice]): every valid response lies in the space."""
    return (side(s) | ~ok).all(1)


def _mean_in_space(s: Tensor, ok: Tensor, selected: Tensor, side: Callable[[Tensor], Tensor]) -> Tensor:
    """``membership="mean"`` (spec §6 [choice]): the group's mean log-PPL (valid rows) lies in the space."""
    return side(torch.nanmean(s, dim=1))


#: ``membership`` choices (spec §6 [choice]): name → rule ``(s [B, G] float64, ok [B, G] valid PPL, selected [B],
#: side) -> [B] bool``, where ``side`` maps log-PPL values to "inside the space".
MEMBERSHIP_RULES: Mapping[str, Callable[[Tensor, Tensor, Tensor, Callable[[Tensor], Tensor]], Tensor]] = (
    MappingProxyType({"selected": _selected_in_space, "all": _all_in_space, "mean": _mean_in_space})
)

#: The choice names, in table order (kept for imports of the tuples).
MEMBERSHIPS = tuple(MEMBERSHIP_RULES)
SELECTIONS = tuple(SELECTION_RULES)


def in_space(
    log_ppl: Tensor, selected: Tensor, group_size: int, threshold: float, membership: str, low: bool
) -> Tensor:
    """Spec §6 [choice: membership]: does each group lie in the exploitation (``low``) or exploration space?

    ``membership`` names a rule of :data:`MEMBERSHIP_RULES` (an unknown name raises a ValueError listing them):
    ``"selected"``: the maximum-PPL response lies in the space; ``"all"``: every valid response does;
    ``"mean"``: the group's mean log-PPL does. Groups without valid PPL are in no space.
    """
    rule = lookup("membership", membership, MEMBERSHIP_RULES)
    s = log_ppl.view(-1, group_size).double()  # compared in float64, as τ* is (see DiPO.step)
    ok = ~torch.isnan(s)
    side = (lambda x: x < threshold) if low else (lambda x: x > threshold)
    return rule(s, ok, selected, side) & ok.any(1)


def reallocate(
    rewards: Tensor,
    log_ppl: Tensor,
    group_size: int,
    threshold: float,
    membership: str = "selected",
    *,
    reward_mode: str = "binary",
    correct_threshold: float = 0.5,
    graded_delta: float | None = None,
    reallocate_hard: bool = True,
    reallocate_easy: bool = True,
    valid: Tensor | None = None,
    zero_variance_tol: float = 1e-6,
    selection: str = "max_ppl",
    generator: torch.Generator | None = None,
) -> Reallocation:
    """Spec §6, Bidirectional Reward Reallocation: the reallocated rewards R_r and every decision behind them.

    Only extreme groups are touched. With j the maximum-PPL response of the group:

    * hard group (all wrong) lying in the exploitation space (s < τ*) → j gets the reward ``+delta`` (binary: 1,
      the others stay 0): the *maximum-PPL reward*, exploration;
    * easy group (all right) lying in the exploration space (s > τ*) → j gets ``-delta`` (binary: 0, the others
      stay 1): the *maximum-PPL penalty*, exploitation;
    * every other group is left as is (R_r = R) and is not in the mask.

    The verifier reward R is never modified; R_r is a separate channel (spec §7).

    ``selection="random"`` (control) keeps every group decision of the rule (which groups are reallocated, decided on
    the maximum-PPL response) but moves the reward of a uniformly random valid response of the group instead
    (:func:`select_random`, drawn from ``generator``); ``selected`` then holds that random index.

    Args:
        rewards: ``[N]`` verifier rewards, groups of ``group_size`` contiguous rows (float, int or bool).
        log_ppl: ``[N]`` log-perplexities (NaN: no valid token, never selected).
        group_size: G.
        threshold: τ* on the log-PPL scale (NaN: no reallocation).
        membership: "selected" (default) | "all" | "mean", see :func:`in_space`.
        reward_mode: "binary" (0/1 enforced, move by 1) or "graded" (move by ``graded_delta``).
        correct_threshold: reward ≥ threshold ⇒ correct (hard vs easy extreme groups).
        graded_delta: graded move of the selected reward; None = the batch's reward range (1.0 if constant).
        reallocate_hard / reallocate_easy: ablation switches for the two directions.
        valid: optional ``[N]`` bool; False rows are excluded everywhere.
        zero_variance_tol: graded extreme test, see :func:`dipo.core.zero_variance_groups`.
        selection: "max_ppl" (paper) or "random" (control).
        generator: CPU generator of the ``selection="random"`` draws.

    Returns:
        :class:`Reallocation` (``.rewards`` R_r and ``.mask`` the rows of reallocated groups, among others); R_r is
        computed in float64 and returned in the rewards' floating dtype (int / bool: the default dtype).
    """
    check_1d("rewards", rewards)
    check_1d("log_ppl", log_ppl)
    check_same_shape("rewards", rewards, "log_ppl", log_ppl)
    check_group_size(rewards.numel(), group_size)
    lookup("membership", membership, MEMBERSHIP_RULES)
    check_choice("reward_mode", reward_mode, REWARD_MODES)
    lookup("selection", selection, SELECTION_RULES)
    check_same_device(rewards=rewards, log_ppl=log_ppl, valid=valid)
    check_log_ppl(log_ppl)
    correct_threshold = threshold_as(correct_threshold, rewards.dtype)
    dtype = output_dtype(rewards)
    rewards = float_rewards(rewards)
    valid = valid_mask(rewards.numel(), valid, rewards.device)
    check_finite_rewards(rewards, valid)
    if reward_mode == "binary":
        check_binary_rewards(rewards, valid)
    result = _reallocate_unchecked(
        rewards,
        log_ppl,
        group_size,
        threshold,
        membership,
        reward_mode=reward_mode,
        correct_threshold=correct_threshold,
        graded_delta=graded_delta,
        reallocate_hard=reallocate_hard,
        reallocate_easy=reallocate_easy,
        valid=valid,
        zero_variance_tol=zero_variance_tol,
        selection=selection,
        generator=generator,
    )
    return dataclasses.replace(result, rewards=cast_result(result.rewards, dtype, "reallocated rewards"))


def _reallocate_unchecked(
    rewards: Tensor,
    log_ppl: Tensor,
    group_size: int,
    threshold: float,
    membership: str,
    *,
    reward_mode: str,
    correct_threshold: float,
    graded_delta: float | None,
    reallocate_hard: bool,
    reallocate_easy: bool,
    valid: Tensor,
    zero_variance_tol: float,
    selection: str,
    generator: torch.Generator | None,
) -> Reallocation:
    """:func:`reallocate` on inputs already validated by the caller (float rewards, a ``valid`` bool tensor, known
    choices); internal to ``dipo.core`` (``DiPO.step`` validates once at its own entry)."""
    group_types = classify_groups(rewards, valid, group_size, correct_threshold, zero_variance_tol)
    selected = select_max_ppl(log_ppl, group_size)
    if math.isnan(threshold):
        no = torch.zeros_like(group_types, dtype=torch.bool)
        hard, easy = no, no
    else:
        hard = (group_types == GroupType.HARD) & in_space(log_ppl, selected, group_size, threshold, membership, True)
        easy = (group_types == GroupType.EASY) & in_space(log_ppl, selected, group_size, threshold, membership, False)
        hard = hard & reallocate_hard
        easy = easy & reallocate_easy
    # The groups are decided on the maximum-PPL response (above); the selection rule picks whose reward moves (the
    # paper's rule picks that same response: not computed twice).
    rule = lookup("selection", selection, SELECTION_RULES)
    if rule is not select_max_ppl:
        selected = rule(log_ppl, group_size, generator)

    delta = _reallocation_delta(rewards, valid, reward_mode, graded_delta)
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).view(-1, group_size).clone()
    rows = torch.arange(r.shape[0], device=r.device)
    col = selected.clamp(min=0)
    step = torch.tensor(delta, dtype=r.dtype, device=r.device)  # a Python float would become float32 and overflow
    shift = torch.where(hard, step, torch.where(easy, -step, torch.zeros_like(step)))
    r[rows, col] = r[rows, col] + shift
    realloc_rewards = torch.where(valid, r.view(-1), rewards)
    mask = (hard | easy).repeat_interleave(group_size)
    return Reallocation(realloc_rewards, mask, group_types, selected, hard, easy)


def reallocate_detailed(*args: Any, **kwargs: Any) -> Reallocation:
    """Deprecated alias of :func:`reallocate` (which now returns the :class:`Reallocation`); removed in 0.2."""
    warnings.warn(
        "dipo.core.reallocate_detailed is deprecated; use dipo.core.reallocate (it returns the Reallocation).",
        DeprecationWarning,
        stacklevel=2,
    )
    return reallocate(*args, **kwargs)


def _reallocation_delta(rewards: Tensor, valid: Tensor, reward_mode: str, graded_delta: float | None) -> float:
    """How far BRR moves the selected reward: 1 for binary rewards (0 ↔ 1); for graded rewards ``graded_delta``,
    or by default the batch's observed reward range (1.0 if the whole batch is constant)."""
    if reward_mode == "binary":
        return 1.0
    if graded_delta is not None:
        return float(graded_delta)
    if not bool(valid.any()):
        return 1.0
    r = rewards[valid]
    span = float(r.max() - r.min())
    return span if span > 0 else 1.0
