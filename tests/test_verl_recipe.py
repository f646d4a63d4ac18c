"""``recipes/verl``: the Hydra config composes on verl's ``ppo_trainer`` and the run script's overrides are valid."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
hydra = pytest.importorskip("hydra")

from verl.trainer.ppo.utils import need_critic, need_reference_policy  # noqa: E402
from verl.utils.config import validate_config  # noqa: E402

from dipo.integrations.verl import parse_dipo_options  # noqa: E402
from dipo.integrations.verl.options import OverlongPenalty  # noqa: E402
from dipo.integrations.verl.trainer import check_dipo_trainer_config  # noqa: E402

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "verl"


def compose(overrides: list[str]):
    with hydra.initialize_config_dir(config_dir=str(RECIPES / "config"), version_base=None):
        return hydra.compose(config_name="dipo_trainer", overrides=overrides)


def script_overrides(**extra_env: str) -> list[str]:
    env = {**os.environ, "DRY_RUN": "1", "HOME": "/home/user", **extra_env}
    out = subprocess.run(
        ["bash", str(RECIPES / "run_dipo_qwen3_8b.sh")], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.splitlines()


def test_recipe_config_has_dapo_settings_and_dipo_options():
    cfg = compose(["actor_rollout_ref.rollout.name=vllm"])
    actor = cfg.actor_rollout_ref.actor
    assert (actor.clip_ratio_low, actor.clip_ratio_high, actor.loss_agg_mode) == (0.2, 0.28, "token-mean")
    assert cfg.algorithm.adv_estimator == "dipo" and cfg.algorithm.filter_groups.enable is False
    assert cfg.reward.reward_manager.name == "dapo" and cfg.reward.reward_kwargs.overlong_buffer_cfg.enable
    assert cfg.trainer.v1.trainer_mode == "dipo_sync"
    opts = parse_dipo_options(cfg.algorithm)
    assert (opts.core.alpha, opts.core.reward_mode, opts.core.correct_threshold) == (0.1, "graded", 0.0)
    assert (opts.core.std_eps, opts.core.scale_rewards) == (1e-6, "group")
    # The verifier reward takes the dapo manager's overlong penalty out; loss_agg_mode comes from the actor config.
    assert (opts.verifier_key, opts.loss_agg_mode) == ("auto", "token-mean")
    assert opts.overlong == OverlongPenalty(max_resp_len=20480, buffer_len=4096, penalty_factor=1.0)
    check_dipo_trainer_config(cfg)


def test_recipe_separate_normalizer_follows_the_actor_loss_agg_mode():
    base = ["actor_rollout_ref.rollout.name=vllm", "algorithm.dipo.realloc_normalizer=separate"]
    assert parse_dipo_options(compose(base).algorithm).count_tokens
    seq = compose([*base, "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean"])
    assert parse_dipo_options(seq.algorithm).loss_agg_mode == "seq-mean-token-mean"
    assert not parse_dipo_options(seq.algorithm).count_tokens


def test_run_script_overrides_compose_and_validate():
    overrides = script_overrides()
    assert "algorithm.adv_estimator=dipo" in overrides and "algorithm.filter_groups.enable=false" in overrides
    cfg = compose(overrides)  # Hydra rejects any key that does not exist in verl's config
    assert cfg.trainer.nnodes == 4 and cfg.actor_rollout_ref.rollout.n == 16
    assert cfg.reward.reward_kwargs.max_resp_len == 20480
    assert parse_dipo_options(cfg.algorithm).overlong == OverlongPenalty(20480, 4096, 1.0)
    check_dipo_trainer_config(cfg)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_run_script_with_dynamic_sampling_validates():
    overrides = script_overrides(DYNAMIC_SAMPLING="true")
    assert "algorithm.filter_groups.enable=true" in overrides and "algorithm.filter_groups.metric=acc" in overrides
    cfg = compose(overrides)
    check_dipo_trainer_config(cfg)
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))


def test_hydra_cli_turns_dipo_aware_dynamic_sampling_on():
    cfg = compose(["actor_rollout_ref.rollout.name=vllm", "algorithm.filter_groups.enable=true"])
    check_dipo_trainer_config(cfg)  # dipo_sync + rollout log-probs + verl's default metric ("reward"): accepted
    validate_config(config=cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg))
    cfg = compose(
        ["actor_rollout_ref.rollout.name=vllm", "algorithm.filter_groups.enable=true", "trainer.v1.trainer_mode=sync"]
    )
    with pytest.raises(ValueError, match="filter_groups"):  # verl's own filter would drop reallocated groups
        check_dipo_trainer_config(cfg)
