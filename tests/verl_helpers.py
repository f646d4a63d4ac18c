"""Shared synthetic verl batches for the tests of ``dipo.integrations.verl`` (no model, CPU only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dipo.core import DiPO, DiPOCoreConfig, sequence_log_ppl

VERL_GRPO_EPS = 1e-6


@dataclass
class VerlBatch:
    """Rows in contiguous group order (``uids[i] = f"p{i // G}"``); shuffle with :meth:`permuted`."""

    token_level_rewards: torch.Tensor  # [N, L], the reward at the last response token, as verl's reward managers
    response_mask: torch.Tensor  # [N, L]
    old_log_probs: torch.Tensor  # [N, L]
    uids: np.ndarray  # [N] object array of prompt uids
    rewards: torch.Tensor  # [N]
    group_size: int

    def permuted(self, perm: torch.Tensor) -> VerlBatch:
        return VerlBatch(
            self.token_level_rewards[perm],
            self.response_mask[perm],
            self.old_log_probs[perm],
            self.uids[perm.numpy()],
            self.rewards[perm],
            self.group_size,
        )


def make_batch(num_groups: int = 16, group_size: int = 8, length: int = 12, seed: int = 0) -> VerlBatch:
    """Binary rewards with informative perplexity (correct → low NLL) and the four kinds of extreme group.

    Group 0: hard, every response over-confident (low PPL) → BRR rewards its max-PPL response.
    Group 1: hard, high PPL → untouched.  Group 2: easy with one high-PPL correct response → BRR penalises it.
    Group 3: easy, all low PPL → untouched.  Other groups: random mix of right and wrong.
    """
    gen = torch.Generator().manual_seed(seed)
    n = num_groups * group_size
    rewards = (torch.rand(n, generator=gen) < 0.5).float()
    rewards[0:group_size] = 0.0
    rewards[group_size : 2 * group_size] = 0.0
    rewards[2 * group_size : 4 * group_size] = 1.0
    nll = torch.where(rewards > 0, 0.3, 1.5) + 0.1 * torch.rand(n, generator=gen)
    nll[0:group_size] = 0.2 + 0.05 * torch.rand(group_size, generator=gen)
    nll[2 * group_size] = 1.7
    lengths = torch.randint(1, length + 1, (n,), generator=gen)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()
    token_logps = -(nll.unsqueeze(1) + 0.05 * torch.randn(n, length, generator=gen)).clamp(min=0.01)
    token_logps = torch.where(mask > 0, token_logps, torch.zeros_like(token_logps))
    token_rewards = torch.zeros(n, length)
    token_rewards[torch.arange(n), lengths - 1] = rewards
    uids = np.array([f"p{i // group_size}" for i in range(n)], dtype=object)
    return VerlBatch(token_rewards, mask, token_logps, uids, rewards, group_size)


def core_reference(batch: VerlBatch, core_config: DiPOCoreConfig, core: DiPO | None = None):
    """dipo.core on the contiguous (unshuffled) batch: the expected per-row output."""
    core = core or DiPO(core_config)
    log_ppl = sequence_log_ppl(batch.old_log_probs.double(), batch.response_mask)
    return core.step(
        batch.rewards.double(), log_ppl, batch.group_size, token_counts=batch.response_mask.sum(-1).double()
    )


def verl_core_config(**overrides) -> DiPOCoreConfig:
    """The DiPOCoreConfig the verl adapter builds for verl's GRPO normalisation (unbiased std, eps 1e-6)."""
    return DiPOCoreConfig(**{"std": "unbiased", "std_eps": VERL_GRPO_EPS, "scale_rewards": "group", **overrides})


def full_config(
    dipo: dict | None = None,
    loss_agg_mode: str | None = "token-mean",
    overlong: tuple[int, int, float] | None = None,
    norm_by_std: bool = True,
):
    """An OmegaConf config shaped like a verl run's (``algorithm``, ``actor_rollout_ref.actor``, ``reward``).

    Pass its ``.algorithm`` node to the estimator, as verl's trainers do: the node keeps its link to the whole config.
    ``overlong=(max_resp_len, buffer_len, penalty_factor)`` turns on the ``dapo`` reward manager's overlong buffer.
    """
    import omegaconf

    actor = {} if loss_agg_mode is None else {"loss_agg_mode": loss_agg_mode}
    reward = {"reward_manager": {"source": "register", "name": "naive"}, "reward_kwargs": {}}
    if overlong is not None:
        max_resp_len, buffer_len, factor = overlong
        reward = {
            "reward_manager": {"source": "register", "name": "dapo"},
            "reward_kwargs": {
                "max_resp_len": max_resp_len,
                "overlong_buffer_cfg": {"enable": True, "len": buffer_len, "penalty_factor": factor, "log": False},
            },
        }
    algorithm = {"adv_estimator": "dipo", "norm_adv_by_std_in_grpo": norm_by_std, "filter_groups": {"enable": False}}
    if dipo is not None:
        algorithm["dipo"] = dipo
    return omegaconf.OmegaConf.create(
        {"algorithm": algorithm, "actor_rollout_ref": {"actor": actor}, "reward": reward}
    )


def dapo_overlong_penalty(lengths: torch.Tensor, max_resp_len: int, buffer_len: int, factor: float = 1.0):
    """DAPO's soft overlong penalty, written out as verl 0.9.1's ``dapo`` reward manager computes it (float32)."""
    exceed = lengths.float() - (max_resp_len - buffer_len)
    return torch.clamp(-exceed / buffer_len * factor, max=0.0)
