"""The ``dipo_*`` verl trainer modes: config guards, metrics, PPL queue in verl checkpoints (real verl, CPU).

verl's trainer needs Ray workers and GPUs to train; here the real ``DiPOTrainerSync`` is constructed from the real
recipe config, and verl's own ``_save_checkpoint`` / ``_load_checkpoint`` run with stand-ins for the worker group and
the dataloader (the only parts that need GPUs).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
hydra = pytest.importorskip("hydra")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import ray_trainer  # noqa: E402
from verl.trainer.ppo.v1 import PPOTrainerSync, get_trainer_cls  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer  # noqa: E402
from verl.trainer.ppo.v1.trainer_base import PPOTrainer  # noqa: E402

from dipo.integrations.verl import (  # noqa: E402
    DIPO_STATE_NAME,
    DiPOTrainerColocateAsync,
    DiPOTrainerSeparateAsync,
    DiPOTrainerSync,
    get_estimator_state,
    reset_estimator_states,
)
from verl_helpers import core_reference, make_batch, verl_core_config  # noqa: E402

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "verl" / "config"


@pytest.fixture(scope="module")
def recipe_config():
    with hydra.initialize_config_dir(config_dir=str(RECIPE_DIR), version_base=None):
        cfg = hydra.compose(config_name="dipo_trainer", overrides=["actor_rollout_ref.rollout.name=vllm"])
    return cfg


@pytest.fixture(autouse=True)
def _fresh_states():
    reset_estimator_states()
    yield
    reset_estimator_states()


def config_with(base, **dotted):
    cfg = OmegaConf.create(OmegaConf.to_container(base, resolve=False))
    for key, value in dotted.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, force_add=True)
    return cfg


class FakeWorkerGroup:
    """Stands in for the actor worker group (Ray/GPU): records checkpoint calls."""

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.loaded: list[str] = []

    def save_checkpoint(self, local_path, remote_path, global_step, max_ckpt_to_keep=None):
        os.makedirs(local_path, exist_ok=True)
        self.saved.append(local_path)

    def load_checkpoint(self, local_path, del_local_after_load=False):
        self.loaded.append(local_path)


class FakeDataloader:
    def __init__(self) -> None:
        self.state = {"epoch": 0, "seen": 0}

    def state_dict(self):
        return dict(self.state)

    def load_state_dict(self, state):
        self.state = dict(state)


def make_trainer(cfg) -> DiPOTrainerSync:
    trainer = DiPOTrainerSync(cfg)
    trainer.actor_rollout_wg = FakeWorkerGroup()
    trainer.train_dataloader = FakeDataloader()
    return trainer


def test_trainer_modes_are_registered():
    assert get_trainer_cls("dipo_sync") is DiPOTrainerSync and issubclass(DiPOTrainerSync, PPOTrainerSync)
    assert get_trainer_cls("dipo_colocate_async") is DiPOTrainerColocateAsync
    assert get_trainer_cls("dipo_separate_async") is DiPOTrainerSeparateAsync


def test_recipe_builds_a_sync_trainer(recipe_config):
    trainer = DiPOTrainerSync(recipe_config)
    assert trainer.trainer_mode == "sync"  # verl's base class branches on "sync"
    assert type(trainer.replay_buffer) is ReplayBuffer
    with pytest.raises(ValueError, match="runs verl's 'sync' mode"):
        trainer.trainer_mode = "colocate_async"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            {"algorithm__filter_groups__enable": True, "actor_rollout_ref__rollout__calculate_log_probs": False},
            "calculate_log_probs=True",
        ),
        ({"algorithm__adv_estimator": "grpo"}, "set algorithm.adv_estimator=dipo"),
        ({"actor_rollout_ref__rollout__n": 1}, "rollout.n=1"),
        ({"algorithm__dipo__alhpa": 0.1}, "unknown DiPO option"),
    ],
)
def test_trainer_refuses_bad_configs_before_starting(recipe_config, override, message):
    with pytest.raises(ValueError, match=message):
        DiPOTrainerSync(config_with(recipe_config, **override))


def data_proto(batch) -> DataProto:
    return DataProto.from_dict(
        tensors={
            "token_level_rewards": batch.token_level_rewards,
            "response_mask": batch.response_mask,
            "old_log_probs": batch.old_log_probs,
        },
        non_tensors={"uid": batch.uids.copy()},
    )


def test_compute_advantage_logs_dipo_metrics(recipe_config, monkeypatch):
    """verl's v1 ``_compute_advantage`` reads the batch from TransferQueue (Ray); the stand-in skips only that."""
    batch = make_batch(seed=1)
    config = config_with(recipe_config, algorithm__dipo__reward_mode="binary", algorithm__dipo__correct_threshold=0.5)

    def fetch_and_compute(self, kv_batch, metrics):
        self.last_data = ray_trainer.compute_advantage(
            data_proto(batch), self.config.algorithm.adv_estimator, config=self.config.algorithm
        )
        metrics["verl/own_metric"] = 1.0
        return kv_batch

    monkeypatch.setattr(PPOTrainer, "_compute_advantage", fetch_and_compute)
    trainer = make_trainer(config)
    metrics: dict = {}
    assert trainer._compute_advantage("kv-batch", metrics) == "kv-batch"
    ref = core_reference(batch, verl_core_config(alpha=0.1))
    assert metrics["verl/own_metric"] == 1.0
    for key, value in ref.metrics().items():
        np.testing.assert_allclose(metrics[f"dipo/{key}"], value, rtol=1e-6, equal_nan=True)
    assert metrics["dipo/realloc_hard"] >= 1 and metrics["dipo/realloc_easy"] >= 1
    torch.testing.assert_close(
        trainer.last_data.batch["advantages"], ref.advantages.float().unsqueeze(-1) * batch.response_mask
    )
    second: dict = {}
    trainer._compute_advantage("kv-batch", second)
    assert second["dipo/queue_size"] == 2 * batch.rewards.numel()


