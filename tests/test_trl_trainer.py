"""DiPOTrainer on a tiny local model (CPU, no hub): equivalence with GRPOTrainer, DiPO decisions, resume, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

pytest.importorskip("trl")

from trl import GRPOConfig, GRPOTrainer

from dipo.core import DiPO, group_advantages, perplexity_bonus
from dipo.integrations.trl import DIPO_STATE_NAME, DiPOConfig, DiPOTrainer
from trl_helpers import (
    build_dataset,
    build_tiny_model_dir,
    kind_reward,
    load_tiny,
    reference_log_ppl,
    tiny_grpo_kwargs,
)

pytestmark = pytest.mark.slow

G = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny"), seed=0)


def kwargs_for(tmp_path, **overrides):
    # 16 rows = 4 prompts x G; truncated completions are kept (a random tiny model rarely stops on its own).
    settings = {"per_device_train_batch_size": 16, "num_generations": G, "mask_truncated_completions": False}
    return tiny_grpo_kwargs(tmp_path, **{**settings, **overrides})


def kind_reward_with_gaps(completions, completion_ids, kind, **kwargs):
    """``kind_reward``, but ``None`` (not applicable) for mixed prompts whose completion starts with 5k."""
    rewards = kind_reward(completions, completion_ids, kind)
    return [
        None if k == "mixed" and ids and ids[0] % 5 == 0 else r
        for r, k, ids in zip(rewards, kind, completion_ids, strict=True)
    ]


class RecordingTrainer(DiPOTrainer):
    """Keeps every batch's DiPO record and an independent reference log-PPL of the sampling policy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records, self.reference_log_ppl, self.logged_advantages, self.raw_rewards = [], [], [], []

    def _apply_dipo(self, output, rewards_per_func):
        # reference: plain forward of the (unchanged) sampling policy, temperature 1
        self.reference_log_ppl.append(reference_log_ppl(self.model, output))
        super()._apply_dipo(output, rewards_per_func)
        self.records.append(self.last_dipo_batch)
        n = len(self.last_dipo_batch.rewards)
        self.logged_advantages.append(list(self._logs["advantages"])[-n:])
        # TRL's completions table holds each reward function's raw output (NaN where it returned None)
        self.raw_rewards.append({name: list(values)[-n:] for name, values in self._logs["rewards"].items()})


def train(trainer_cls, config, model_dir, reward=kind_reward, resume=None, num_prompts=16):
    model, tokenizer = load_tiny(model_dir)
    trainer = trainer_cls(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=build_dataset(num_prompts),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def assert_same_parameters(a, b):
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name


def test_alpha_zero_and_dapo_preset_match_trl_grpo_trainer(tmp_path, model_dir):
    dapo = dict(loss_type="dapo", epsilon_high=0.28)
    reference = train(GRPOTrainer, GRPOConfig(**kwargs_for(tmp_path / "trl", **dapo)), model_dir)
    # DiPO pipeline running (extra forward pass, PSD, diagnostics) but α = 0: must not change anything
    alpha0 = kwargs_for(tmp_path / "a0", preset="dipo", dipo_alpha=0.0, dipo_log_diagnostics=True)
    dipo0 = train(DiPOTrainer, DiPOConfig(**alpha0), model_dir)
    dapo_preset = train(DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path / "dapo", preset="dapo")), model_dir)
    assert dipo0.dipo is not None and dapo_preset.dipo is None
    assert any(e.get("dipo/queue_size", 0) > 0 for e in dipo0.state.log_history)
    for other in (dipo0, dapo_preset):
        assert losses(other) == losses(reference)
        assert_same_parameters(other, reference)
    assert any(loss != 0 for loss in losses(reference))


