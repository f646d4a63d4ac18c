"""The ``dipo`` verl advantage estimator against ``dipo.core`` and verl's own GRPO (real verl, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
omegaconf = pytest.importorskip("omegaconf")

from verl.trainer.config import AlgoConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

from dipo.core import DiPO  # noqa: E402
from dipo.integrations.verl import (  # noqa: E402
    compute_dipo_outcome_advantage,
    get_estimator_state,
    group_rows_by_uid,
    parse_dipo_options,
    reset_estimator_states,
)
from verl_helpers import core_reference, make_batch, verl_core_config  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_states():
    reset_estimator_states()
    yield
    reset_estimator_states()


def algo_config(dipo: dict | None = None, norm_by_std: bool = True, filter_groups: bool = False):
    cfg = {
        "adv_estimator": "dipo",
        "norm_adv_by_std_in_grpo": norm_by_std,
        "filter_groups": {"enable": filter_groups, "metric": "acc"},
    }
    if dipo is not None:
        cfg["dipo"] = dipo
    return omegaconf.OmegaConf.create(cfg)


def run_estimator(batch, config, **kwargs):
    return compute_dipo_outcome_advantage(
        token_level_rewards=batch.token_level_rewards,
        response_mask=batch.response_mask,
        index=batch.uids,
        config=config,
        batch={"old_log_probs": batch.old_log_probs},
        **kwargs,
    )


def test_registry_returns_dipo_estimator():
    assert core_algos.get_adv_estimator_fn("dipo") is compute_dipo_outcome_advantage


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_equals_dipo_core_on_same_data(norm_by_std):
    batch = make_batch(seed=1)
    perm = torch.randperm(batch.rewards.numel(), generator=torch.Generator().manual_seed(7))
    shuffled = batch.permuted(perm)
    adv, returns = run_estimator(shuffled, algo_config({"alpha": 0.1}, norm_by_std=norm_by_std))

    ref = core_reference(batch, verl_core_config(alpha=0.1, scale_rewards="group" if norm_by_std else "none"))
    assert ref.applied and bool(ref.realloc_hard.any()) and bool(ref.realloc_easy.any()), "test data must reallocate"
    expected = ref.advantages.float()[perm].unsqueeze(-1) * shuffled.response_mask
    torch.testing.assert_close(adv, expected)
    assert returns is adv or torch.equal(returns, adv)
    assert adv.dtype == batch.token_level_rewards.dtype and adv.shape == batch.response_mask.shape


def test_queue_state_carries_over_steps_like_core():
    config = algo_config({"alpha": 0.2, "queue_batches": 2})
    core = DiPO(verl_core_config(alpha=0.2, queue_batches=2))
    for seed in range(3):
        batch = make_batch(seed=seed)
        adv, _ = run_estimator(batch, config)
        ref = core_reference(batch, core.config, core)
        torch.testing.assert_close(adv, ref.advantages.float().unsqueeze(-1) * batch.response_mask)
    state = get_estimator_state(config)
    assert len(state.core.queue) == len(core.queue) == 2 * batch.rewards.numel()


def test_shuffled_uid_order_gives_same_per_row_result():
    batch = make_batch(num_groups=12, group_size=4, seed=3)
    base, _ = run_estimator(batch, algo_config())
    for seed in (11, 12):
        reset_estimator_states()
        perm = torch.randperm(batch.rewards.numel(), generator=torch.Generator().manual_seed(seed))
        adv, _ = run_estimator(batch.permuted(perm), algo_config())
        torch.testing.assert_close(adv, base[perm])


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_alpha_zero_equals_verl_grpo(norm_by_std):
    batch = make_batch(seed=4)
    perm = torch.randperm(batch.rewards.numel(), generator=torch.Generator().manual_seed(5))
    shuffled = batch.permuted(perm)
    adv, _ = run_estimator(shuffled, algo_config({"alpha": 0.0}, norm_by_std=norm_by_std))
    grpo_adv, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=shuffled.token_level_rewards,
        response_mask=shuffled.response_mask,
        index=shuffled.uids,
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    torch.testing.assert_close(adv, grpo_adv)
    # With alpha > 0 the estimator must differ exactly in the reallocated groups.
    reset_estimator_states()
    dipo_adv, _ = run_estimator(shuffled, algo_config({"alpha": 0.1}, norm_by_std=norm_by_std))
    changed_rows = (dipo_adv - grpo_adv).abs().amax(dim=1) > 1e-6
    realloc = core_reference(batch, verl_core_config(alpha=0.1)).realloc_mask[perm]
    assert torch.equal(changed_rows, realloc) and bool(realloc.any())


def test_filter_groups_guard_raises():
    batch = make_batch(seed=0)
    with pytest.raises(ValueError, match=r"filter_groups\.enable=True is incompatible"):
        run_estimator(batch, algo_config(filter_groups=True))


def test_missing_log_probs_raise_clear_error():
    batch = make_batch(seed=0)
    with pytest.raises(ValueError, match="needs per-token log-probs"):
        compute_dipo_outcome_advantage(
            token_level_rewards=batch.token_level_rewards,
            response_mask=batch.response_mask,
            index=batch.uids,
            config=algo_config(),
        )
    with pytest.raises(ValueError, match=r"needs per-token log-probs \(rollout_log_probs\)"):
        run_estimator(batch, algo_config({"log_probs": "sampling"}))


def test_log_prob_source_names_are_trls_and_the_old_ones_still_work(monkeypatch):
    """issue 17: ``old`` / ``sampling`` as TRL's dipo_ppl_source; the earlier verl names map to them and warn once."""
    from dipo.integrations._kit import logprobs

    monkeypatch.setattr(logprobs, "_warned", set())
    batch = make_batch(seed=2)
    expected, _ = run_estimator(batch, algo_config({"log_probs": "old"}))
    for legacy in ("old_log_probs", "rollout_log_probs"):
        with pytest.warns(FutureWarning, match=rf"algorithm.dipo.log_probs='{legacy}' is deprecated"):
            assert (
                parse_dipo_options(algo_config({"log_probs": legacy})).log_probs == logprobs.LEGACY_PPL_SOURCES[legacy]
            )
    reset_estimator_states()
    adv, _ = compute_dipo_outcome_advantage(
        batch.token_level_rewards,
        batch.response_mask,
        batch.uids,
        algo_config({"log_probs": "old_log_probs"}),
        {"old_log_probs": batch.old_log_probs},
    )
    torch.testing.assert_close(adv, expected)
    with pytest.raises(
        ValueError, match=r"unknown algorithm.dipo.log_probs='forward'; choose one of 'auto', 'old', 'sampling'"
    ):
        parse_dipo_options(algo_config({"log_probs": "forward"}))  # verl always has old_log_probs: no extra pass