def checkpoint_config(recipe_config, tmp_path):
    """The recipe with binary rewards and checkpoints under ``tmp_path/ckpt``."""
    return config_with(
        recipe_config,
        trainer__default_local_dir=str(tmp_path / "ckpt"),
        algorithm__dipo__reward_mode="binary",
        algorithm__dipo__correct_threshold=0.5,
    )


def fill_queue(config, seeds=(0, 1)):
    state = get_estimator_state(config.algorithm)
    for seed in seeds:
        batch = make_batch(seed=seed)
        ray_trainer.compute_advantage(data_proto(batch), "dipo", config=config.algorithm)
    return state


def test_queue_is_saved_and_restored_with_verl_checkpoints(recipe_config, tmp_path):
    config = checkpoint_config(recipe_config, tmp_path)
    trainer = make_trainer(config)
    state = fill_queue(config)
    trainer.global_steps = 2
    trainer._save_checkpoint()  # verl's own _save_checkpoint (+ dipo_state.pt)
    step_dir = tmp_path / "ckpt" / "global_step_2"
    assert (step_dir / DIPO_STATE_NAME).exists() and (step_dir / "data.pt").exists()
    assert (tmp_path / "ckpt" / "latest_checkpointed_iteration.txt").read_text() == "2"
    saved_s, saved_c = (t.clone() for t in state.core.queue.values())

    reset_estimator_states()  # a new driver process after a restart
    resumed = make_trainer(config)
    assert len(resumed.dipo_state.core.queue) == 0
    resumed._load_checkpoint()  # verl's own _load_checkpoint (resume_mode=auto) + the PPL queue
    assert resumed.global_steps == 2 and resumed.actor_rollout_wg.loaded == [str(step_dir / "actor")]
    s, c = resumed.dipo_state.core.queue.values()
    assert torch.equal(s, saved_s) and torch.equal(c, saved_c)
    assert resumed.dipo_state.core.queue.num_batches == 2

    # The restored queue drives the next step exactly as the uninterrupted run would.
    batch = make_batch(seed=5)
    uninterrupted = core_reference(batch, state.core.config, state.core)
    after_resume = ray_trainer.compute_advantage(data_proto(batch), "dipo", config=config.algorithm)
    torch.testing.assert_close(
        after_resume.batch["advantages"], uninterrupted.advantages.float().unsqueeze(-1) * batch.response_mask
    )


def test_resume_path_and_missing_state(recipe_config, tmp_path, caplog):
    config = checkpoint_config(recipe_config, tmp_path)
    trainer = make_trainer(config)
    state = fill_queue(config, seeds=(3,))
    trainer.global_steps = 7
    trainer._save_checkpoint()
    expected = state.core.queue.values()[0].clone()

    reset_estimator_states()
    resume_cfg = config_with(
        config, trainer__resume_mode="resume_path", trainer__resume_from_path=str(tmp_path / "ckpt" / "global_step_7")
    )
    resumed = make_trainer(resume_cfg)
    resumed._load_checkpoint()
    assert torch.equal(resumed.dipo_state.core.queue.values()[0], expected)

    (tmp_path / "ckpt" / "global_step_7" / DIPO_STATE_NAME).unlink()
    reset_estimator_states()
    cold = make_trainer(resume_cfg)
    with caplog.at_level(logging.WARNING, logger="dipo.integrations.verl.trainer"):
        cold._load_checkpoint()
    assert len(cold.dipo_state.core.queue) == 0
    assert any("starts empty" in r.getMessage() for r in caplog.records)


def test_async_mode_keeps_verls_async_behaviour(recipe_config):
    from verl.trainer.ppo.v1.replay_buffer import ReplayBufferAsync

    cfg = config_with(recipe_config, trainer__v1__trainer_mode="dipo_colocate_async")
    trainer = get_trainer_cls(cfg.trainer.v1.trainer_mode)(cfg)
    assert isinstance(trainer, DiPOTrainerColocateAsync) and trainer.trainer_mode == "colocate_async"
    assert isinstance(trainer.replay_buffer, ReplayBufferAsync)
