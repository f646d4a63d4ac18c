"""Group-normalised advantages and the folded DiPO objective (spec §7)."""

from __future__ import annotations

import torch
from torch import Tensor

from dipo.core._checks import (
    cast_result,
    check_choice,
    check_same_device,
    float_rewards,
    output_dtype,
    unknown_choice,
)

SCALE_REWARDS = ("group", "batch", "none")
STD_KINDS = ("unbiased", "population")
REALLOC_NORMALIZERS = ("shared", "separate")


def _masked_std(centered: Tensor, valid: Tensor, dim: int | None, std: str) -> Tensor:
    n = valid.sum() if dim is None else valid.sum(dim)
    ddof = 1 if std == "unbiased" else 0
    sq = (centered * centered).sum() if dim is None else (centered * centered).sum(dim)
    var = sq / (n - ddof).clamp(min=1)
    return torch.where(n > ddof, var.sqrt(), torch.zeros_like(var))


def _power_of_two_above(x: Tensor) -> Tensor:
    """The power of two ``2^e`` with ``x < 2^e <= 2x`` (1 for x = 0), as a 0-d tensor of ``x``'s dtype."""
    _, exponent = torch.frexp(x)
    return torch.ldexp(torch.ones_like(x), exponent)


def group_advantages(
    rewards: Tensor,
    group_size: int,
    scale_rewards: str = "group",
    std: str = "unbiased",
    eps: float = 1e-4,
    valid: Tensor | None = None,
) -> Tensor:
    """Spec §7 (GRPO): ``A_i = (r_i − mean_group) / (std + eps)``.

    ``scale_rewards``: "group" (std of the group), "batch" (std of the whole batch, mean still per group) or "none"
    (no division), as TRL's ``scale_rewards``; ``std``: "unbiased" (TRL, verl) or "population". Invalid rows are
    excluded from means and stds and get advantage 0. With the unbiased std and eps=0, a G=8 group with one reward 1
    and seven 0 gives +2.47 / −0.35. Computed in float64 whatever the rewards' dtype (float16 rewards 0/300 would
    overflow the group's sum of squares in float16) and returned in the rewards' floating dtype (int and bool rewards:
    the default dtype); a value that does not fit that dtype raises a ValueError.
    """
    check_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    check_choice("std", std, STD_KINDS)
    check_same_device(rewards=rewards, valid=valid)
    dtype = output_dtype(rewards)
    rewards = float_rewards(rewards)
    if valid is None:
        valid = torch.ones_like(rewards, dtype=torch.bool)
    advantages = _group_advantages_unchecked(rewards, group_size, scale_rewards, std, eps, valid)
    return cast_result(advantages, dtype, "advantages")


def _group_advantages_unchecked(
    rewards: Tensor, group_size: int, scale_rewards: str, std: str, eps: float, valid: Tensor
) -> Tensor:
    """:func:`group_advantages` of float64 ``rewards`` with a bool ``valid`` mask, choices already validated by the
    caller (``DiPO.step`` validates once at its entry); the float64 advantages. Internal to ``dipo.core``."""
    flat_r = torch.where(valid, rewards, torch.zeros_like(rewards))
    # Work on r / 2^e with 2^e >= max |r| (exact: a power of two), so that no sum of squares overflows float64 even for
    # rewards near 1e300; (r − mean) / (std + eps) = (r' − mean') / (std' + eps / 2^e), bit for bit.
    scale = _power_of_two_above(flat_r.abs().max()) if flat_r.numel() else torch.ones((), dtype=flat_r.dtype)
    flat_r = flat_r / scale
    r, v = flat_r.view(-1, group_size), valid.view(-1, group_size)
    n = v.sum(1, keepdim=True)
    mean = r.sum(1, keepdim=True) / n.clamp(min=1)
    centered = (r - mean) * v
    if scale_rewards == "none":
        adv = centered * scale
    elif scale_rewards == "group":
        adv = centered / (_masked_std(centered, v, 1, std).unsqueeze(1) + eps / scale)
    elif scale_rewards == "batch":
        batch_centered = (flat_r - flat_r.sum() / valid.sum().clamp(min=1)) * valid
        adv = centered / (_masked_std(batch_centered, valid, None, std) + eps / scale)
    else:  # a config changed after it was validated
        raise unknown_choice("scale_rewards", scale_rewards, SCALE_REWARDS)
    return torch.where(v, adv, torch.zeros_like(adv)).view(-1)


def realloc_scale(
    realloc_mask: Tensor, normalizer: str = "shared", token_counts: Tensor | None = None, valid: Tensor | None = None
) -> float:
    """Spec §7 [choice: realloc_normalizer]: the factor on α·A^r from the loss normaliser of J_base(θ, R_r).

    ``"shared"`` → 1 (the second term shares the base loss normaliser, the token count of the whole batch).
    ``"separate"`` → ``N_all / N_realloc`` so that J_base(θ, R_r) is normalised over its own rows, counted in the unit
    the base loss divides by: tokens when ``token_counts`` is given (token-level losses such as DAPO's), responses
    otherwise (sequence-mean losses). ``N_all`` counts *every* row given, ``valid`` or not, as the frameworks'
    normalisers do (TRL's ``num_items_in_batch`` and per-row means, verl's ``batch_num_tokens`` and
    ``global_batch_size`` include rows that no verifier reward applies to); ``N_realloc`` counts the reallocated
    rows that are ``valid``.
    """
    check_choice("realloc_normalizer", normalizer, REALLOC_NORMALIZERS)
    if normalizer == "shared":
        return 1.0
    weights = torch.ones_like(realloc_mask, dtype=torch.float64) if token_counts is None else token_counts.double()
    selected_rows = realloc_mask if valid is None else realloc_mask.bool() & valid.bool()
    selected = float((weights * selected_rows).sum())
    return float(weights.sum()) / selected if selected > 0 else 1.0


def fold_advantages(base_advantages: Tensor, realloc_advantages: Tensor, alpha: float, scale: float = 1.0) -> Tensor:
    """Spec §7: J_DiPO = J_base(R) + α·J_base(R_r) equals one surrogate with advantage ``A + α·scale·A^r``.

    Exact because A^r is non-zero only in reallocated (zero-variance) groups, where A is exactly 0, and every
    clipped surrogate is positively homogeneous in the advantage.
    """
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}.")
    return base_advantages + (alpha * scale) * realloc_advantages