def test_rollout_log_probs_fallback():
    batch = make_batch(seed=2)
    expected, _ = run_estimator(batch, algo_config())
    reset_estimator_states()
    adv, _ = compute_dipo_outcome_advantage(
        token_level_rewards=batch.token_level_rewards,
        response_mask=batch.response_mask,
        index=batch.uids,
        config=algo_config(),
        batch={"rollout_log_probs": batch.old_log_probs},
    )
    torch.testing.assert_close(adv, expected)


def test_unequal_or_singleton_groups_raise():
    batch = make_batch(num_groups=4, group_size=4, seed=0)
    uids = batch.uids.copy()
    uids[0] = "p1"  # p0 has 3 rows, p1 has 5
    with pytest.raises(ValueError, match="same number G >= 2"):
        compute_dipo_outcome_advantage(
            batch.token_level_rewards, batch.response_mask, uids, algo_config(), {"old_log_probs": batch.old_log_probs}
        )
    singletons = np.array([f"u{i}" for i in range(len(uids))], dtype=object)
    with pytest.raises(ValueError, match="same number G >= 2"):
        compute_dipo_outcome_advantage(
            batch.token_level_rewards,
            batch.response_mask,
            singletons,
            algo_config(),
            {"old_log_probs": batch.old_log_probs},
        )
    with pytest.raises(ValueError, match="uid"):
        compute_dipo_outcome_advantage(
            batch.token_level_rewards, batch.response_mask, None, algo_config(), {"old_log_probs": batch.old_log_probs}
        )


