"""Adapter conformance (issue 17 item 2): every framework adapter, driven through its real entry point, turns the
same batch into the same advantages, the same ``dipo/*`` metrics and the same saved state — those of the kit's
reference (:func:`dipo.integrations._kit.run_step` on :class:`dipo.core.DiPO`).

A third adapter joins by adding a class with ``name``, ``step(batch) -> (advantages [N], metrics)``,
``save(folder)``, ``restore(folder)`` and ``core`` to :data:`ADAPTERS` (see ``docs/integrating.md``).

The frameworks' GRPO epsilons differ (TRL ``std + 1e-4``, verl ``std + 1e-6``) and each adapter follows its own; the
suite sets verl's to TRL's so that the two adapters must agree with each other exactly, not only with the reference.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from dipo.core import DiPO, DiPOCoreConfig, group_advantages, sequence_log_ppl
from dipo.integrations._kit import StepInputs, base_advantages, compose_verifier_rewards, run_step, step_metrics
from dipo.integrations._kit.state import load_state_file
from verl_helpers import dapo_overlong_penalty, full_config, make_batch

G, GROUPS, L = 4, 4, 6
EPS = 1e-4  # TRL's GRPO epsilon
OPTIONS = {"alpha": 0.1, "judgment": False}  # judgment off: BRR acts from the first batch (a test of four groups)
OVERLONG = (L, 3, 1.0)  # DAPO's soft overlong shaping: max length, buffer, factor (responses of 4-6 tokens penalised)


def overlong_penalty(batch) -> torch.Tensor:
    """DAPO's shaping of every row, as verl's ``dapo`` reward manager and TRL's soft-overlong reward compute it."""
    return dapo_overlong_penalty(batch.response_mask.sum(-1), *OVERLONG)


def batches():
    """Two steps: hard / easy groups built in (``make_batch``), then a second batch for the queue."""
    return [make_batch(num_groups=GROUPS, group_size=G, length=L, seed=seed) for seed in (0, 1)]


def reference(batch, core: DiPO, overlong: bool):
    """What every adapter must give: GRPO of the trained reward (shaping included) plus the kit's step on the verifier
    reward (shaping taken out)."""
    log_ppl = sequence_log_ppl(batch.old_log_probs.double(), batch.response_mask)
    counts = batch.response_mask.sum(-1).double()
    penalty = overlong_penalty(batch) if overlong else None
    verifier = compose_verifier_rewards(batch.rewards.double(), penalty=penalty)
    result = run_step(core, StepInputs(verifier, log_ppl, G, counts))
    trained = batch.rewards.double() + (0 if penalty is None else penalty.double())
    base = base_advantages(trained, G, core.config)
    return (base + result.delta).float(), step_metrics(result)


class TRLAdapter:
    """``DiPOTrainer._apply_dipo``: the hook TRL's ``_generate_and_score_completions`` calls on every batch."""

    name = "trl"

    def __init__(self, tmp_path_factory):
        pytest.importorskip("trl")
        from dipo.integrations.trl import DiPOConfig, DiPOTrainer
        from trl_helpers import build_dataset, build_tiny_model_dir, kind_reward, load_tiny, tiny_grpo_kwargs

        tmp = tmp_path_factory.mktemp("conformance_trl")
        model, tokenizer = load_tiny(build_tiny_model_dir(tmp / "tiny"))
        kwargs = tiny_grpo_kwargs(tmp / "out", num_generations=G, max_completion_length=L)
        args = DiPOConfig(**kwargs, preset="dipo", **{f"dipo_{k}": v for k, v in OPTIONS.items()})
        self.trainer = DiPOTrainer(model, [kind_reward], args, build_dataset(4), processing_class=tokenizer)

    def reset(self, monkeypatch) -> None:
        self.trainer.dipo = DiPO(self.trainer.args.dipo_core_config())
        self.trainer._metrics["train"].clear()

    @property
    def core(self) -> DiPO:
        return self.trainer.dipo

    def step(self, batch, overlong: bool, monkeypatch):
        n = batch.rewards.numel()
        columns = batch.rewards.unsqueeze(1)
        if overlong:  # what soft_overlong_cache adds: TRL's soft overlong reward function as a last column
            columns = torch.cat([columns, overlong_penalty(batch).unsqueeze(1)], dim=1)
            monkeypatch.setattr(self.trainer, "_dipo_skip_reward_column", 1)
        output = {
            "prompt_ids": torch.zeros(n, 1, dtype=torch.long),
            "prompt_mask": torch.ones(n, 1, dtype=torch.long),
            "completion_ids": torch.zeros(n, L, dtype=torch.long),
            "completion_mask": batch.response_mask.long(),
            "old_per_token_logps": batch.old_log_probs,
            "advantages": group_advantages(columns.sum(1), G, eps=EPS),  # what GRPOTrainer computed
        }
        self.trainer._apply_dipo(output, columns)
        logged = self.trainer._metrics["train"]
        return output["advantages"], {k: v[-1] for k, v in logged.items() if k.startswith("dipo/")}

    def save(self, folder) -> None:
        self.trainer._save_dipo_state(str(folder))

    def restore(self, folder) -> None:
        self.trainer._load_optimizer_and_scheduler(str(folder))


