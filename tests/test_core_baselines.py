"""Spec §11 baselines: the CDE-style perplexity bonus."""

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
