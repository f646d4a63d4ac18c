"""Input validation shared by the core functions (bad input -> ``ValueError`` saying what, where, how to fix)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")


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
    if valid.device != device:
        raise ValueError(f"valid is on {valid.device} but the rewards are on {device}; move valid with .to(device).")
    return valid


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
    """Rewards as a float64 tensor, whatever their dtype (float16/bfloat16/float32/float64, integer or bool): every
    reward and advantage computation of the core runs in float64, so float16 rewards 0/300 or float32 rewards near
    1e20 do not overflow in the group std, and float64 rewards beyond float32's range stay exact. Results go back to
    :func:`output_dtype` (:func:`cast_result`). Complex rewards raise a ValueError naming the dtype."""
    if rewards.is_complex():
        raise ValueError(
            f"{name} must be a real tensor (float, int or bool; one verifier reward per response), got dtype "
            f"{rewards.dtype}; pass real rewards, e.g. {name}.real.float()."
        )
    return rewards.to(torch.float64)


def output_dtype(rewards: Tensor) -> torch.dtype:
    """The dtype the core returns reward-derived tensors in: the rewards' own floating dtype, else (int, bool) the
    default float dtype. Frameworks add the result to advantages of that dtype."""
    return rewards.dtype if torch.is_floating_point(rewards) else torch.get_default_dtype()


def cast_result(x: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """A float64 result cast to ``dtype``; a ValueError if a finite value does not fit (e.g. float16 rewards near
    65504 with ``scale_rewards="none"``) instead of a silent infinity."""
    out = x.to(dtype)
    if bool((torch.isinf(out) & torch.isfinite(x)).any()):
        raise ValueError(
            f"{name} computed in float64 exceed the range of the rewards' dtype {dtype} (largest value "
            f"{float(x.abs().max()):.6g}); pass the rewards as float32 or float64."
        )
    return out


def threshold_as(threshold: float, dtype: torch.dtype) -> float:
    """``threshold`` rounded to the rewards' own floating dtype, so that the float64 comparison ``r >= threshold``
    decides as it would in that dtype: a float32 reward 0.7 stays >= a correct_threshold of 0.7 (in float64 the float32
    0.7 is 0.69999998…). Integer and bool rewards compare against the exact threshold."""
    if not dtype.is_floating_point:
        return float(threshold)
    return float(torch.tensor(float(threshold), dtype=torch.float64).to(dtype))


def check_same_device(**tensors: Tensor | None) -> None:
    """Every given tensor on one device; else a ValueError naming each tensor's device (``None`` entries skipped)."""
    given = {name: t for name, t in tensors.items() if isinstance(t, Tensor)}
    devices = {t.device for t in given.values()}
    if len(devices) > 1:
        where = ", ".join(f"{name} on {t.device}" for name, t in given.items())
        raise ValueError(f"inputs are on different devices ({where}); move them to one device, e.g. with .to(device).")


def unknown_choice(name: str, value: object, choices: tuple[str, ...]) -> ValueError:
    """The error for a value of the choice option ``name`` that is not one of ``choices``."""
    return ValueError(f"unknown {name}={value!r}; choose one of {', '.join(repr(c) for c in choices)}.")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise unknown_choice(name, value, choices)


def lookup(name: str, value: object, table: Mapping[str, T]) -> T:
    """``table[value]`` for a choice option ``name``; an unknown ``value`` raises the ValueError of
    :func:`check_choice`, listing the table's keys."""
    try:
        return table[value]  # type: ignore[index]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise unknown_choice(name, value, tuple(table)) from None
