"""DiPO-aware dynamic sampling in verl's v1 replay buffer (issue 18; docs/verl.md "Dynamic sampling with DiPO").

Real verl 0.9.1 classes on CPU: the plugin's trainer built from the recipe config, verl's own ``ReplayBuffer`` /
``ReplayBufferAsync`` and its ``sample`` loop (eviction, refill credit, surplus), verl's ``compute_advantage`` with the
``dipo`` estimator. TransferQueue (a Ray service) is replaced by an in-memory store with the three calls the buffer
makes (``kv_list``, ``kv_batch_get``, ``kv_clear``); generation by a refill function that finishes groups at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
hydra = pytest.importorskip("hydra")

from omegaconf import OmegaConf  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo import ray_trainer  # noqa: E402
from verl.trainer.ppo.v1 import replay_buffer as verl_replay_buffer  # noqa: E402
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync  # noqa: E402

from dipo.core import DiPO, DiPOCoreConfig  # noqa: E402
from dipo.integrations.verl import (  # noqa: E402
    DIPO_TRAINERS,
    DiPOTrainerColocateAsync,
    DiPOTrainerSync,
    get_estimator_state,
    parse_dipo_options,
    reset_estimator_states,
)
from dipo.integrations.verl.dynamic_sampling import (  # noqa: E402
    DS_METRICS,
    DiPOReplayBuffer,
    DiPOReplayBufferAsync,
    confirmed_reallocations,
    make_dipo_aware,
    predicted_reallocation,
    reallocation_threshold,
)
from dipo.integrations.verl.options import DIPO_TRAINER_MODES  # noqa: E402

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes" / "verl" / "config"
G = 4
LOW, HIGH = 0.25, 1.5  # per-token NLL of confident / unsure responses; τ* of the seeded queue lies between


@pytest.fixture(scope="module")
def recipe_config():
    with hydra.initialize_config_dir(config_dir=str(RECIPE_DIR), version_base=None):
        return hydra.compose(config_name="dipo_trainer", overrides=["actor_rollout_ref.rollout.name=vllm"])


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


def ds_config(recipe_config, **dotted):
    return config_with(recipe_config, algorithm__filter_groups__enable=True, **dotted)


# ---------------------------------------------------------------------------------------------------------- options


def test_trainer_modes_match_the_option_guard():
    assert set(DIPO_TRAINERS) == set(DIPO_TRAINER_MODES)


@pytest.mark.parametrize(("trainer_cls", "buffer_cls"), [(DiPOTrainerSync, DiPOReplayBuffer)])
def test_filter_groups_on_builds_the_dipo_aware_buffer(recipe_config, trainer_cls, buffer_cls):
    cfg = ds_config(recipe_config, algorithm__filter_groups__metric="acc")
    trainer = trainer_cls(cfg)
    assert type(trainer.replay_buffer) is buffer_cls
    assert trainer.replay_buffer.filter_groups_metric == "acc"  # verl's own resolution, untouched
    assert trainer.replay_buffer.gen_batch_size == 1  # verl's exact-refill sizing, untouched
    get_estimator_state(cfg.algorithm)  # the estimator accepts the run too


def test_async_mode_gets_the_async_dipo_buffer(recipe_config):
    cfg = ds_config(recipe_config, trainer__v1__trainer_mode="dipo_colocate_async")
    trainer = DiPOTrainerColocateAsync(cfg)
    assert type(trainer.replay_buffer) is DiPOReplayBufferAsync


def test_filter_groups_off_keeps_verls_buffer(recipe_config):
    assert type(DiPOTrainerSync(recipe_config).replay_buffer) is ReplayBuffer


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"trainer__v1__trainer_mode": "sync"}, r"unless the DiPO-aware filter runs.*trainer.v1.trainer_mode=sync,"),
        ({"trainer__use_v1": False}, r"legacy trainer \(trainer.use_v1=False: verl 0.9.1.s has no dynamic sampling"),
        ({"trainer__v1__sampler__custom_sampler__path": "x.py"}, "custom_sampler.path='x.py'"),
    ],
)
def test_estimator_refuses_filter_groups_without_the_dipo_filter(recipe_config, override, message):
    cfg = ds_config(recipe_config, **override)
    with pytest.raises(ValueError, match=message):
        parse_dipo_options(cfg.algorithm)


def test_standalone_algorithm_config_with_filter_groups_is_refused():
    algorithm = OmegaConf.create({"adv_estimator": "dipo", "filter_groups": {"enable": True, "metric": "acc"}})
    with pytest.raises(ValueError, match="cannot see the run's trainer config"):
        parse_dipo_options(algorithm)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"actor_rollout_ref__rollout__calculate_log_probs": False}, "calculate_log_probs=True"),
        ({"algorithm__filter_groups__metric": None}, "filter_groups.metric must be set"),
        ({"trainer__v1__sampler__custom_sampler__path": "x.py"}, "custom_sampler"),
    ],
)
def test_trainer_refuses_dynamic_sampling_it_cannot_run(recipe_config, override, message):
    with pytest.raises(ValueError, match=message):
        DiPOTrainerSync(ds_config(recipe_config, **override))


# ------------------------------------------------------------------------------------------- the decision, by hand


def same_queue(a: dict, b: dict) -> bool:
    return len(a["log_ppl"]) == len(b["log_ppl"]) and all(
        torch.equal(x, y) for x, y in zip(a["log_ppl"] + a["correct"], b["log_ppl"] + b["correct"], strict=True)
    )


def seeded_core(config: DiPOCoreConfig) -> DiPO:
    """A DiPO whose queue holds 40 right answers at log-PPL ~0.3 and 40 wrong ones at ~1.5: τ* = (0.39 + 1.4) / 2."""
    core = DiPO(config)
    right = 0.2 + 0.005 * torch.arange(40, dtype=torch.float64)
    wrong = 1.4 + 0.005 * torch.arange(40, dtype=torch.float64)
    core.queue.push(torch.cat([right, wrong]), torch.cat([torch.ones(40), torch.zeros(40)]).bool())
    return core


def test_threshold_is_read_without_touching_the_queue():
    core = seeded_core(DiPOCoreConfig())
    before = core.queue.state_dict()
    assert reallocation_threshold(core) == pytest.approx((0.395 + 1.4) / 2)
    assert same_queue(core.queue.state_dict(), before)
    assert math.isnan(reallocation_threshold(DiPO(DiPOCoreConfig())))  # empty queue: no BRR, plain DAPO


def test_threshold_is_nan_when_the_judgment_fails():
    core = DiPO(DiPOCoreConfig())
    core.queue.push(torch.tensor([0.1, 0.2, 1.4, 1.5], dtype=torch.float64), torch.tensor([True, False, True, False]))
    assert math.isnan(reallocation_threshold(core))
    no_judgment = DiPO(DiPOCoreConfig(judgment=False))
    no_judgment.queue.push(*core.queue.values())
    assert not math.isnan(reallocation_threshold(no_judgment))


def test_predicted_reallocation_hand_cases():
    """Four groups of 2, τ* = 0.9: hard low (reallocated), hard high (no), easy with a high-PPL answer (reallocated),
    easy low (no)."""
    rewards = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    log_ppl = torch.tensor([0.2, 0.3, 1.5, 1.6, 0.2, 1.7, 0.2, 0.3], dtype=torch.float64)
    got = predicted_reallocation(DiPOCoreConfig(), rewards, log_ppl, 2, 0.9)
    assert got.tolist() == [True, False, True, False]
    hard_only = DiPOCoreConfig(reallocate_easy=False)
    assert predicted_reallocation(hard_only, rewards, log_ppl, 2, 0.9).tolist() == [True, False, False, False]
    assert predicted_reallocation(DiPOCoreConfig(), rewards, log_ppl, 2, math.nan).tolist() == [False] * 4


# ------------------------------------------------------------------------ verl's replay buffer with a stand-in store


class FakeTransferQueue:
    """The three TransferQueue calls verl's ReplayBuffer makes, over an in-memory ``{partition: {key: ...}}``."""

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, dict]] = {"train": {}}
        self.fields: dict[str, dict[str, dict]] = {"train": {}}
        self.gets: list[list[str]] = []

    def kv_list(self, partition_id=None):
        return {pid: dict(tags) for pid, tags in self.tags.items()}

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        self.gets.append(list(select_fields))
        rows = [self.fields[partition_id][key] for key in keys]
        return {field: [row[field] for row in rows] for field in select_fields}  # KeyError if a field is absent

    def kv_clear(self, keys, partition_id):
        for key in [keys] if isinstance(keys, str) else keys:
            self.tags[partition_id].pop(key, None)
            self.fields[partition_id].pop(key, None)

    def add_group(self, uid: str, rewards: list[float], nll: list[float], step: int = 1, logprobs: bool = True):
        """A finished prompt group: its prompt tag plus G trajectories ``{uid}_{session}_0``."""
        self.tags["train"][uid] = {"is_prompt": True, "status": "finished", "global_steps": step}
        for session, (reward, value) in enumerate(zip(rewards, nll, strict=True)):
            length = 3 + session
            scores = torch.zeros(length)
            scores[-1] = reward
            row = {
                "rm_scores": scores,
                "response_mask": torch.ones(length, dtype=torch.int64),
                "extra_fields": {"reward_extra_info": {"acc": float(reward > 0)}},
            }
            if logprobs:
                row["rollout_log_probs"] = torch.full((length,), -value)
            key = f"{uid}_{session}_0"
            self.tags["train"][key] = {"status": "success", "global_steps": step}
            self.fields["train"][key] = row


