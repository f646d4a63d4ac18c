"""The batch shim around verl's ``compute_advantage`` on real ``DataProto`` batches (real verl, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
omegaconf = pytest.importorskip("omegaconf")

from verl import DataProto  # noqa: E402
from verl.trainer.ppo import ray_trainer  # noqa: E402
from verl.trainer.ppo.v1 import utils as v1_utils  # noqa: E402

from dipo.integrations.verl import (  # noqa: E402
    compute_dipo_outcome_advantage,
    install_shim,
    reset_estimator_states,
    shim_status,
    verl_passes_batch,
)
from dipo.integrations.verl.shim import uninstall_shim  # noqa: E402
from verl_helpers import make_batch  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_states():
    reset_estimator_states()
    yield
    reset_estimator_states()


def algo_config(**dipo):
    return omegaconf.OmegaConf.create(
        {"adv_estimator": "dipo", "norm_adv_by_std_in_grpo": True, "filter_groups": {"enable": False}, "dipo": dipo}
    )


def to_data_proto(batch) -> DataProto:
    return DataProto.from_dict(
        tensors={
            "token_level_rewards": batch.token_level_rewards.clone(),
            "response_mask": batch.response_mask.clone(),
            "old_log_probs": batch.old_log_probs.clone(),
        },
        non_tensors={"uid": batch.uids.copy()},
    )


def direct(batch, config):
    reset_estimator_states()
    adv, _ = compute_dipo_outcome_advantage(
        batch.token_level_rewards, batch.response_mask, batch.uids, config, {"old_log_probs": batch.old_log_probs}
    )
    reset_estimator_states()
    return adv


def shuffled_batch(seed: int = 0):
    batch = make_batch(seed=seed)
    return batch.permuted(torch.randperm(batch.rewards.numel(), generator=torch.Generator().manual_seed(seed + 100)))


def test_gate_matches_what_verl_does():
    passes = verl_passes_batch()
    if verl.__version__ == "0.9.1":  # checked by reading 0.9.1's compute_advantage: only GDPO gets the batch
        assert passes is False
    assert shim_status()["installed"] is (not passes)
    assert shim_status()["verl_passes_batch"] is passes


def test_probe_detects_a_verl_that_forwards_the_batch():
    def forwards(data, adv_estimator, config=None, **kwargs):
        from verl.trainer.ppo import core_algos

        fn = core_algos.get_adv_estimator_fn(adv_estimator)
        return fn(data.batch["token_level_rewards"], data.batch["response_mask"], config=config, batch=data.batch)

    def does_not(data, adv_estimator, config=None, **kwargs):
        from verl.trainer.ppo import core_algos

        fn = core_algos.get_adv_estimator_fn(adv_estimator)
        return fn(data.batch["token_level_rewards"], data.batch["response_mask"], config=config)

    assert verl_passes_batch(forwards) is True
    assert verl_passes_batch(does_not) is False
    from verl.trainer.ppo import core_algos

    assert not [name for name in core_algos.ADV_ESTIMATOR_REGISTRY if name.startswith("_dipo_probe")]


def test_compute_advantage_passes_batch_to_dipo():
    batch = shuffled_batch(1)
    config = algo_config(alpha=0.1)
    data = ray_trainer.compute_advantage(to_data_proto(batch), "dipo", norm_adv_by_std_in_grpo=True, config=config)
    torch.testing.assert_close(data.batch["advantages"], direct(batch, config))
    torch.testing.assert_close(data.batch["returns"], data.batch["advantages"])


def test_v1_multi_trajectory_path_is_patched_too():
    batch = shuffled_batch(2)
    config = algo_config(alpha=0.1)
    keys = [f"{uid}_0_0" for uid in batch.uids]
    data = v1_utils.compute_advantage_for_multi_trajectories(
        to_data_proto(batch), batch_keys=keys, adv_estimator="dipo", num_repeat=8, config=config
    )
    torch.testing.assert_close(data.batch["advantages"], direct(batch, config))


def test_without_shim_verl_091_starves_the_estimator():
    if shim_status()["verl_passes_batch"]:
        pytest.skip("this verl forwards the batch itself; the shim is not needed")
    batch = shuffled_batch(3)
    uninstall_shim()
    try:
        with pytest.raises(ValueError, match="needs per-token log-probs"):
            ray_trainer.compute_advantage(to_data_proto(batch), "dipo", config=algo_config())
    finally:
        assert install_shim() is True
    assert getattr(ray_trainer.compute_advantage, "__dipo_shim__", False)
    assert getattr(v1_utils.compute_advantage, "__dipo_shim__", False)


def test_other_estimators_are_untouched():
    batch = shuffled_batch(4)
    config = omegaconf.OmegaConf.create({"norm_adv_by_std_in_grpo": True})
    shimmed = ray_trainer.compute_advantage(to_data_proto(batch), "grpo", config=config)
    original = ray_trainer.compute_advantage.__wrapped__(to_data_proto(batch), "grpo", config=config)
    assert torch.equal(shimmed.batch["advantages"], original.batch["advantages"])


def test_filter_groups_guard_through_compute_advantage():
    batch = shuffled_batch(5)
    config = omegaconf.OmegaConf.create(
        {"adv_estimator": "dipo", "norm_adv_by_std_in_grpo": True, "filter_groups": {"enable": True, "metric": "acc"}}
    )
    with pytest.raises(ValueError, match="filter_groups"):
        ray_trainer.compute_advantage(to_data_proto(batch), "dipo", config=config)


def test_dipo_with_verl_default_algorithm_yaml():
    """The ``algorithm`` block of verl's own ppo_trainer.yaml (plus adv_estimator=dipo) is a valid DiPO config."""
    import os

    cfg_path = os.path.join(os.path.dirname(verl.__file__), "trainer", "config", "_generated_ppo_trainer.yaml")
    algorithm = omegaconf.OmegaConf.load(cfg_path).algorithm
    algorithm.adv_estimator = "dipo"
    batch = shuffled_batch(6)
    data = ray_trainer.compute_advantage(to_data_proto(batch), algorithm.adv_estimator, config=algorithm)
    assert np.isfinite(data.batch["advantages"].numpy()).all()
    torch.testing.assert_close(data.batch["advantages"], direct(batch, algorithm))


