"""Reliability of dipo.core (issue 12): config and queue-state validation, reward dtypes, float64 comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dipo.core import (
    DiPO,
    DiPOCoreConfig,
    PPLQueue,
    Quadrant,
    find_threshold,
    group_advantages,
    in_space,
    judge,
    quadrant_labels,
    reallocate,
    threshold_error,
)

NAN, INF = float("nan"), float("inf")


# ---------------------------------------------------------------- item 7: every DiPOCoreConfig field is validated
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"std_eps": NAN}, "std_eps must be finite"),
        ({"std_eps": INF}, "std_eps must be finite"),
        ({"zero_variance_tol": NAN}, "zero_variance_tol must be finite"),
        ({"zero_variance_tol": -1e-6}, "zero_variance_tol must be a finite number >= 0"),
        ({"correct_threshold": NAN}, "correct_threshold must be finite"),
        ({"correct_threshold": "0.5"}, "correct_threshold must be a number"),
        ({"judgment_confidence": NAN}, "judgment_confidence must be finite"),
        ({"judgment_confidence": True}, "judgment_confidence must be a number"),
        ({"graded_delta": INF}, "graded_delta must be finite"),
        ({"alpha": INF}, "alpha must be finite"),
        ({"alpha": True}, "alpha must be a number"),
        ({"alpha": "0.1"}, "alpha must be a number"),
        ({"judgment": "no"}, r"judgment must be a bool \(True or False\), got 'no'"),
        ({"judgment": 1}, "judgment must be a bool"),
        ({"reallocate_hard": "False"}, "reallocate_hard must be a bool"),
        ({"reallocate_easy": None}, "reallocate_easy must be a bool"),
        ({"queue_batches": 2.0}, "queue_batches must be an int"),
        ({"selection": "min_ppl"}, "selection"),
        ({"selection_seed": "1"}, "selection_seed must be an int"),
    ],
)
def test_every_config_field_is_type_and_finiteness_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DiPOCoreConfig(**kwargs)


def test_valid_configs_still_accepted():
    cfg = DiPOCoreConfig(alpha=0, correct_threshold=1, graded_delta=2, std_eps=0, judgment_confidence=None)
    assert cfg.alpha == 0 and cfg.correct_threshold == 1
    assert DiPOCoreConfig(selection="random", selection_seed=7, judgment=False).selection == "random"
    assert DiPOCoreConfig(alpha=np.float64(0.1)).alpha == pytest.approx(0.1)  # numpy reals are numbers


# ---------------------------------------------------------------- item 8: PPLQueue.load_state_dict validates entries
def saved_queue(log_ppl, correct, max_batches=2):
    return {"max_batches": max_batches, "log_ppl": log_ppl, "correct": correct}


@pytest.mark.parametrize(
    ("state", "match"),
    [
        (saved_queue([torch.tensor([0.1, NAN])], [torch.tensor([True, False])]), "NaN or infinite"),
        (saved_queue([torch.tensor([0.1, INF])], [torch.tensor([True, False])]), "NaN or infinite"),
        (saved_queue([torch.zeros(2, 2)], [torch.zeros(2, 2, dtype=torch.bool)]), "must be 1-D"),
        (saved_queue([torch.zeros(3)], [torch.zeros(2, dtype=torch.bool)]), "3 values but correct has 2"),
        (saved_queue([torch.zeros(2)], [torch.tensor([0.0, 2.0])]), r"outside \{0, 1\}"),
        (saved_queue([torch.tensor([1, 2])], [torch.tensor([True, False])]), "floating-point"),
        (saved_queue([torch.zeros(1)] * 3, [torch.zeros(1, dtype=torch.bool)] * 3), "3 batches, more than"),
        ([torch.zeros(1)], "must be a dict"),
    ],
)
def test_queue_state_is_validated_and_left_untouched_on_error(state, match):
    queue = PPLQueue(2)
    queue.push(torch.tensor([0.5]), torch.tensor([True]))
    with pytest.raises(ValueError, match=match):
        queue.load_state_dict(state)
    assert len(queue) == 1  # a rejected state does not clear the queue


def test_queue_state_roundtrip_and_0_1_labels():
    queue = PPLQueue(2)
    queue.load_state_dict(saved_queue([torch.tensor([0.1, 0.2])], [torch.tensor([1, 0])]))
    s, c = queue.values()
    assert len(queue) == 2 and c.dtype == torch.bool and c.tolist() == [True, False]
    again = PPLQueue(2)
    again.load_state_dict(queue.state_dict())
    assert torch.equal(again.values()[0], s)


# ---------------------------------------------------------------- item 19: int64 / bool rewards
def batch():
    rewards = torch.tensor([0.0] * 4 + [1.0] * 4 + [0, 1, 0, 1.0])
    s = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.9, 1.0, 1.1, 2.6, 0.1, 1.5, 0.3, 1.6])
    return rewards, s


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_and_bool_rewards_are_accepted(dtype):
    rewards, s = batch()
    cfg = DiPOCoreConfig(judgment=False)
    expected = DiPO(cfg).step(rewards, s, 4)
    out = DiPO(cfg).step(rewards.to(dtype), s, 4)
    assert out.advantages.dtype == torch.float32
    assert torch.equal(out.advantages, expected.advantages) and out.realloc_mask.any()
    assert torch.equal(group_advantages(rewards.to(dtype), 4), group_advantages(rewards, 4))
    result = reallocate(rewards.to(dtype), s, 4, 1.45)
    realloc, mask = result.rewards, result.mask
    assert torch.equal(realloc, reallocate(rewards, s, 4, 1.45).rewards) and mask.any()


def test_complex_rewards_are_refused_with_the_expected_dtype():
    rewards, s = batch()
    with pytest.raises(ValueError, match=r"rewards must be a real tensor \(float, int or bool"):
        DiPO().step(rewards.to(torch.complex64), s, 4)


# ---------------------------------------------------------------- item 21: float32-adjacent values around τ*
def adjacent_float32() -> tuple[torch.Tensor, torch.Tensor]:
    """Two log-PPL values one float32 step apart: the low one correct, the high one wrong (a perfect cut between)."""
    a = torch.tensor(1.0, dtype=torch.float32)
    b = torch.nextafter(a, torch.tensor(2.0, dtype=torch.float32))
    return torch.stack([a, b]), torch.tensor([True, False])


def test_threshold_between_float32_neighbours_separates_them_in_every_comparison():
    s, c = adjacent_float32()
    tau = find_threshold(s, c)
    assert float(s[0]) < tau < float(s[1])
    # in float32, τ rounds onto one of the two values: the comparisons below used to lose one response
    assert float(torch.tensor(tau, dtype=torch.float32)) in (float(s[0]), float(s[1]))
    judgment = judge(s, c, tau, confidence=None)
    assert (judgment.n_low, judgment.n_high) == (1, 1) and judgment.passed
    assert threshold_error(s, c, tau) == 0.0
    assert quadrant_labels(s, c, tau).tolist() == [Quadrant.CL, Quadrant.EH]
    selected = torch.tensor([0])
    assert in_space(s, selected, 2, tau, "selected", low=True).tolist() == [True]
    assert in_space(s, torch.tensor([1]), 2, tau, "selected", low=False).tolist() == [True]


def test_dipo_step_with_float32_neighbours_passes_the_judgment():
    s, _ = adjacent_float32()
    # group 0: hard (all wrong) whose max-PPL response is the lower neighbour; group 1: correct/wrong mix
    log_ppl = torch.stack([s[0], s[0], s[0], s[1]])
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0])
    out = DiPO(DiPOCoreConfig(judgment_confidence=None)).step(rewards, log_ppl.float(), 2)
    assert out.judgment.passed and out.applied
    assert out.judgment.n_low + out.judgment.n_high == 4
    assert (out.quadrants >= 0).all() and math.isfinite(out.threshold)
