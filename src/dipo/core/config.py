"""Options of the DiPO core, with the spec's defaults (every open choice of the paper is an option)."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

from dipo.core._checks import check_choice
from dipo.core.advantages import REALLOC_NORMALIZERS, SCALE_REWARDS, STD_KINDS
from dipo.core.brr import MEMBERSHIP_RULES, REWARD_MODES, SELECTION_RULES
from dipo.core.threshold import THRESHOLD_RULES


@dataclass
class DiPOCoreConfig:
    """Configuration of :class:`dipo.core.DiPO`.

    Attributes:
        alpha: weight α of the reallocated-reward objective (spec §7; paper's best 0.1). 0 gives the base method.
        queue_batches: number of most recent batches in the PPL queue (spec §4 [choice], 2).
        threshold_rule: how τ* is chosen: "error" (default, the paper, spec §5: minimise the plain error) or
            "balanced" (NOT the paper's rule: minimise ½·(FN/P + FP/N), the mean of the two per-class error rates).
        judgment: apply the advantage judgment (spec §5); False reallocates whenever a threshold exists (ablation).
        judgment_confidence: confidence of the Wilson intervals of the judgment (spec §5 [choice], 0.95);
            None uses the point estimates (Δ_EiS > 0 and Δ_ErS > 0).
        membership: when an extreme group "lies in" a space (spec §6 [choice]): "selected" | "all" | "mean".
        reallocate_hard: apply the maximum-PPL reward to hard groups (ablation switch).
        reallocate_easy: apply the maximum-PPL penalty to easy groups (ablation switch).
        selection: whose reward BRR moves in a reallocated group: "max_ppl" (the paper, spec §6) or "random" (control:
            same groups, a uniformly random valid response — does the maximum-PPL choice matter?).
        selection_seed: seed of the generator behind ``selection="random"`` (saved and restored with the state).
        reward_mode: "binary" (rewards must be 0/1) or "graded" (any finite rewards, spec §6 graded rule).
        correct_threshold: a reward >= this counts as correct (graded mode; 0.5 suits binary rewards too).
        graded_delta: graded mode, how far BRR moves the selected reward; None = the batch's reward range.
        zero_variance_tol: a group is extreme if max − min <= tol × max(1, max|r|) (spec §6 graded rule).
        scale_rewards: advantage std normalisation as the base config: "group" | "batch" | "none" (spec §7).
        std: "unbiased" (TRL, verl) or "population" standard deviation.
        std_eps: added to the std before dividing (TRL 1e-4, verl 1e-6).
        realloc_normalizer: "shared" (second term shares the base loss normaliser) or "separate" (spec §7).
    """

    alpha: float = 0.1
    queue_batches: int = 2
    threshold_rule: str = "error"
    judgment: bool = True
    judgment_confidence: float | None = 0.95
    membership: str = "selected"
    reallocate_hard: bool = True
    reallocate_easy: bool = True
    selection: str = "max_ppl"
    selection_seed: int = 0
    reward_mode: str = "binary"
    correct_threshold: float = 0.5
    graded_delta: float | None = None
    zero_variance_tol: float = 1e-6
    scale_rewards: str = "group"
    std: str = "unbiased"
    std_eps: float = 1e-4
    realloc_normalizer: str = "shared"

    def __post_init__(self) -> None:
        """Validate every field: types (bools must be ``bool``, numbers real and finite), ranges and choices."""
        _check_bool("judgment", self.judgment)
        _check_bool("reallocate_hard", self.reallocate_hard)
        _check_bool("reallocate_easy", self.reallocate_easy)
        if _finite_number("alpha", self.alpha) < 0:
            raise ValueError(f"alpha must be a finite number >= 0 (the paper uses 0.1), got {self.alpha!r}.")
        if isinstance(self.queue_batches, bool) or not isinstance(self.queue_batches, int) or self.queue_batches < 1:
            raise ValueError(f"queue_batches must be an int >= 1 (the paper uses 2), got {self.queue_batches!r}.")
        if (
            self.judgment_confidence is not None
            and not 0.0 < _finite_number("judgment_confidence", self.judgment_confidence) < 1.0
        ):
            raise ValueError(
                f"judgment_confidence must lie in (0, 1) or be None (point estimates), got {self.judgment_confidence}."
            )
        check_choice("threshold_rule", self.threshold_rule, THRESHOLD_RULES)
        check_choice("membership", self.membership, tuple(MEMBERSHIP_RULES))
        check_choice("reward_mode", self.reward_mode, REWARD_MODES)
        check_choice("selection", self.selection, tuple(SELECTION_RULES))
        if isinstance(self.selection_seed, bool) or not isinstance(self.selection_seed, int):
            raise ValueError(f"selection_seed must be an int, got {self.selection_seed!r}.")
        check_choice("scale_rewards", self.scale_rewards, SCALE_REWARDS)
        check_choice("std", self.std, STD_KINDS)
        check_choice("realloc_normalizer", self.realloc_normalizer, REALLOC_NORMALIZERS)
        if self.graded_delta is not None and not _finite_number("graded_delta", self.graded_delta) > 0:
            raise ValueError(f"graded_delta must be a finite number > 0 or None, got {self.graded_delta!r}.")
        _finite_number("correct_threshold", self.correct_threshold)
        if _finite_number("zero_variance_tol", self.zero_variance_tol) < 0:
            raise ValueError(f"zero_variance_tol must be a finite number >= 0, got {self.zero_variance_tol!r}.")
        if _finite_number("std_eps", self.std_eps) < 0:
            raise ValueError(f"std_eps must be a finite number >= 0, got {self.std_eps!r}.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_bool(name: str, value: object) -> None:
    """Switches must be real ``bool`` values: ``"no"``/``"False"``/``0`` would otherwise read as set or unset."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__}).")


def _finite_number(name: str, value: object) -> float:
    """``value`` as a float if it is a finite real number (not a bool, not a string, not NaN/inf); else ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return float(value)
