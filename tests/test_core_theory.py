"""Spec §8 (direction of Theorems 1–2): on a tabular softmax policy, one policy-gradient step with the
maximum-PPL reward raises entropy and one with the maximum-PPL penalty lowers it."""

import torch

from dipo.core import group_advantages, reallocate


def entropy(logits: torch.Tensor) -> float:
    p = torch.softmax(logits, 0)
    return float(-(p * p.log()).sum())


def one_step(logits: torch.Tensor, rewards: torch.Tensor, lr: float = 1e-2) -> torch.Tensor:
    """Sample each of the K responses once (a group covering the support); a single-token response has
    PPL = 1/π(y), so log-PPL = −log π(y). Apply BRR with a threshold that puts the group in the right space,
    then one REINFORCE step with the group-normalised advantages of R_r."""
    theta = logits.clone().requires_grad_(True)
    log_ppl = -torch.log_softmax(theta.detach(), 0)
    k = logits.numel()
    threshold = float(log_ppl.max()) + 1.0 if rewards[0] == 0 else float(log_ppl.min()) - 1.0
    result = reallocate(rewards, log_ppl, k, threshold)
    realloc, mask = result.rewards, result.mask
    assert mask.all()
    adv = group_advantages(realloc, k)
    objective = (adv * torch.log_softmax(theta, 0)).sum()
    objective.backward()
    return (theta + lr * theta.grad).detach()


def test_max_ppl_reward_raises_entropy_and_penalty_lowers_it():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        k = int(torch.randint(2, 12, (1,), generator=gen))
        logits = torch.randn(k, generator=gen) * 2
        if torch.allclose(logits, logits[0].expand_as(logits)):
            continue
        h0 = entropy(logits)
        assert entropy(one_step(logits, torch.zeros(k))) > h0  # hard group: maximum-PPL reward
        assert entropy(one_step(logits, torch.ones(k))) < h0  # easy group: maximum-PPL penalty