def test_dipo_changes_only_extreme_groups_exactly_as_core(tmp_path, model_dir):
    config = DiPOConfig(**kwargs_for(tmp_path, preset="dipo", dipo_judgment=False, max_steps=3))
    trainer = train(RecordingTrainer, config, model_dir, reward=kind_reward_with_gaps)
    replay = DiPO(config.dipo_core_config())
    reallocated = 0
    batches = zip(
        trainer.records, trainer.reference_log_ppl, trainer.logged_advantages, trainer.raw_rewards, strict=True
    )
    unscorable = 0
    for record, reference, logged_advantages, raw in batches:
        assert record.ppl_source == "forward"  # plain model.generate, aligned steps: TRL has no old log-probs
        torch.testing.assert_close(record.log_ppl, reference, rtol=1e-5, atol=1e-5)
        raw = torch.tensor(raw["kind_reward_with_gaps"])
        assert torch.equal(record.valid, ~torch.isnan(raw))  # None rewards -> valid=False
        assert torch.equal(record.rewards[record.valid], raw[record.valid])
        unscorable += int((~record.valid).sum())
        out = replay.step(record.rewards, record.log_ppl, G, valid=record.valid, token_counts=record.token_counts)
        assert torch.equal(out.advantage_delta, record.output.advantage_delta)
        assert torch.equal(out.realloc_mask, record.output.realloc_mask)
        assert out.threshold == record.output.threshold or math.isnan(out.threshold)
        # independent extreme-group test on the raw rewards (valid rows only)
        grouped = record.rewards.view(-1, G)
        grouped_valid = record.valid.view(-1, G)
        extreme = torch.tensor(
            [bool(v.all()) and float(r.max() - r.min()) == 0.0 for r, v in zip(grouped, grouped_valid, strict=True)]
        ).repeat_interleave(G)
        changed = record.advantages != record.trl_advantages
        assert not (changed & ~extreme).any(), "DiPO changed a normal group"
        assert torch.all(record.trl_advantages[extreme] == 0)
        assert torch.equal(record.advantages, record.trl_advantages + record.output.advantage_delta)
        assert torch.equal(changed, record.output.realloc_mask)
        # stale-log fix: the completions table shows the final advantages
        assert logged_advantages == pytest.approx(record.advantages.tolist())
        reallocated += int(record.output.realloc_mask.any())
    assert reallocated > 0, "no group was reallocated: the test would be vacuous"
    assert unscorable > 0, "no reward was None: the valid=False path was not exercised"
    logged = trainer.dipo_log_history("realloc_hard")
    assert len(logged) == 3 and all(not math.isnan(v) for v in logged)
    assert {"dipo/frac_easy", "dipo/threshold_ppl", "dipo/frac_CH", "dipo/judgment_passed"} <= set(
        trainer.state.log_history[0]
    )

    # eval-mode generation leaves DiPO untouched
    last, queue_size = trainer.last_dipo_batch, len(trainer.dipo.queue)
    trainer.model.eval()
    rows = [row for row in build_dataset(4) for _ in range(G)]
    trainer._generate_and_score_completions(rows)
    assert trainer.last_dipo_batch is last and len(trainer.dipo.queue) == queue_size


def test_resume_restores_queue_and_matches_uninterrupted_run(tmp_path, model_dir):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, dipo_judgment=False, preset="dipo")
    full = train(DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path / "full", **common)), model_dir)
    checkpoint = tmp_path / "full" / "checkpoint-2"
    saved = torch.load(checkpoint / DIPO_STATE_NAME, weights_only=True)
    assert len(saved["queue"]["log_ppl"]) == 2  # queue_batches = 2 batches after two steps

    resumed = train(
        DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path / "resumed", **common)), model_dir, resume=str(checkpoint)
    )
    assert_same_parameters(resumed, full)
    full_tail = [e for e in full.state.log_history if "loss" in e][2:]
    resumed_tail = [e for e in resumed.state.log_history if "loss" in e]
    resumed_tail = resumed_tail[-2:]
    for a, b in zip(full_tail, resumed_tail, strict=True):
        assert a["loss"] == b["loss"]
        assert a["dipo/queue_size"] == b["dipo/queue_size"] == 2 * 16  # the restored batch is in the queue
        assert a["dipo/threshold_log_ppl"] == b["dipo/threshold_log_ppl"]
    for x, y in zip(
        full.dipo.state_dict()["queue"]["log_ppl"], resumed.dipo.state_dict()["queue"]["log_ppl"], strict=True
    ):
        assert torch.equal(x, y)


def test_resume_without_state_is_refused_unless_an_empty_queue_is_allowed(tmp_path, model_dir):
    """A checkpoint without dipo_state.pt is incomplete while DiPO runs (issue 16 item 1): refused before anything is
    loaded, not resumed with a silently empty queue; dipo_resume_empty_queue=True resumes it with a warning."""
    common = dict(max_steps=2, save_strategy="steps", save_steps=1, preset="dipo")
    train(DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path / "a", **common)), model_dir, num_prompts=8)
    checkpoint = tmp_path / "a" / "checkpoint-1"
    (checkpoint / DIPO_STATE_NAME).unlink()
    with pytest.raises(ValueError, match=rf"cannot resume from {checkpoint}: it has no {DIPO_STATE_NAME}"):
        train(DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path / "b", **common)), model_dir, resume=str(checkpoint),
              num_prompts=8)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = DiPOConfig(**kwargs_for(tmp_path / "c", **common, dipo_resume_empty_queue=True))
        train(DiPOTrainer, config, model_dir, resume=str(checkpoint), num_prompts=8)
    assert any("PPL queue starts empty" in str(w.message) for w in caught)


def test_plain_grpo_config_is_accepted(tmp_path, model_dir):
    model, tokenizer = load_tiny(model_dir)
    args = GRPOConfig(**kwargs_for(tmp_path, loss_type="bnpo"))
    trainer = DiPOTrainer(model=model, reward_funcs=kind_reward, args=args, train_dataset=build_dataset(8),
                          processing_class=tokenizer)  # fmt: skip
    assert isinstance(trainer.args, DiPOConfig) and trainer.args.loss_type == "bnpo"
    assert trainer.args.dipo_alpha == 0.1 and trainer.dipo is not None


