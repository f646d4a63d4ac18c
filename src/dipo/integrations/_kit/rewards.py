"""Spec §2, §6: the verifier reward R that DiPO groups on, composed the same way for every adapter.

R decides correctness and hard / easy groups. It is the (weighted) sum of the verifier's reward columns with DAPO's
soft overlong shaping left out: the shaping is a length penalty, not a verdict, so a group of right (or wrong)
answers stays extreme when one of them runs into the overlong buffer. Frameworks deliver the shaping in one of two
ways, and :func:`compose_verifier_rewards` handles both: as a separate reward column (TRL's
``get_soft_overlong_punishment``; the adapter leaves the column out and passes it as ``penalty``) or folded into the
score (verl's ``dapo`` reward manager; the adapter passes ``penalty`` with ``in_score=True`` and it is subtracted).
The base advantage the framework trains on keeps the shaping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

#: Verifier rewards this close to an integer are snapped to it after a penalty is subtracted: frameworks add the
#: penalty in float32, so ``score − penalty`` of a ±1 / 0-1 verifier reward is off by a few float32 ulps.
SNAP_TOLERANCE = 1e-5


@dataclass
class VerifierRewards:
    """Per-row verifier rewards R (0 on invalid rows), the valid rows (some verifier column scored the row), and the
    share of rows whose DAPO overlong shaping was taken out (or left out)."""

    rewards: Tensor
    valid: Tensor
    frac_penalised: float = 0.0
    source: str = "columns"  # where R came from, for messages and tests (e.g. "score - overlong penalty")

    def take(self, rows: Tensor, device: torch.device | str | None = None) -> VerifierRewards:
        """These rewards at ``rows`` (e.g. a layout's order), on ``device``."""
        return replace(self, rewards=self.rewards[rows].to(device), valid=self.valid[rows].to(device))


@dataclass(frozen=True)
class OverlongPenalty:
    """DAPO's soft overlong penalty (DAPO Eq. 13) as verl's ``dapo`` reward manager adds it to the score (verl 0.9.1,
    ``reward_manager/dapo.py``): ``min(-(length - (max_resp_len - buffer_len)) / buffer_len * penalty_factor, 0)``
    for a response of ``length`` tokens — what :func:`compose_verifier_rewards` takes out as ``penalty``."""

    max_resp_len: int
    buffer_len: int
    penalty_factor: float

    def __call__(self, lengths: Tensor) -> Tensor:
        """The penalty (<= 0) of responses with ``lengths`` tokens, as float64."""
        exceed = lengths.double() - (self.max_resp_len - self.buffer_len)
        return torch.clamp(-exceed / self.buffer_len * self.penalty_factor, max=0.0)


def compose_verifier_rewards(
    columns: Tensor,
    weights: Tensor | None = None,
    penalty: Tensor | None = None,
    in_score: bool = False,
    source: str = "columns",
) -> VerifierRewards:
    """R of every row from the verifier's reward columns.

    Args:
        columns: ``[N, K]`` (or ``[N]``) reward columns that judge correctness; NaN means the column skipped the row.
        weights: ``[K]`` column weights (``None``: all 1).
        penalty: ``[N]`` DAPO's soft overlong penalty (<= 0) of every row, or ``None`` if the run has none.
        in_score: the penalty is included in ``columns`` (subtract it, snapping near-integers, see
            :data:`SNAP_TOLERANCE`); ``False``: it is a separate column the adapter already left out.
        source: where R came from (kept in the result).
    """
    if columns.dim() == 1:
        columns = columns.unsqueeze(1)
    if weights is None:
        weights = torch.ones(columns.size(1), dtype=columns.dtype, device=columns.device)
    valid = ~torch.isnan(columns).all(dim=1)
    rewards = (columns * weights.to(columns.device).unsqueeze(0)).nansum(dim=1)
    frac = 0.0
    if penalty is not None:
        penalty = penalty.to(device=rewards.device)
        frac = float((penalty < 0).double().mean()) if penalty.numel() else 0.0
        if in_score:
            rewards = rewards.double() - penalty.double()
            snapped = rewards.round()
            rewards = torch.where((rewards - snapped).abs() <= SNAP_TOLERANCE, snapped, rewards)
    rewards = torch.where(valid, rewards, torch.zeros_like(rewards))
    return VerifierRewards(rewards, valid, frac, source)


def infinite_verifier_value(columns: Tensor, names: Sequence[str]) -> str | None:
    """The first infinite value of the verifier columns ``[N, K]`` (named ``names``), said as "reward function 'f'
    returned inf for completion 3 of the batch"; ``None`` if all are finite (NaN: a skipped row)."""
    infinite = torch.isinf(columns)
    if not bool(infinite.any()):
        return None
    row, col = (int(v) for v in infinite.nonzero()[0])
    return f"reward function {names[col]!r} returned {columns[row, col].item()} for completion {row} of the batch"


def non_binary_verifier_reward(
    columns: Tensor, weights: Tensor, rewards: Tensor, valid: Tensor, names: Sequence[str]
) -> str | None:
    """Why R (the weighted sum ``rewards`` of the verifier columns ``[N, K]``) is not 0/1 on some valid row: the first
    such row, the column values behind it and the culprit (columns that are not 0/1 themselves, or their weights);
    ``None`` if R is 0/1 on every valid row."""
    bad = valid & (rewards != 0) & (rewards != 1)
    if not bool(bad.any()):
        return None
    row = int(bad.nonzero()[0])
    parts = [
        f"{name}={columns[row, k].item():g}" + ("" if weights[k] == 1 else f" (weight {weights[k].item():g})")
        for k, name in enumerate(names)
        if not math.isnan(columns[row, k].item())
    ]
    non_binary = [
        name
        for k, name in enumerate(names)
        if bool((valid & ~torch.isnan(columns[:, k]) & (columns[:, k] != 0) & (columns[:, k] != 1)).any())
    ]
    culprit = (
        f"reward function(s) {non_binary} returned values outside {{0, 1}}"
        if non_binary
        else "each function is 0/1 but their weighted sum is not"
    )
    return (
        f"completion {row} of the batch gets {rewards[row].item():g} from {', '.join(parts)} ({int(bad.sum())} such "
        f"completions; {culprit})"
    )