@pytest.fixture
def fake_tq(monkeypatch):
    store = FakeTransferQueue()
    monkeypatch.setattr(verl_replay_buffer, "tq", store)
    return store


MIXED = ([1.0, -1.0, 1.0, -1.0], [LOW, HIGH, LOW, HIGH])
HARD_LOW = ([-1.0] * G, [LOW, LOW + 0.05, LOW, LOW])  # over-confident wrong answers: BRR rewards the max-PPL one
HARD_HIGH = ([-1.0] * G, [HIGH] * G)
EASY_LOW = ([1.0] * G, [LOW] * G)


def seed_queue(algorithm_config) -> DiPO:
    state = get_estimator_state(algorithm_config)
    seeded = seeded_core(state.core.config)
    state.core.queue.load_state_dict(seeded.queue.state_dict())
    return state.core


def sync_buffer(cls, refill, metric: str = "reward"):
    return cls(
        trainer_mode="sync",
        trainer_config={},
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs={},
        poll_interval=0.0,
        refill_fn=refill,
        filter_groups_metric=metric,
        train_batch_size=4,
        gen_batch_size=1,
        max_inflight_gen_batches=1,
    )


def fill_step(store: FakeTransferQueue):
    store.add_group("a", *MIXED)
    store.add_group("b", *HARD_LOW)
    store.add_group("c", *HARD_HIGH)
    store.add_group("d", *EASY_LOW)


