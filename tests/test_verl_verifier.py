"""The verifier reward of the ``dipo`` verl estimator: DAPO's soft overlong penalty does not decide hard / easy groups.

verl's ``dapo`` reward manager adds the overlong penalty to the ±1 score, so a group of wrong (or right) answers with
one response in the overlong buffer has a non-zero score variance. DiPO must still see it as extreme (spec §6), as the
TRL integration does (it leaves TRL's soft-overlong reward function out of the verifier reward).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
omegaconf = pytest.importorskip("omegaconf")

from dipo.core import DiPO, GroupType, sequence_log_ppl  # noqa: E402
from dipo.integrations.verl import (  # noqa: E402
    compute_dipo_outcome_advantage,
    get_estimator_state,
    parse_dipo_options,
    reset_estimator_states,
)
from verl_helpers import dapo_overlong_penalty, full_config, make_batch, verl_core_config  # noqa: E402

MAX_RESP_LEN, BUFFER_LEN = 12, 4  # responses longer than 8 tokens are penalised
GRADED = {"reward_mode": "graded", "correct_threshold": 0.0, "judgment": False}


@pytest.fixture(autouse=True)
def _fresh_states():
    reset_estimator_states()
    yield
    reset_estimator_states()


def dapo_batch(seed: int = 0, num_groups: int = 16, group_size: int = 8):
    """``make_batch`` with DAPO's rewards: ±1 plus the soft overlong penalty, at the last response token."""
    batch = make_batch(num_groups=num_groups, group_size=group_size, length=MAX_RESP_LEN, seed=seed)
    lengths = batch.response_mask.sum(-1)
    signed = batch.rewards * 2 - 1
    penalty = dapo_overlong_penalty(lengths, MAX_RESP_LEN, BUFFER_LEN)
    token_rewards = torch.zeros_like(batch.token_level_rewards)
    token_rewards[torch.arange(len(lengths)), lengths.long() - 1] = signed + penalty
    return batch, signed, penalty, token_rewards


def run(token_rewards, batch, config, **kwargs):
    return compute_dipo_outcome_advantage(
        token_rewards, batch.response_mask, batch.uids, config, {"old_log_probs": batch.old_log_probs}, **kwargs
    )


def extreme_groups_with_penalty(signed: torch.Tensor, penalty: torch.Tensor, group_size: int) -> torch.Tensor:
    """Groups whose verifier rewards are all equal but whose DAPO scores are not (one row in the buffer)."""
    same = (signed.view(-1, group_size) == signed.view(-1, group_size)[:, :1]).all(1)
    return same & (penalty.view(-1, group_size) < 0).any(1)


def test_overlong_penalty_does_not_hide_extreme_groups():
    batch, signed, penalty, token_rewards = dapo_batch(seed=0)
    affected = extreme_groups_with_penalty(signed, penalty, batch.group_size)
    assert bool(affected[0]) and bool(affected[2]), "test data: the reallocated groups 0 and 2 carry a penalty"

    config = full_config(GRADED, overlong=(MAX_RESP_LEN, BUFFER_LEN, 1.0)).algorithm
    run(token_rewards, batch, config)
    out = get_estimator_state(config).last_output
    reference = DiPO(verl_core_config(**GRADED)).step(
        signed.double(), sequence_log_ppl(batch.old_log_probs.double(), batch.response_mask), batch.group_size
    )
    assert torch.equal(out.group_types, reference.group_types)
    assert torch.equal(out.realloc_mask, reference.realloc_mask)
    assert bool(out.realloc_hard[0]) and bool(out.realloc_easy[2])
    assert get_estimator_state(config).last_verifier.source == "score - overlong penalty"

    # Negative control: the DAPO score itself (today's behaviour) turns every affected group into a normal one.
    reset_estimator_states()
    score_config = full_config({**GRADED, "verifier_key": "score"}, overlong=(MAX_RESP_LEN, BUFFER_LEN, 1.0))
    run(token_rewards, batch, score_config.algorithm)
    score_out = get_estimator_state(score_config.algorithm).last_output
    assert (score_out.group_types[affected] == int(GroupType.NORMAL)).all()
    assert not bool(score_out.realloc_hard[0]) and not bool(score_out.realloc_easy[2])


