"""``realloc_normalizer="separate"`` (spec §7) counts what each framework's loss actually divides by.

``N_all / N_realloc`` must use the loss normaliser's unit and rows: verl's ``token-mean`` divides by the batch's
tokens, its ``seq-mean-*`` modes by its rows; TRL's dapo / cispo / vespo divide by ``num_items_in_batch`` (every
row's completion tokens, also rows no verifier reward applies to), bnpo by tokens, grpo / sapo / dr_grpo / luspo by
rows. The scales below are counted by hand on a 3 × 4 batch.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
pytest.importorskip("omegaconf")

from dipo.core import DiPO
from dipo.integrations.verl import (
    compute_dipo_outcome_advantage,
    get_estimator_state,
    parse_dipo_options,
    reset_estimator_states,
)
from verl_helpers import full_config

G, L = 4, 4
# Group 0: four over-confident wrong answers (hard, low PPL -> reallocated); groups 1, 2: three right, one wrong.
REWARDS = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
NLL = torch.tensor([0.20, 0.22, 0.24, 0.26, 0.3, 0.3, 0.3, 1.5, 0.3, 0.3, 0.3, 1.5])
LENGTHS = torch.tensor([1, 1, 2, 2, 4, 4, 3, 3, 4, 2, 2, 4])
# Hand counts: 32 response tokens in all, 6 in group 0; 12 rows, 4 in group 0.
TOKEN_SCALE, ROW_SCALE = 32 / 6, 12 / 4
ALPHA = 0.1


@pytest.fixture(autouse=True)
def _fresh_states():
    reset_estimator_states()
    yield
    reset_estimator_states()


def batch_tensors():
    mask = (torch.arange(L).unsqueeze(0) < LENGTHS.unsqueeze(1)).float()
    logps = -NLL.unsqueeze(1) * mask
    token_rewards = torch.zeros(len(REWARDS), L)
    token_rewards[torch.arange(len(REWARDS)), LENGTHS - 1] = REWARDS
    uids = np.array([f"p{i // G}" for i in range(len(REWARDS))], dtype=object)
    return token_rewards, mask, logps, uids


def realloc_delta(config) -> torch.Tensor:
    """Per-row α·scale·A^r that the estimator adds to verl's GRPO advantage (float64, before verl's float32 cast)."""
    token_rewards, mask, logps, uids = batch_tensors()
    reset_estimator_states()
    adv, _ = compute_dipo_outcome_advantage(token_rewards, mask, uids, config, {"old_log_probs": logps})
    out = get_estimator_state(config).last_output
    assert out.realloc_mask.tolist() == [True] * 4 + [False] * 8, "test data: group 0 is reallocated"
    torch.testing.assert_close(adv[:, 0], (out.base_advantages + out.advantage_delta).float())
    return out.advantage_delta


VERL_CASES = [
    ("token-mean", TOKEN_SCALE),
    ("seq-mean-token-sum", ROW_SCALE),
    ("seq-mean-token-mean", ROW_SCALE),
    ("seq-mean-token-sum-norm", ROW_SCALE),
]


@pytest.mark.parametrize(("loss_agg_mode", "scale"), VERL_CASES)
def test_verl_separate_scale_follows_the_actor_loss_agg_mode(loss_agg_mode, scale):
    dipo = {"alpha": ALPHA, "judgment": False}
    shared = realloc_delta(full_config(dipo, loss_agg_mode=loss_agg_mode).algorithm)
    assert bool((shared[:4].abs() > 0).all()) and bool((shared[4:] == 0).all())
    # read from actor_rollout_ref.actor.loss_agg_mode of the run config the algorithm node belongs to ...
    separate = realloc_delta(full_config({**dipo, "realloc_normalizer": "separate"}, loss_agg_mode).algorithm)
    torch.testing.assert_close(separate, scale * shared)
    # ... or given explicitly when the estimator gets a stand-alone algorithm config
    explicit = {**dipo, "realloc_normalizer": "separate", "loss_agg_mode": loss_agg_mode}
    torch.testing.assert_close(realloc_delta(full_config(explicit, loss_agg_mode=None).algorithm), scale * shared)


def test_verl_separate_without_a_known_loss_agg_mode_is_a_clear_error():
    separate = {"realloc_normalizer": "separate"}
    with pytest.raises(
        ValueError, match=r"\+algorithm\.dipo\.loss_agg_mode=<actor_rollout_ref\.actor\.loss_agg_mode>"
    ):
        parse_dipo_options(full_config(separate, loss_agg_mode=None).algorithm)
    with pytest.raises(ValueError, match="plain sum"):
        parse_dipo_options(full_config(separate, loss_agg_mode="token-sum").algorithm)
    with pytest.raises(ValueError, match="make the two equal"):
        parse_dipo_options(full_config({**separate, "loss_agg_mode": "token-mean"}, "seq-mean-token-mean").algorithm)
    with pytest.raises(ValueError, match="loss_agg_mode is one of"):
        parse_dipo_options(full_config({"loss_agg_mode": "seq-mean"}, loss_agg_mode=None).algorithm)
    # the shared normaliser needs no loss aggregation
    assert parse_dipo_options(full_config({}, loss_agg_mode=None).algorithm).loss_agg_mode is None


TRL_CASES = [
    *[(loss, TOKEN_SCALE) for loss in ("dapo", "cispo", "vespo", "bnpo")],
    *[(loss, ROW_SCALE) for loss in ("grpo", "dr_grpo", "sapo", "luspo")],
]


@pytest.fixture(scope="module")
def trl_trainer(tmp_path_factory):
    pytest.importorskip("trl")
    from dipo.integrations.trl import DiPOConfig, DiPOTrainer
    from trl_helpers import build_dataset, build_tiny_model_dir, kind_reward, load_tiny, tiny_grpo_kwargs

    tmp = tmp_path_factory.mktemp("normalizer")
    model, tokenizer = load_tiny(build_tiny_model_dir(tmp / "tiny"))
    args = DiPOConfig(
        **tiny_grpo_kwargs(tmp / "out", num_generations=G, max_completion_length=L),
        dipo_alpha=ALPHA,
        dipo_judgment=False,
        dipo_realloc_normalizer="separate",
    )
    return DiPOTrainer(
        model=model, reward_funcs=[kind_reward], args=args, train_dataset=build_dataset(4), processing_class=tokenizer
    )


@pytest.mark.slow
@pytest.mark.parametrize(("loss_type", "scale"), TRL_CASES)
def test_trl_separate_scale_counts_every_row_the_loss_normaliser_counts(trl_trainer, loss_type, scale):
    """Row 7 has no verifier reward (NaN) but 3 loss tokens: TRL's normalisers count it, so N_all must too."""
    _, mask, logps, _ = batch_tensors()
    n = len(REWARDS)
    rewards = REWARDS.clone()
    rewards[7] = float("nan")
    output = {
        "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
        "prompt_mask": torch.ones(n, 1, dtype=torch.long),
        "completion_ids": torch.zeros(n, L, dtype=torch.long),
        "completion_mask": mask.long(),
        "old_per_token_logps": logps,
        "advantages": torch.zeros(n),
    }
    trl_trainer.loss_type = loss_type
    trl_trainer.dipo = DiPO(trl_trainer.args.dipo_core_config())
    trl_trainer._apply_dipo(output, rewards.unsqueeze(1))
    record = trl_trainer.last_dipo_batch
    assert not bool(record.valid[7]) and record.output.realloc_mask.tolist() == [True] * 4 + [False] * 8

    shared_config = dataclasses.replace(trl_trainer.dipo.config, realloc_normalizer="shared")
    shared = DiPO(shared_config).step(record.rewards, record.log_ppl, G, valid=record.valid)
    assert bool((shared.advantage_delta[:4].abs() > 0).all())
    torch.testing.assert_close(record.output.advantage_delta, scale * shared.advantage_delta)