def fresh_mixed_refill(store: FakeTransferQueue, log: list[int]):
    def refill(num_prompts: int) -> int:
        log.append(num_prompts)
        for i in range(num_prompts):
            store.add_group(f"r{len(log)}x{i}", *MIXED, step=2)
        return num_prompts

    return refill


@pytest.mark.parametrize("metric", ["reward", "acc"])
def test_sync_sample_keeps_the_reallocated_group_and_refills(recipe_config, fake_tq, metric):
    cfg = ds_config(recipe_config, algorithm__filter_groups__metric=metric)
    core = seed_queue(cfg.algorithm)
    queue_before = core.queue.state_dict()
    refills: list[int] = []
    buffer = make_dipo_aware(sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, refills), metric), cfg.algorithm)
    fill_step(fake_tq)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=4)
    uids = {key.split("_")[0] for key in batch.keys}
    assert {"a", "b"} <= uids and not uids & {"c", "d"} and len(uids) == 4
    assert refills == [4]  # verl's sync credit: 2 per evicted group
    assert metrics["training/filter_groups/evicted_samples"] == 2
    assert {k: metrics[k] for k in DS_METRICS} == {
        "dipo/ds_rounds": 2.0,
        "dipo/ds_kept_groups": 4.0,
        "dipo/ds_dropped_groups": 2.0,
        "dipo/ds_kept_reallocated": 1.0,
    }
    assert buffer.dipo_last_kept_reallocated == {"b"}
    assert same_queue(core.queue.state_dict(), queue_before)  # the filter never pushes: one DiPO step per batch