def test_base_advantage_keeps_the_penalty_and_dipo_adds_only_the_realloc_term():
    """The loss still trains on DAPO's score (verl's GRPO advantage of token_level_rewards); DiPO adds α·A^r."""
    from verl.trainer.ppo import core_algos

    batch, _, _, token_rewards = dapo_batch(seed=1)
    config = full_config({**GRADED, "alpha": 0.1}, overlong=(MAX_RESP_LEN, BUFFER_LEN, 1.0)).algorithm
    adv, _ = run(token_rewards, batch, config)
    out = get_estimator_state(config).last_output
    grpo, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, batch.response_mask, batch.uids)
    expected = grpo + out.advantage_delta.float().unsqueeze(-1) * batch.response_mask
    torch.testing.assert_close(adv, expected)
    assert bool(out.realloc_mask.any())


def test_logged_overlong_reward_and_named_fields():
    """``overlong_reward`` (overlong_buffer_cfg.log=True) is used as is; ``verifier_key=acc`` reads that field."""
    batch, signed, penalty, token_rewards = dapo_batch(seed=2)
    config = full_config(GRADED).algorithm  # no overlong settings reachable: only the logged field can help
    run(token_rewards, batch, config, non_tensor_batch={"overlong_reward": penalty.numpy().astype(object)})
    state = get_estimator_state(config)
    assert state.last_verifier.source == "score - overlong_reward"
    torch.testing.assert_close(state.last_verifier.rewards, signed.double())

    reset_estimator_states()
    acc_config = full_config({"verifier_key": "acc", "judgment": False}).algorithm  # binary mode: acc is 0/1
    acc = np.array([bool(r) for r in batch.rewards], dtype=object)
    run(token_rewards, batch, acc_config, non_tensor_batch={"acc": acc})
    acc_state = get_estimator_state(acc_config)
    torch.testing.assert_close(acc_state.last_verifier.rewards, batch.rewards.double())
    with pytest.raises(ValueError, match=r"verifier_key='acc'.*no per-row 'acc' field.*verifier_key=auto"):
        run(token_rewards, batch, acc_config)


def test_penalty_is_recomputed_like_verls_dapo_reward_manager():
    from dipo.integrations.verl.options import OverlongPenalty

    root = full_config(GRADED, overlong=(20480, 4096, 0.5))
    opts = parse_dipo_options(root.algorithm)
    assert opts.overlong == OverlongPenalty(20480, 4096, 0.5)
    lengths = torch.tensor([1, 16384, 16385, 18432, 20480])
    torch.testing.assert_close(opts.overlong(lengths), dapo_overlong_penalty(lengths, 20480, 4096, 0.5).double())
    assert parse_dipo_options(full_config(GRADED).algorithm).overlong is None  # naive reward manager
    assert parse_dipo_options(full_config({"verifier_key": "score"}, overlong=(12, 4, 1.0)).algorithm).overlong is None
    broken = full_config(GRADED, overlong=(12, 4, 1.0))
    del broken.reward.reward_kwargs["max_resp_len"]
    with pytest.raises(ValueError, match=r"reward\.reward_kwargs\.max_resp_len is not set"):
        parse_dipo_options(broken.algorithm)