def _imported_modules(path) -> set[str]:
    """Every module a source file imports, at top level or inside functions (relative imports resolved)."""
    import ast

    package = "dipo.integrations.verl"
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_estimator_and_shim_do_not_import_each_other():
    """The shared names live in the leaf module ``context.py``; neither module imports the other (no cycle)."""
    from pathlib import Path

    import dipo.integrations.verl as plugin

    folder = Path(plugin.__file__).parent
    estimator, shim, context = (_imported_modules(folder / f"{name}.py") for name in ("estimator", "shim", "context"))
    assert not {m for m in estimator if m.startswith("dipo.integrations.verl.shim")}
    assert not {m for m in shim if m.startswith("dipo.integrations.verl.estimator")}
    assert not {m for m in context if m.startswith("dipo")}, "context.py must stay a leaf module"
    assert "dipo.integrations.verl.context" in estimator and "dipo.integrations.verl.context" in shim


def test_shim_passes_reward_extras_and_attention_mask_to_the_verifier():
    """Legacy-trainer batches carry ``acc`` (reward_extra_info) and ``attention_mask``: both reach the estimator."""
    from dipo.integrations.verl import get_estimator_state
    from verl_helpers import dapo_overlong_penalty, full_config

    batch = shuffled_batch(7)
    lengths = batch.response_mask.sum(-1)
    max_resp_len, buffer_len = batch.response_mask.shape[1], 4
    penalty = dapo_overlong_penalty(lengths, max_resp_len, buffer_len)
    signed = batch.rewards * 2 - 1
    token_rewards = torch.zeros_like(batch.token_level_rewards)
    token_rewards[torch.arange(len(lengths)), lengths.long() - 1] = signed + penalty
    data = to_data_proto(batch)
    data.batch["token_level_rewards"] = token_rewards
    prompt = torch.ones(len(lengths), 3)
    data.batch["attention_mask"] = torch.cat([prompt, batch.response_mask], dim=1)
    data.non_tensor_batch["acc"] = np.array([bool(r) for r in batch.rewards], dtype=object)

    graded = {"reward_mode": "graded", "correct_threshold": 0.0}
    config = full_config(graded, overlong=(max_resp_len, buffer_len, 1.0)).algorithm
    ray_trainer.compute_advantage(data, "dipo", config=config)
    verifier = get_estimator_state(config).last_verifier
    assert verifier.source == "score - overlong penalty" and verifier.frac_penalised > 0
    torch.testing.assert_close(verifier.rewards, signed.double())

    acc_config = full_config({"verifier_key": "acc"}).algorithm
    ray_trainer.compute_advantage(data, "dipo", config=acc_config)
    torch.testing.assert_close(get_estimator_state(acc_config).last_verifier.rewards, batch.rewards.double())
