"""Spec §5 threshold τ*: hand-computed cases and a brute-force reference."""

import math

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