@pytest.mark.slow
def test_trl_and_verl_classify_the_same_dapo_rewards_the_same_way(tmp_path):
    """The same ±1 rewards plus the same soft overlong penalty, through TRL's DiPOTrainer and verl's estimator."""
    pytest.importorskip("trl")
    from dipo.integrations.trl import DiPOConfig, DiPOTrainer
    from trl_helpers import build_dataset, build_tiny_model_dir, load_tiny, tiny_grpo_kwargs

    group_size = 4
    batch, signed, _, _ = dapo_batch(seed=3, num_groups=8, group_size=group_size)
    lengths = batch.response_mask.sum(-1).long()
    n = len(lengths)

    def verifier(completion_ids, **kwargs):
        return [0.0] * len(completion_ids)  # never called: the test feeds the reward matrix directly

    model, tokenizer = load_tiny(build_tiny_model_dir(tmp_path / "tiny"))
    args = DiPOConfig(
        **tiny_grpo_kwargs(tmp_path / "out", num_generations=group_size, max_completion_length=MAX_RESP_LEN),
        soft_overlong_cache=BUFFER_LEN,
        dipo_reward_mode="graded",
        dipo_correct_threshold=0.0,
        dipo_judgment=False,
    )
    trainer = DiPOTrainer(
        model=model, reward_funcs=[verifier], args=args, train_dataset=build_dataset(4), processing_class=tokenizer
    )
    # TRL's own soft-overlong reward function scores the completions; verl gets the same numbers summed.
    trl_penalty = torch.tensor(trainer.reward_funcs[1](completion_ids=[[1] * int(k) for k in lengths]))
    rewards_per_func = torch.stack([signed, trl_penalty.float()], dim=1)
    output = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, MAX_RESP_LEN, dtype=torch.long),
        "completion_mask": batch.response_mask.long(),
        "old_per_token_logps": batch.old_log_probs,
        "advantages": torch.zeros(n),
    }
    trainer._apply_dipo(output, rewards_per_func)
    trl_out = trainer.last_dipo_batch.output

    token_rewards = torch.zeros_like(batch.token_level_rewards)
    token_rewards[torch.arange(n), lengths - 1] = rewards_per_func.sum(1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # verl reorders rows; groups by uid
    shuffled = batch.permuted(perm)
    config = full_config(GRADED, overlong=(MAX_RESP_LEN, BUFFER_LEN, 1.0)).algorithm
    run(token_rewards[perm], shuffled, config)
    state = get_estimator_state(config)
    verl_out = state.last_output
    # verl's layout puts uid groups in order of first appearance; map them back to TRL's contiguous group order.
    group_of = [int(shuffled.uids[int(state.last_layout.order[g * group_size])][1:]) for g in range(n // group_size)]
    back = torch.tensor(np.argsort(group_of))
    rows_back = (back.unsqueeze(1) * group_size + torch.arange(group_size)).reshape(-1)

    assert extreme_groups_with_penalty(signed, trl_penalty, group_size).any(), "test data: penalised extreme groups"
    assert torch.equal(verl_out.group_types[back], trl_out.group_types)
    assert torch.equal(verl_out.realloc_hard[back], trl_out.realloc_hard)
    assert torch.equal(verl_out.realloc_easy[back], trl_out.realloc_easy)
    # the selected (maximum-PPL) response, as a row of the original batch
    num_groups = n // group_size
    verl_selected = perm[state.last_layout.order[back * group_size + verl_out.selected[back]]]
    assert torch.equal(verl_selected, torch.arange(num_groups) * group_size + trl_out.selected)
    assert torch.equal(verl_out.realloc_mask[rows_back], trl_out.realloc_mask)
    assert bool(trl_out.realloc_hard.any()) and bool(trl_out.realloc_easy.any())


def test_in_reward_kl_penalty_stays_out_of_the_verifier_reward():
    """``use_kl_in_reward=True``: verl's token_level_rewards = token_level_scores − β·KL; R comes from the scores."""
    from verl.trainer.ppo import core_algos

    batch = make_batch(seed=4)
    kl = 0.01 * torch.rand(batch.response_mask.shape, generator=torch.Generator().manual_seed(1)) * batch.response_mask
    rewards_with_kl = batch.token_level_rewards - kl
    config = full_config({"judgment": False}).algorithm  # binary mode: refuses anything but 0/1
    adv, _ = compute_dipo_outcome_advantage(
        rewards_with_kl,
        batch.response_mask,
        batch.uids,
        config,
        {"old_log_probs": batch.old_log_probs, "token_level_scores": batch.token_level_rewards},
    )
    state = get_estimator_state(config)
    torch.testing.assert_close(state.last_verifier.rewards, batch.rewards.double())
    grpo, _ = core_algos.compute_grpo_outcome_advantage(rewards_with_kl, batch.response_mask, batch.uids)
    expected = grpo + state.last_output.advantage_delta.float().unsqueeze(-1) * batch.response_mask
    torch.testing.assert_close(adv, expected)