def test_verl_padding_rows_get_zero_advantage():
    """verl appends synthetic rows (one shared uid, empty response mask) to make the batch divisible."""
    batch = make_batch(num_groups=6, group_size=4, seed=6)
    expected, _ = run_estimator(batch, algo_config())
    reset_estimator_states()
    pad = 3
    length = batch.response_mask.shape[1]
    rewards = torch.cat([batch.token_level_rewards, torch.zeros(pad, length)])
    mask = torch.cat([batch.response_mask, torch.zeros(pad, length)])
    logps = torch.cat([batch.old_log_probs, torch.zeros(pad, length)])
    uids = np.concatenate([batch.uids, np.array(["pad0abc"] * pad, dtype=object)])
    adv, _ = compute_dipo_outcome_advantage(rewards, mask, uids, algo_config(), {"old_log_probs": logps})
    torch.testing.assert_close(adv[:-pad], expected)
    assert torch.equal(adv[-pad:], torch.zeros(pad, length))
    layout = group_rows_by_uid(uids, mask)
    assert (layout.num_groups, layout.group_size, layout.num_inactive_rows) == (6, 4, pad)
    with pytest.raises(ValueError, match="no response tokens"):
        group_rows_by_uid(uids, torch.zeros_like(mask))


def test_options_parsing_and_errors():
    opts = parse_dipo_options(algo_config({"alpha": 0.3, "membership": "all", "judgment_confidence": None}))
    assert (opts.core.alpha, opts.core.membership, opts.core.judgment_confidence) == (0.3, "all", None)
    assert (opts.core.std, opts.core.std_eps, opts.core.scale_rewards) == ("unbiased", 1e-6, "group")
    assert parse_dipo_options(algo_config(norm_by_std=False)).core.scale_rewards == "none"
    assert parse_dipo_options(AlgoConfig()).core.alpha == verl_core_config().alpha  # dataclass config, no dipo key
    with pytest.raises(ValueError, match=r"unknown DiPO option\(s\) algorithm\.dipo\.alhpa"):
        parse_dipo_options(algo_config({"alhpa": 0.1}))
    with pytest.raises(ValueError, match="norm_adv_by_std_in_grpo"):
        parse_dipo_options(algo_config({"std_eps": 1e-4}))
    with pytest.raises(ValueError, match="alpha"):
        parse_dipo_options(algo_config({"alpha": -1.0}))
    with pytest.raises(ValueError, match="log_probs"):
        parse_dipo_options(algo_config({"log_probs": "ref_log_prob"}))


def test_graded_dapo_style_rewards():
    """DAPO's math reward is ±1 (plus overlong penalty): reward_mode=graded with correct_threshold=0."""
    batch = make_batch(seed=8)
    signed = batch.token_level_rewards * 2 - (batch.token_level_rewards != 0).float()
    signed[torch.arange(len(signed)), batch.response_mask.sum(-1).long() - 1] = batch.rewards * 2 - 1
    with pytest.raises(ValueError, match="reward_mode='graded'"):
        compute_dipo_outcome_advantage(
            signed, batch.response_mask, batch.uids, algo_config(), {"old_log_probs": batch.old_log_probs}
        )
    reset_estimator_states()
    config = algo_config({"reward_mode": "graded", "correct_threshold": 0.0})
    adv, _ = compute_dipo_outcome_advantage(
        signed, batch.response_mask, batch.uids, config, {"old_log_probs": batch.old_log_probs}
    )
    binary, _ = run_estimator(batch, algo_config())
    # ±1 rewards are 2·r − 1: group-normalised advantages (and the reallocation) are the same up to the epsilon.
    torch.testing.assert_close(adv, binary, atol=1e-5, rtol=1e-5)
    assert get_estimator_state(config).pop_metrics()["dipo/realloc_hard"] >= 1


def test_metrics_are_popped_once():
    batch = make_batch(seed=1)
    config = algo_config()
    run_estimator(batch, config)
    metrics = get_estimator_state(config).pop_metrics()
    ref = core_reference(batch, verl_core_config()).metrics()
    for key, value in ref.items():
        np.testing.assert_allclose(metrics[f"dipo/{key}"], value, rtol=1e-6, equal_nan=True)
    assert metrics["dipo/group_size"] == 8 and metrics["dipo/num_groups"] == 16
    assert get_estimator_state(config).pop_metrics() == {}


