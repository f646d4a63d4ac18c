"""Input validation shared by the core functions (bad input -> ``ValueError`` saying what, where, how to fix)."""

from __future__ import annotations

import torch
from torch import Tensor


def check_1d(name: str, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}; use torch.as_tensor(...).")
    if x.dim() != 1:
        raise ValueError(f"{name} must be 1-D (one value per response), got shape {tuple(x.shape)}.")


def check_same_shape(name_a: str, a: Tensor, name_b: str, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            "they must hold one value per response, in the same order."
        )


def check_group_size(num_rows: int, group_size: int) -> int:
    """Return the number of groups; groups are ``group_size`` contiguous rows."""
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise ValueError(f"group_size must be an int, got {group_size!r}.")
    if group_size < 2:
        raise ValueError(
            f"group_size must be >= 2 (GRPO needs several responses per prompt), got {group_size}; "
            "set num_generations / rollout.n to at least 2."
        )
    if num_rows % group_size != 0:
        raise ValueError(
            f"batch size {num_rows} is not divisible by group_size {group_size}; every prompt must contribute "
            f"exactly group_size contiguous responses (pad or drop the last {num_rows % group_size} rows)."
        )
    return num_rows // group_size


def valid_mask(num_rows: int, valid: Tensor | None, device: torch.device) -> Tensor:
    if valid is None:
        return torch.ones(num_rows, dtype=torch.bool, device=device)
    check_1d("valid", valid)
    if valid.numel() != num_rows:
        raise ValueError(f"valid has {valid.numel()} entries but there are {num_rows} responses.")
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool tensor, got dtype {valid.dtype}; use valid.bool().")
    return valid.to(device)


def check_finite_rewards(rewards: Tensor, valid: Tensor) -> None:
    bad = valid & ~torch.isfinite(rewards)
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        raise ValueError(
            f"rewards[{idx}] = {rewards[idx].item()} is not finite ({int(bad.sum())} such rows). Every valid response "
            "needs a finite verifier reward; mark unscorable rows with valid=False instead of passing NaN/inf."
        )


def check_binary_rewards(rewards: Tensor, valid: Tensor) -> None:
    bad = valid & (rewards != 0) & (rewards != 1)
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        raise ValueError(
            f"reward_mode='binary' needs rewards in {{0, 1}} but rewards[{idx}] = {rewards[idx].item()} "
            f"({int(bad.sum())} such rows). Use reward_mode='graded' (with correct_threshold) for graded rewards."
        )


def check_log_ppl(log_ppl: Tensor) -> None:
    if not torch.is_floating_point(log_ppl):
        raise ValueError(f"log_ppl must be a floating-point tensor, got dtype {log_ppl.dtype}.")
    bad = torch.isinf(log_ppl)
    if bool(bad.any()):
        idx = int(bad.nonzero()[0])
        raise ValueError(
            f"log_ppl[{idx}] is {log_ppl[idx].item()}; log-perplexities must be finite. Use NaN for a response "
            "without valid tokens (it is then excluded from the queue and never selected)."
        )


def float_rewards(rewards: Tensor, name: str = "rewards") -> Tensor:
    """Rewards as a floating-point tensor: bool and integer rewards (0/1 verifiers) are converted to the default float
    dtype; floating tensors are returned unchanged; anything else (complex) raises a ValueError naming the dtype."""
    if torch.is_floating_point(rewards):
        return rewards
    if rewards.is_complex():
        raise ValueError(
            f"{name} must be a real tensor (float, int or bool; one verifier reward per response), got dtype "
            f"{rewards.dtype}; pass real rewards, e.g. {name}.real.float()."
        )
    return rewards.to(torch.get_default_dtype())


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name}={value!r}; choose one of {', '.join(repr(c) for c in choices)}.")