def test_bad_construction_errors(tmp_path, model_dir):
    model, tokenizer = load_tiny(model_dir)
    with pytest.raises(ValueError, match="unknown preset"):
        DiPOConfig(**kwargs_for(tmp_path, preset="ppo"))
    with pytest.raises(ValueError, match="num_generations=1"):
        DiPOConfig(**kwargs_for(tmp_path, num_generations=1))
    with pytest.raises(TypeError, match="DiPOConfig or GRPOConfig"):
        DiPOTrainer(model=model, reward_funcs=kind_reward, args={"preset": "dipo"}, processing_class=tokenizer)


def test_graded_rewards_need_graded_mode(tmp_path, model_dir):
    def half_reward(completion_ids, **kwargs):
        return [0.5] * len(completion_ids)

    with pytest.raises(ValueError, match="reward_mode='graded'"):
        train(
            DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path, max_steps=1)), model_dir, reward=half_reward, num_prompts=4
        )


def test_soft_overlong_penalty_is_excluded_from_the_verifier_reward(tmp_path, model_dir):
    config = DiPOConfig(**kwargs_for(tmp_path, max_steps=1, soft_overlong_cache=4, dipo_judgment=False))
    trainer = train(RecordingTrainer, config, model_dir, num_prompts=4)
    assert trainer.reward_func_names == ["kind_reward", "soft_overlong_punishment_reward"]
    record = trainer.records[0]
    assert set(record.rewards.tolist()) <= {0.0, 1.0}  # binary verifier reward, penalty not included
    penalties = trainer.state.log_history[0]["rewards/soft_overlong_punishment_reward/mean"]
    assert penalties < 0  # most tiny-model completions run into the soft-penalty zone


def test_reuses_trl_old_logps_when_available(tmp_path, model_dir):
    # num_iterations=2: TRL computes old_per_token_logps itself, DiPO must reuse them (no extra pass)
    config = DiPOConfig(**kwargs_for(tmp_path, max_steps=2, num_iterations=2, dipo_judgment=False))
    trainer = train(RecordingTrainer, config, model_dir, num_prompts=4)
    assert len(trainer.records) == 1  # one generation for two optimizer steps
    record = trainer.records[0]
    assert record.ppl_source == "old"
    torch.testing.assert_close(record.log_ppl, trainer.reference_log_ppl[0], rtol=1e-5, atol=1e-5)


def test_tool_output_tokens_are_excluded_from_the_ppl(tmp_path, model_dir):
    trainer = train(DiPOTrainer, DiPOConfig(**kwargs_for(tmp_path, max_steps=1)), model_dir, num_prompts=4)
    n, t = 16, 5
    torch.manual_seed(0)
    logps = -torch.rand(n, t) * 3
    completion_mask = torch.ones(n, t, dtype=torch.long)
    completion_mask[0, 3:] = 0
    tool_mask = torch.ones(n, t, dtype=torch.long)
    tool_mask[:, 1:3] = 0  # tokens 1-2 are tool output
    tool_mask[1] = 0  # row 1: tool output only -> no PPL
    output = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, t, dtype=torch.long),
        "completion_mask": completion_mask,
        "tool_mask": tool_mask,
        "old_per_token_logps": logps,
        "advantages": torch.zeros(n),
    }
    rewards = torch.tensor([1.0, 0.0] * 8).unsqueeze(1)
    trainer._apply_dipo(output, rewards)
    mask = (completion_mask * tool_mask).float()
    expected = -(logps * mask).sum(1) / mask.sum(1)
    record = trainer.last_dipo_batch
    assert record.ppl_source == "old"
    assert torch.isnan(record.log_ppl[1]) and torch.isnan(expected[1])
    torch.testing.assert_close(record.log_ppl, expected, equal_nan=True)
    assert record.token_counts.tolist() == mask.sum(1).tolist()


def test_cde_style_ppl_bonus_baseline(tmp_path, model_dir):
    config = DiPOConfig(**kwargs_for(tmp_path, preset="dapo", max_steps=1, ppl_bonus_coef=0.1, ppl_bonus_clip=0.5))
    trainer = train(RecordingTrainer, config, model_dir, num_prompts=4)
    assert trainer.dipo is None  # DiPO off: only the baseline's bonus
    record = trainer.records[0]
    assert record.output is None
    shaped = perplexity_bonus(record.rewards, record.log_ppl, 0.1, 0.5)
    expected = group_advantages(shaped, G, valid=record.valid)
    torch.testing.assert_close(record.advantages, expected, rtol=1e-5, atol=1e-5)
    easy = record.rewards.view(-1, G).min(1).values.eq(1).repeat_interleave(G)
    assert easy.any() and (record.advantages[easy] != 0).any()  # all-correct groups now differ by PPL
    assert "cde/bonus_mean" in trainer.state.log_history[0]


def test_positional_arguments_as_in_grpo_trainer(tmp_path, model_dir):
    model, tokenizer = load_tiny(model_dir)
    args = DiPOConfig(**kwargs_for(tmp_path))
    trainer = DiPOTrainer(model, [kind_reward], args, build_dataset(8), None, tokenizer)
    assert trainer.train_dataset.num_rows == 8 and trainer.processing_class is tokenizer