def test_verls_own_filter_drops_the_group_dipo_keeps(recipe_config, fake_tq):
    """Regression: verl's plain filter (what ``filter_groups`` did with DiPO before) evicts the reallocated group."""
    refills: list[int] = []
    buffer = sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, refills))
    fill_step(fake_tq)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=4)
    uids = {key.split("_")[0] for key in batch.keys}
    assert "b" not in uids and metrics["training/filter_groups/evicted_samples"] == 3


def test_empty_queue_is_plain_dapo_and_reads_no_log_probs(recipe_config, fake_tq):
    cfg = ds_config(recipe_config)
    refills: list[int] = []
    buffer = make_dipo_aware(sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, refills)), cfg.algorithm)
    fill_step(fake_tq)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=4)
    assert "b" not in {key.split("_")[0] for key in batch.keys}
    assert metrics["dipo/ds_kept_reallocated"] == 0.0 and metrics["dipo/ds_dropped_groups"] == 3.0
    assert all("rollout_log_probs" not in fields for fields in fake_tq.gets)


def test_missing_rollout_log_probs_is_a_clear_error(recipe_config, fake_tq):
    cfg = ds_config(recipe_config)
    seed_queue(cfg.algorithm)
    buffer = make_dipo_aware(sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, [])), cfg.algorithm)
    fake_tq.add_group("b", *HARD_LOW, logprobs=False)
    buffer._sync_metadata_from_transfer_queue()
    with pytest.raises(RuntimeError, match="calculate_log_probs=True"):
        buffer._dapo_filtered_keys("train")


def async_buffer(recipe_config, store: FakeTransferQueue, refills: list[int]):
    cfg = ds_config(recipe_config, trainer__v1__trainer_mode="dipo_colocate_async")
    seed_queue(cfg.algorithm)
    buffer = ReplayBufferAsync(
        trainer_mode="colocate_async",
        trainer_config={},
        max_off_policy_threshold=None,
        max_off_policy_strategy="drop",
        sampler_kwargs={},
        poll_interval=0.0,
        refill_fn=fresh_mixed_refill(store, refills),
        filter_groups_metric="reward",
    )
    return make_dipo_aware(buffer, cfg.algorithm)


def test_async_buffer_keeps_the_reallocated_group(recipe_config, fake_tq):
    refills: list[int] = []
    buffer = async_buffer(recipe_config, fake_tq, refills)
    fill_step(fake_tq)
    batch, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=4)
    assert refills == [2]  # async: one fresh prompt per evicted group
    assert "b" in {key.split("_")[0] for key in batch.keys}
    assert metrics["dipo/ds_kept_reallocated"] == 1.0 and metrics["dipo/ds_rounds"] == 1.5
    assert metrics["dipo/ds_dropped_groups"] == 2.0


def test_metrics_count_evictions_made_outside_sample(recipe_config, fake_tq):
    """``dipo_separate_async`` evicts and refills in ``prepare_step`` (``wait_for_sampleable``), before ``sample``:
    the ds metrics of the next batch still count them, and the counters restart after each batch."""
    refills: list[int] = []
    buffer = async_buffer(recipe_config, fake_tq, refills)
    fill_step(fake_tq)
    buffer.wait_for_sampleable(global_steps=1, partition_id="train", target_count=4)
    _, metrics = buffer.sample(global_steps=1, partition_id="train", batch_size=4)
    assert "training/filter_groups/evicted_samples" not in metrics  # verl reported them from prepare_step
    assert metrics["dipo/ds_dropped_groups"] == 2.0 and metrics["dipo/ds_rounds"] == 1.5
    for i in range(4):
        fake_tq.add_group(f"n{i}", *MIXED, step=2)
    _, metrics = buffer.sample(global_steps=2, partition_id="train", batch_size=4)
    assert (metrics["dipo/ds_dropped_groups"], metrics["dipo/ds_rounds"]) == (0.0, 1.0)


