"""Spec §11 baselines: the CDE-style perplexity bonus."""

import math

import pytest
import torch

from dipo.core import perplexity_bonus


def test_bonus_grows_with_ppl_and_is_clipped_by_reward_magnitude():
    rewards = torch.tensor([1.0, 1.0, 0.0, -1.0])
    log_ppl = torch.tensor([0.5, 10.0, 2.0, 1.0])
    out = perplexity_bonus(rewards, log_ppl, coef=0.1, clip_ratio=0.5)
    # 0.1·0.5 = 0.05; 0.1·10 = 1.0 clipped to 0.5; reward 0 → no bonus; |−1|·0.5 = 0.5 ≥ 0.1 → 0.1
    assert out.tolist() == pytest.approx([1.05, 1.5, 0.0, -0.9])


def test_nan_ppl_gets_no_bonus_and_bad_coefficients_raise():
    out = perplexity_bonus(torch.tensor([1.0]), torch.tensor([float("nan")]))
    assert out.tolist() == [1.0]
    with pytest.raises(ValueError, match="coef"):
        perplexity_bonus(torch.tensor([1.0]), torch.tensor([1.0]), coef=-1.0)


def test_perplexity_bonus_delta_by_hand():
    """G=2, rewards [1, 0] and [1, 1], log-PPL 1: bonuses 0.1 (clipped by nothing), 0 (reward 0), 0.1, 0.1."""
    from dipo.core import perplexity_bonus_delta

    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    out = perplexity_bonus_delta(rewards, torch.ones(4), 2, coef=0.1, clip_ratio=0.5, scale_rewards="none")
    # plain advantages [0.5, -0.5, 0, 0]; shaped rewards [1.1, 0, 1.1, 1.1] -> [0.55, -0.55, 0, 0]
    assert out.delta.tolist() == pytest.approx([0.05, -0.05, 0.0, 0.0])
    assert out.metrics() == pytest.approx({"cde/bonus_mean": 0.075, "cde/frac_rows_with_bonus": 0.75})


def test_perplexity_bonus_delta_skips_invalid_rows_and_normalises_like_grpo():
    from dipo.core import group_advantages, perplexity_bonus_delta

    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    log_ppl = torch.tensor([2.0, 1.0, 0.5, 3.0, 0.2, 1.0])
    valid = torch.tensor([True, True, False, True, True, True])
    out = perplexity_bonus_delta(rewards, log_ppl, 3, coef=0.1, clip_ratio=0.5, valid=valid)
    shaped = perplexity_bonus(rewards, log_ppl, 0.1, 0.5)
    expected = group_advantages(shaped, 3, valid=valid) - group_advantages(rewards, 3, valid=valid)
    assert torch.allclose(out.delta, expected) and out.delta[2] == 0
    assert out.bonus_mean == pytest.approx((0.2 + 0 + 0.3 + 0.02 + 0) / 5)
    empty = perplexity_bonus_delta(torch.zeros(2), torch.ones(2), 2, valid=torch.zeros(2, dtype=torch.bool))
    assert math.isnan(empty.bonus_mean) and math.isnan(empty.frac_rows_with_bonus)