@settings(max_examples=25, deadline=None)
@given(
    num_groups=st.integers(1, 6),
    group_size=st.integers(2, 6),
    length=st.integers(1, 5),
    seed=st.integers(0, 2**31 - 1),
    alpha=st.sampled_from([0.0, 0.1, 1.0]),
)
def test_property_row_order_invariance_and_grpo_outside_realloc(num_groups, group_size, length, seed, alpha):
    """Any row order gives the same per-row advantages; rows outside reallocated groups get verl's GRPO value."""
    gen = torch.Generator().manual_seed(seed)
    n = num_groups * group_size
    rewards = (torch.rand(n, generator=gen) < 0.5).float()
    lengths = torch.randint(0, length + 1, (n,), generator=gen)  # 0: a response without tokens (NaN log-PPL)
    lengths[::group_size] = length  # every group has a token (all-empty groups are verl padding, tested above)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()
    token_rewards = torch.zeros(n, length)
    token_rewards[:, 0] = rewards
    logps = -torch.rand(n, length, generator=gen) * 3
    uids = np.array([f"q{i // group_size}" for i in range(n)], dtype=object)
    perm = torch.randperm(n, generator=gen)
    config = algo_config({"alpha": alpha, "judgment": False})

    reset_estimator_states()
    adv, _ = compute_dipo_outcome_advantage(token_rewards, mask, uids, config, {"old_log_probs": logps})
    state = get_estimator_state(config)
    realloc_rows = torch.zeros(n, dtype=torch.bool)
    realloc_rows[state.last_layout.order] = state.last_output.realloc_mask
    reset_estimator_states()
    adv_perm, _ = compute_dipo_outcome_advantage(
        token_rewards[perm], mask[perm], uids[perm.numpy()], config, {"old_log_probs": logps[perm]}
    )
    torch.testing.assert_close(adv_perm, adv[perm])
    grpo, _ = core_algos.compute_grpo_outcome_advantage(token_rewards, mask, uids)
    torch.testing.assert_close(adv[~realloc_rows], grpo[~realloc_rows])
    if alpha == 0.0:
        torch.testing.assert_close(adv, grpo)


# ---------------------------------------------------------------- issue 16 item 7: shapes and strict switches
def test_mismatched_row_counts_are_refused_with_both_shapes():
    batch = make_batch(seed=2)
    with pytest.raises(
        ValueError, match=r"token_level_rewards has shape \(127, 12\) but response_mask has \(128, 12\)"
    ):
        compute_dipo_outcome_advantage(
            token_level_rewards=batch.token_level_rewards[:-1],  # old code: IndexError
            response_mask=batch.response_mask,
            index=batch.uids,
            config=algo_config(),
            batch={"old_log_probs": batch.old_log_probs},
        )


def test_a_response_mask_longer_than_the_rewards_is_refused():
    batch = make_batch(seed=2)
    longer = torch.cat([batch.response_mask, torch.ones(batch.response_mask.shape[0], 3)], dim=1)
    logps = torch.cat([batch.old_log_probs, -torch.ones(batch.response_mask.shape[0], 3)], dim=1)
    with pytest.raises(
        ValueError, match=r"token_level_rewards has shape \(128, 12\) but response_mask has \(128, 15\)"
    ):
        compute_dipo_outcome_advantage(  # old code: advantages [128, 15], wider than the rewards
            token_level_rewards=batch.token_level_rewards,
            response_mask=longer,
            index=batch.uids,
            config=algo_config(),
            batch={"old_log_probs": logps},
        )


@pytest.mark.parametrize(
    ("value", "expected"), [("false", "none"), ("FALSE", "none"), ("True", "group"), (False, "none")]
)
def test_norm_adv_by_std_strings_are_parsed_strictly(value, expected):
    cfg = omegaconf.OmegaConf.create({"adv_estimator": "dipo", "norm_adv_by_std_in_grpo": value})
    assert parse_dipo_options(cfg).core.scale_rewards == expected  # old code: bool("false") is True -> "group"


@pytest.mark.parametrize("value", ["no", "0", 1, None, "yes"])
def test_norm_adv_by_std_other_values_are_errors(value):
    cfg = omegaconf.OmegaConf.create({"adv_estimator": "dipo", "norm_adv_by_std_in_grpo": value})
    with pytest.raises(ValueError, match=r"algorithm\.norm_adv_by_std_in_grpo must be true or false"):
        parse_dipo_options(cfg)


def test_threshold_rule_option_reaches_the_core():
    assert parse_dipo_options(algo_config({"threshold_rule": "balanced"})).core.threshold_rule == "balanced"
    assert parse_dipo_options(algo_config()).core.threshold_rule == "error"
    with pytest.raises(ValueError, match="threshold_rule"):
        parse_dipo_options(algo_config({"threshold_rule": "auc"}))
    batch = make_batch(seed=5)
    adv, _ = run_estimator(batch, algo_config({"threshold_rule": "balanced"}))
    state = get_estimator_state(algo_config({"threshold_rule": "balanced"}))
    assert (
        state.core.config.threshold_rule == "balanced" and state.steps == 1 and adv.shape == batch.response_mask.shape
    )