def test_estimator_confirms_the_kept_reallocation(recipe_config, fake_tq):
    """The sampled batch through verl's compute_advantage: the estimator (τ* now counting the batch) reallocates the
    group the filter kept, and the trainer's metric says so."""
    cfg = ds_config(recipe_config)
    seed_queue(cfg.algorithm)
    buffer = make_dipo_aware(sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, [])), cfg.algorithm)
    fill_step(fake_tq)
    batch, _ = buffer.sample(global_steps=1, partition_id="train", batch_size=4)
    rows = [fake_tq.fields["train"][key] for key in batch.keys]  # _materialize_batch leaves the trajectories
    width = max(int(r["response_mask"].numel()) for r in rows)

    def pad(name):
        out = torch.zeros(len(rows), width)
        for i, r in enumerate(rows):
            out[i, : r[name].numel()] = r[name].float()
        return out

    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": pad("rm_scores"),
            "token_level_scores": pad("rm_scores"),
            "response_mask": pad("response_mask"),
            "old_log_probs": pad("rollout_log_probs"),
        },
        non_tensors={"uid": np.array([key.split("_")[0] for key in batch.keys], dtype=object)},
    )
    ray_trainer.compute_advantage(data, adv_estimator="dipo", config=cfg.algorithm)
    state = get_estimator_state(cfg.algorithm)
    row_uids = [key.rsplit("_", 2)[0] for key in batch.keys]
    assert confirmed_reallocations(state, row_uids, buffer.dipo_last_kept_reallocated) == 1
    trainer = DiPOTrainerSync.__new__(DiPOTrainerSync)
    trainer.config, trainer.replay_buffer = cfg, buffer
    assert trainer._dynamic_sampling_metrics(list(batch.keys)) == {"dipo/ds_realloc_confirmed": 1.0}


def test_jagged_tensors_from_transfer_queue_are_read_per_row(recipe_config, fake_tq):
    """TransferQueue returns variable-length fields as nested (jagged) tensors: iterate them per trajectory."""
    cfg = ds_config(recipe_config)
    seed_queue(cfg.algorithm)
    buffer = make_dipo_aware(sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, [])), cfg.algorithm)
    fill_step(fake_tq)
    plain_get = fake_tq.kv_batch_get

    def jagged_get(keys, partition_id, select_fields=None):
        out = plain_get(keys, partition_id, select_fields)
        for name, values in out.items():
            if name != "extra_fields":
                out[name] = torch.nested.nested_tensor(values, layout=torch.jagged)
        return out

    fake_tq.kv_batch_get = jagged_get
    buffer._sync_metadata_from_transfer_queue()
    assert buffer._dapo_filtered_keys("train")[0] == {"c", "d"}


@pytest.mark.parametrize(("verifier_key", "kept"), [("auto", True), ("score", False)])
def test_filter_takes_the_overlong_penalty_out_like_the_estimator(recipe_config, fake_tq, verifier_key, kept):
    """An all-wrong group (acc = 0 everywhere) whose two longest answers (5 and 6 tokens) carry the dapo overlong
    penalty (max_resp_len 8, buffer 4: −0.25, −0.5). With ``verifier_key=auto`` R is −1 for all: a hard group, kept
    for BRR; with ``score`` it is not extreme, so BRR leaves it alone and DAPO's filter (on ``acc``) drops it."""
    cfg = ds_config(
        recipe_config,
        algorithm__filter_groups__metric="acc",
        algorithm__dipo__verifier_key=verifier_key,
        reward__reward_kwargs__max_resp_len=8,
        reward__reward_kwargs__overlong_buffer_cfg__len=4,
    )
    seed_queue(cfg.algorithm)
    buffer = make_dipo_aware(sync_buffer(ReplayBuffer, fresh_mixed_refill(fake_tq, []), "acc"), cfg.algorithm)
    fake_tq.add_group("b", [-1.0, -1.0, -1.25, -1.5], HARD_LOW[1])
    buffer._sync_metadata_from_transfer_queue()
    assert buffer._dapo_filtered_keys("train")[0] == (set() if kept else {"b"})
    assert buffer.dipo_kept_reallocated["train"] == ({"b"} if kept else set())
