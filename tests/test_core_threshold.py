"""Spec §5 threshold τ*: hand-computed cases and a brute-force reference."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dipo.core import find_threshold, threshold_error


def brute_force_threshold(s: np.ndarray, c: np.ndarray) -> float:
    """Try every cut (below all, between distinct values, above all); median minimiser; midpoint τ."""
    keep = ~np.isnan(s)
    s, c = s[keep].astype(np.float64), c[keep].astype(bool)
    values = np.unique(s)
    candidates = [-math.inf] + [(a + b) / 2 for a, b in zip(values[:-1], values[1:], strict=True)] + [math.inf]
    errors = [int(np.sum(c != (s < tau))) for tau in candidates]
    best = min(errors)
    minimisers = [tau for tau, e in zip(candidates, errors, strict=True) if e == best]
    return minimisers[(len(minimisers) - 1) // 2]


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def test_perfect_separation_cuts_between_the_classes():
    assert find_threshold(t(1, 2, 3, 4), t(1, 1, 0, 0).bool()) == 2.5


def test_unsorted_input_gives_the_same_cut():
    assert find_threshold(t(3, 1, 4, 2), t(0, 1, 0, 1).bool()) == 2.5


def test_all_correct_cuts_above_all_and_all_wrong_below_all():
    assert find_threshold(t(1, 2, 3), torch.ones(3, dtype=torch.bool)) == math.inf
    assert find_threshold(t(1, 2, 3), torch.zeros(3, dtype=torch.bool)) == -math.inf


def test_tie_between_minimisers_takes_the_lower_median():
    # errors per cut k=0..4: 2, 1, 2, 1, 2 -> minimisers k=1 (τ=1.5) and k=3 (τ=3.5) -> lower median k=1.
    assert find_threshold(t(1, 2, 3, 4), t(1, 0, 1, 0).bool()) == 1.5
    # three minimisers -> the middle one. errors: k0=3,k1=2,k2=3,k3=2,k4=3,k5=2,k6=3 -> k=3 (τ=3.5)
    assert find_threshold(t(1, 2, 3, 4, 5, 6), t(1, 0, 1, 0, 1, 0).bool()) == 3.5


def test_no_cut_inside_a_run_of_equal_values():
    # s=[1,1,2], c=[1,0,0]: allowed cuts k=0 (err 1), k=2 (err 1), k=3 (err 2) -> lower median: below all.
    assert find_threshold(t(1, 1, 2), t(1, 0, 0).bool()) == -math.inf


def test_nan_rows_are_ignored():
    assert find_threshold(t(1, float("nan"), 2, 3, 4), t(1, 0, 1, 0, 0).bool()) == 2.5


def test_empty_queue_is_an_error():
    with pytest.raises(ValueError, match="at least one"):
        find_threshold(t(float("nan")), t(1).bool())


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="shape"):
        find_threshold(t(1, 2, 3), t(1, 0).bool())


def test_threshold_error_is_the_objective():
    assert threshold_error(t(1, 2, 3, 4), t(1, 0, 1, 0).bool(), 1.5) == 0.25


def test_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        # Rounded values create ties; correctness correlates with low PPL like in real training.
        s = np.round(rng.normal(size=n), int(rng.integers(0, 3)))
        c = rng.random(n) < 1 / (1 + np.exp(3 * s))
        if trial % 7 == 0:
            s[rng.random(n) < 0.2] = np.nan
        if np.isnan(s).all():
            continue
        fast = find_threshold(torch.from_numpy(s), torch.from_numpy(c))
        assert fast == brute_force_threshold(s, c), (s, c)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=1, max_size=40))
def test_matches_brute_force_property(pairs):
    s = np.array([p[0] / 2 for p in pairs], dtype=np.float64)
    c = np.array([p[1] for p in pairs])
    assert find_threshold(torch.from_numpy(s), torch.from_numpy(c)) == brute_force_threshold(s, c)


def test_float32_input_gives_float64_midpoint_deterministically():
    s = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float32)
    c = torch.tensor([True, False, False])
    a, b = find_threshold(s, c), find_threshold(s.flip(0), c.flip(0))
    assert a == b == (float(s[0]) + float(s[1])) / 2


# ---------------------------------------------------------------- threshold_rule="balanced" (an option, not the paper)
def brute_force_balanced(s: np.ndarray, c: np.ndarray) -> float:
    """Every cut, balanced error ½·(FN/P + FP/N) in exact fractions (a missing class counts 0); median minimiser."""
    keep = ~np.isnan(s)
    s, c = s[keep].astype(np.float64), c[keep].astype(bool)
    p, n = int(c.sum()), int((~c).sum())
    values = np.unique(s)
    candidates = [-math.inf] + [(a + b) / 2 for a, b in zip(values[:-1], values[1:], strict=True)] + [math.inf]

    def balanced(tau: float) -> Fraction:
        low = s < tau
        fn, fp = int(np.sum(c & ~low)), int(np.sum(~c & low))
        if p == 0 or n == 0:
            return Fraction(fn + fp, p + n)
        return Fraction(fn, 2 * p) + Fraction(fp, 2 * n)

    errors = [balanced(tau) for tau in candidates]
    best = min(errors)
    minimisers = [tau for tau, e in zip(candidates, errors, strict=True) if e == best]
    return minimisers[(len(minimisers) - 1) // 2]


def test_balanced_rule_cuts_inside_where_the_plain_error_gives_up():
    # s = 1..6, correct only at 3 and 4 (P = 2, N = 4). Plain error: cuts k=0 and k=4 both make 2 errors -> lower
    # median k=0, τ* = -inf ("everything wrong"). Balanced: k=0 costs ½·(2/2 + 0/4) = 0.5, k=4 ½·(0 + 2/4) = 0.25.
    s, c = t(1, 2, 3, 4, 5, 6), t(0, 0, 1, 1, 0, 0).bool()
    assert find_threshold(s, c) == -math.inf
    assert find_threshold(s, c, "balanced") == 4.5
    assert threshold_error(s, c, 4.5, "balanced") == 0.25
    assert threshold_error(s, c, -math.inf, "balanced") == 0.5
    assert threshold_error(s, c, 4.5) == 2 / 6


def test_balanced_rule_equals_the_plain_one_with_equal_classes_or_one_class():
    s = t(1, 2, 3, 4, 5, 6)
    for c in (t(1, 0, 1, 0, 1, 0), t(1, 1, 0, 1, 0, 0)):
        assert find_threshold(s, c.bool(), "balanced") == find_threshold(s, c.bool())
    assert find_threshold(s, torch.ones(6, dtype=torch.bool), "balanced") == math.inf
    assert find_threshold(s, torch.zeros(6, dtype=torch.bool), "balanced") == -math.inf
    assert threshold_error(s, torch.ones(6, dtype=torch.bool), 3.5, "balanced") == 0.5


def test_balanced_rule_tie_takes_the_lower_median_minimiser():
    # s=1..4, c=[0,1,0,1] with P = N: costs per cut k=0..4: 2, 3, 2, 3, 2 (x P) -> minimisers k=0, 2, 4 -> k=2.
    assert find_threshold(t(1, 2, 3, 4), t(0, 1, 0, 1).bool(), "balanced") == 2.5


def test_unknown_threshold_rule_is_an_error():
    with pytest.raises(ValueError, match=r"unknown threshold_rule='auc'"):
        find_threshold(t(1, 2), t(1, 0).bool(), "auc")
    with pytest.raises(ValueError, match="threshold_rule"):
        threshold_error(t(1, 2), t(1, 0).bool(), 1.5, "auc")


def test_balanced_rule_matches_brute_force_on_random_data():
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(1, 60))
        s = np.round(rng.normal(size=n), int(rng.integers(0, 3)))
        # few correct responses, weak separation: the regime where the two rules differ
        c = rng.random(n) < 0.3 / (1 + np.exp(rng.uniform(0, 2) * s))
        if trial % 7 == 0:
            s[rng.random(n) < 0.2] = np.nan
        if np.isnan(s).all():
            continue
        fast = find_threshold(torch.from_numpy(s), torch.from_numpy(c), "balanced")
        assert fast == brute_force_balanced(s, c), (s, c)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=1, max_size=40))
def test_balanced_rule_matches_brute_force_property(pairs):
    s = np.array([p[0] / 2 for p in pairs], dtype=np.float64)
    c = np.array([p[1] for p in pairs])
    tau = find_threshold(torch.from_numpy(s), torch.from_numpy(c), "balanced")
    assert tau == brute_force_balanced(s, c)
    # the minimum of the balanced error is never above the balanced error of the paper's τ*
    plain = find_threshold(torch.from_numpy(s), torch.from_numpy(c))
    s_t, c_t = torch.from_numpy(s), torch.from_numpy(c)
    assert threshold_error(s_t, c_t, tau, "balanced") <= threshold_error(s_t, c_t, plain, "balanced") + 1e-12


def test_dipo_step_uses_the_configured_threshold_rule():
    # Two groups of 6 as above: the paper's rule cuts below all; "balanced" cuts at 4.5 and judges there
    # (8 responses below, 4 of them correct: Δ_EiS = 0, so the judgment still fails, see the next test).
    from dipo.core import DiPO, DiPOCoreConfig

    rewards = torch.tensor([0, 0, 1, 1, 0, 0] * 2, dtype=torch.float32)
    s = torch.tensor([1, 2, 3, 4, 5, 6] * 2, dtype=torch.float64)
    paper = DiPO(DiPOCoreConfig(judgment_confidence=None)).step(rewards, s, 6)
    balanced = DiPO(DiPOCoreConfig(judgment_confidence=None, threshold_rule="balanced")).step(rewards, s, 6)
    assert paper.threshold == -math.inf and not paper.judgment.passed
    assert balanced.threshold == 4.5 and (balanced.judgment.n_low, balanced.judgment.n_high) == (8, 4)
    assert balanced.judgment.delta_eis == 0.0 and balanced.judgment.delta_ers == 1.0
    with pytest.raises(ValueError, match="threshold_rule"):
        DiPOCoreConfig(threshold_rule="Balanced")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.booleans()), min_size=1, max_size=40))
def test_an_edge_cut_of_the_paper_rule_fails_the_judgment_at_every_cut(pairs):
    """If the below-all cut minimises the plain error, then err(k) >= P = TP(k) + FN(k), i.e. FP(k) >= TP(k) at every
    cut: no cut has a correct majority below it, so the judgment fails under any rule (above-all: symmetric). The
    balanced rule moves τ* and BRR's reach ignoring the judgment, but it cannot make such a queue pass."""
    from dipo.core import judge

    s = torch.tensor([p[0] / 2 for p in pairs], dtype=torch.float64)
    c = torch.tensor([p[1] for p in pairs])
    if math.isinf(find_threshold(s, c)):
        assert not judge(s, c, find_threshold(s, c, "balanced"), None).passed
