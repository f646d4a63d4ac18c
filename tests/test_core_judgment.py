"""Spec §5 advantage judgment (with and without the Wilson interval) and quadrants."""

import math

import pytest
import torch

from dipo.core import Quadrant, judge, quadrant_labels, wilson_interval


def test_wilson_interval_textbook_value():
    # 8 successes out of 10 at 95 %: (0.4902, 0.9433) — the classic Wilson example.
    lo, hi = wilson_interval(8, 10, 0.95)
    assert lo == pytest.approx(0.49016, abs=1e-5)
    assert hi == pytest.approx(0.94332, abs=1e-5)


def test_wilson_interval_edges():
    assert wilson_interval(0, 0, 0.95)[0] != wilson_interval(0, 0, 0.95)[0]  # NaN for n = 0
    lo, hi = wilson_interval(0, 5, 0.95)
    assert lo == 0.0 and hi == pytest.approx(0.43448, abs=1e-5)
    with pytest.raises(ValueError):
        wilson_interval(1, 2, 1.5)


def _queue(n_low_correct, n_low_wrong, n_high_correct, n_high_wrong):
    s = [0.0] * (n_low_correct + n_low_wrong) + [2.0] * (n_high_correct + n_high_wrong)
    c = [1] * n_low_correct + [0] * n_low_wrong + [1] * n_high_correct + [0] * n_high_wrong
    return torch.tensor(s), torch.tensor(c).bool()


def test_point_estimates():
    s, c = _queue(8, 2, 3, 7)  # Pr(c=1|low)=0.8, Pr(c=1|high)=0.3
    j = judge(s, c, 1.0, confidence=None)
    assert j.passed
    assert j.delta_eis == pytest.approx(0.6)  # 0.8 - 0.2
    assert j.delta_ers == pytest.approx(0.4)  # 0.7 - 0.3
    assert (j.n_low, j.n_high) == (10, 10)


def test_interval_is_stricter_than_point_estimates():
    s, c = _queue(8, 2, 3, 7)  # Wilson(8/10) lower bound 0.490 < 0.5 -> fails at 95 %
    assert judge(s, c, 1.0, confidence=None).passed
    assert not judge(s, c, 1.0, confidence=0.95).passed
    s, c = _queue(80, 20, 30, 70)  # same proportions, 10x the data -> passes
    j = judge(s, c, 1.0, confidence=0.95)
    assert j.passed and j.low_interval[0] > 0.5 and j.high_interval[1] < 0.5


def test_fails_when_ppl_is_uninformative_or_inverted():
    s, c = _queue(5, 5, 5, 5)
    assert not judge(s, c, 1.0, confidence=None).passed  # Δ = 0
    s, c = _queue(2, 8, 8, 2)
    j = judge(s, c, 1.0, confidence=None)
    assert not j.passed and j.delta_eis < 0 and j.delta_ers < 0


def test_empty_side_fails():
    s, c = _queue(5, 0, 0, 0)
    j = judge(s, c, math.inf, confidence=None)
    assert not j.passed and j.n_high == 0 and math.isnan(j.delta_ers)


def test_quadrant_labels():
    s = torch.tensor([0.0, 2.0, 0.0, 2.0, float("nan"), 0.0])
    c = torch.tensor([1, 1, 0, 0, 1, 1]).bool()
    valid = torch.tensor([True, True, True, True, True, False])
    q = quadrant_labels(s, c, 1.0, valid)
    assert q.tolist() == [Quadrant.CL, Quadrant.CH, Quadrant.EL, Quadrant.EH, Quadrant.NONE, Quadrant.NONE]
    assert (quadrant_labels(s, c, math.nan) == Quadrant.NONE).all()