class VerlAdapter:
    """``compute_dipo_outcome_advantage``, the ``dipo`` estimator verl's ``compute_advantage`` calls, on rows in
    verl's (shuffled) order; the state through the ``dipo_*`` trainers' save / load functions."""

    name = "verl"

    def __init__(self, tmp_path_factory):
        pytest.importorskip("verl")
        from dipo.integrations import verl as plugin

        self.plugin = plugin
        self.configs = {
            flag: full_config(dict(OPTIONS), overlong=OVERLONG if flag else None) for flag in (False, True)
        }
        self.config = self.configs[False].algorithm

    def reset(self, monkeypatch) -> None:
        monkeypatch.setattr("dipo.integrations.verl.options.verl_grpo_epsilon", lambda: EPS)
        self.config = self.configs[False].algorithm
        self.plugin.reset_estimator_states()

    @property
    def core(self) -> DiPO:
        return self.plugin.get_estimator_state(self.config).core

    def step(self, batch, overlong: bool, monkeypatch):
        self.config = self.configs[overlong].algorithm  # the dapo reward manager's overlong buffer on or off
        if overlong:  # verl's dapo reward manager adds the shaping to the score at the last response token
            batch = copy.copy(batch)
            rows, last = torch.arange(batch.rewards.numel()), batch.response_mask.sum(-1).long() - 1
            batch.token_level_rewards = batch.token_level_rewards.clone()
            batch.token_level_rewards[rows, last] += overlong_penalty(batch)
        perm = torch.randperm(batch.rewards.numel(), generator=torch.Generator().manual_seed(5))
        shuffled = batch.permuted(perm)
        adv, _ = self.plugin.compute_dipo_outcome_advantage(
            shuffled.token_level_rewards,
            shuffled.response_mask,
            shuffled.uids,
            self.config,
            {"old_log_probs": shuffled.old_log_probs},
        )
        per_row = torch.empty_like(batch.rewards)
        per_row[perm] = adv[:, 0]
        return per_row, self.plugin.get_estimator_state(self.config).pop_metrics()

    def save(self, folder) -> None:
        self.plugin.save_dipo_state(self.plugin.get_estimator_state(self.config), str(folder), 0)

    def restore(self, folder) -> None:
        self.plugin.load_dipo_state(self.plugin.get_estimator_state(self.config), str(folder))


ADAPTERS = {"trl": TRLAdapter, "verl": VerlAdapter}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict = {}

    def get(name):
        if name not in cache:
            cache[name] = ADAPTERS[name](tmp_path_factory)
        return cache[name]

    return get


@pytest.fixture(params=sorted(ADAPTERS))
def adapter(request, built, monkeypatch):
    instance = built(request.param)
    instance.reset(monkeypatch)
    return instance


def run_batches(adapter, monkeypatch, overlong: bool = False):
    """Both batches through the adapter; its last advantages and metrics, and the reference's."""
    core = DiPO(DiPOCoreConfig(**OPTIONS, std="unbiased", std_eps=EPS))
    for batch in batches():
        advantages, metrics = adapter.step(batch, overlong, monkeypatch)
        expected_advantages, expected_metrics = reference(batch, core, overlong)
    return advantages, metrics, expected_advantages, expected_metrics, core


def test_same_advantages(adapter, monkeypatch):
    advantages, _, expected, _, core = run_batches(adapter, monkeypatch)
    assert int(core.state_dict()["queue"]["log_ppl"][-1].numel()) == G * GROUPS
    torch.testing.assert_close(advantages.float(), expected)
    assert not torch.equal(expected, group_advantages(batches()[1].rewards, G, eps=EPS))  # BRR acted


def test_same_metric_names_and_values(adapter, monkeypatch):
    _, metrics, _, expected, _ = run_batches(adapter, monkeypatch)
    assert set(metrics) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=key)
    assert metrics["dipo/realloc_hard"] + metrics["dipo/realloc_easy"] >= 1


def test_same_saved_state_and_each_restores_the_others(adapter, built, tmp_path, monkeypatch):
    _, _, _, _, core = run_batches(adapter, monkeypatch)
    adapter.save(tmp_path / adapter.name)
    payload = load_state_file(tmp_path / adapter.name)
    assert {"queue", "config", "generator", "format", "ppl_source", "global_step"} <= set(payload)
    assert payload["ppl_source"] == "auto" and payload["config"] == core.config.to_dict()
    got, want = payload["queue"], core.state_dict()["queue"]
    assert got["max_batches"] == want["max_batches"] and len(got["log_ppl"]) == len(want["log_ppl"]) == 2
    for b in range(2):  # the same (log-PPL, label) pairs; the order inside a batch follows the framework's rows
        got_order, want_order = got["log_ppl"][b].argsort(), want["log_ppl"][b].argsort()
        torch.testing.assert_close(got["log_ppl"][b][got_order].double(), want["log_ppl"][b][want_order].double())
        assert torch.equal(got["correct"][b][got_order], want["correct"][b][want_order])
    for other in sorted(ADAPTERS):  # every adapter reads every adapter's file
        target = built(other)
        target.reset(monkeypatch)
        target.restore(tmp_path / adapter.name)
        assert len(target.core.queue) == len(core.queue) == 2 * G * GROUPS


def test_overlong_shaping_is_taken_out_of_the_verifier_reward_alike(adapter, monkeypatch):
    """TRL gets the shaping as its own reward column, verl folded into the score: both group on the reward without
    it, train on the reward with it, and log the same share of shaped rows."""
    advantages, metrics, expected, expected_metrics, _ = run_batches(adapter, monkeypatch, overlong=True)
    torch.testing.assert_close(advantages.float(), expected)
    assert (
        0
        < metrics["dipo/frac_rows_overlong_penalty"]
        == pytest.approx(expected_metrics["dipo/frac_rows_overlong_penalty"])
    )
    for key in ("dipo/frac_hard", "dipo/frac_easy", "dipo/realloc_hard", "dipo/realloc_easy"):
        assert metrics[key] == pytest.approx(expected_metrics[key]), key
