"""Dynamic sampling in DiPOTrainer (tiny local model, CPU, no hub): the batch is filled with kept groups across
rounds, the metrics are logged, DS off / nothing dropped changes nothing, the cap, PEFT, accumulation, resume."""

from __future__ import annotations

import logging

import pytest
import torch

pytest.importorskip("trl")

from dipo.core import groups_to_keep
from dipo.integrations.trl import DiPOConfig, DiPOTrainer
from dipo.integrations.trl._dynamic_sampling import Selection, assemble, check_batch_keys, refill_rows, select_groups
from trl_helpers import build_dataset, build_tiny_model_dir, kind_reward, load_tiny, tiny_grpo_kwargs

G = 4


# ---------------------------------------------------------------- plumbing (hand cases, no model)
def test_assemble_pads_each_round_and_masks_fillers():
    round0 = {
        "prompt_ids": torch.tensor([[5, 6], [5, 6], [7, 8], [7, 8]]),
        "prompt_mask": torch.ones(4, 2, dtype=torch.long),
        "completion_ids": torch.tensor([[1], [2], [3], [4]]),
        "completion_mask": torch.ones(4, 1, dtype=torch.long),
        "advantages": torch.tensor([1.0, -1.0, 0.0, 0.0]),
    }
    round1 = {
        "prompt_ids": torch.tensor([[9], [9], [3], [3]]),
        "prompt_mask": torch.ones(4, 1, dtype=torch.long),
        "completion_ids": torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]]),
        "completion_mask": torch.ones(4, 2, dtype=torch.long),
        "advantages": torch.tensor([0.5, -0.5, 0.0, 0.0]),
    }
    batch = assemble([round0, round1], Selection(kept=[(1, 0)], fillers=[(0, 1)]), 2, 4, pad_token_id=0)
    assert batch["prompt_ids"].tolist() == [[0, 9], [0, 9], [7, 8], [7, 8]]  # left-padded prompt of round 1
    assert batch["prompt_mask"].tolist() == [[0, 1], [0, 1], [1, 1], [1, 1]]
    assert batch["completion_ids"].tolist() == [[1, 2], [3, 4], [3, 0], [4, 0]]  # right-padded round 0
    assert batch["completion_mask"].tolist() == [[1, 1], [1, 1], [0, 0], [0, 0]]  # fillers: no loss tokens
    assert batch["advantages"].tolist() == [0.5, -0.5, 0.0, 0.0]


def test_refill_rows_are_reproducible_groups_of_distinct_prompts():
    rows = refill_rows(10, 3, G, (0, 5, 0, 1))
    assert rows == refill_rows(10, 3, G, (0, 5, 0, 1))  # a resumed run draws the same prompts
    assert rows != refill_rows(10, 3, G, (0, 6, 0, 1))  # another step, other prompts
    prompts = rows[::G]
    assert len(set(prompts)) == 3 and rows == [p for p in prompts for _ in range(G)]
    state = torch.get_rng_state()
    refill_rows(10, 3, G, (1, 2, 3, 4))
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is never drawn from


def test_multimodal_batches_are_refused():
    text = {"prompt_ids": 0, "completion_mask": 0, "advantages": 0, "num_items_in_batch": 0}
    check_batch_keys(text)
    with pytest.raises(ValueError, match=r"\['pixel_values'\]"):
        check_batch_keys({**text, "pixel_values": 0})


def test_config_validates_the_options(tmp_path):
    base = tiny_grpo_kwargs(tmp_path)
    with pytest.raises(ValueError, match="max_generation_rounds=0"):
        DiPOConfig(**base, dynamic_sampling=True, max_generation_rounds=0)
    with pytest.raises(ValueError, match="dipo_ds_queue='some'"):
        DiPOConfig(**base, dipo_ds_queue="some")
    with pytest.raises(ValueError, match="dipo_ds_on_cap='skip'"):
        DiPOConfig(**base, dipo_ds_on_cap="skip")
    for preset in ("grpo", "dapo", "dipo"):
        assert DiPOConfig(**base, preset=preset, dynamic_sampling=True).dynamic_sampling


# ---------------------------------------------------------------- the trainer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny"), seed=0)


def kwargs_for(tmp_path, **overrides):
    # 16 rows = 4 prompts x G (easy, hard, mixed, mixed): the easy and hard groups have zero variance.
    settings = {"per_device_train_batch_size": 16, "num_generations": G, "mask_truncated_completions": False}
    return tiny_grpo_kwargs(tmp_path, **{**settings, **overrides})


class RecordingTrainer(DiPOTrainer):
    """Keeps, per training batch, every round's global tensors and keep decision, and the final local batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.steps, self._rounds = [], []

    def _ds_gather_rows(self, output):
        gathered = super()._ds_gather_rows(output)
        self._rounds[-1]["rows"] = gathered
        return gathered

    def _ds_keep(self, rewards_per_func):
        keep, kept_by_brr = super()._ds_keep(rewards_per_func)
        realloc = None
        if self.last_dipo_batch is not None and self.last_dipo_batch.output is not None:
            realloc = self.last_dipo_batch.output.realloc_hard | self.last_dipo_batch.output.realloc_easy
        self._rounds.append({"rewards_per_func": rewards_per_func.cpu(), "keep": keep, "realloc": realloc})
        return keep, kept_by_brr

    def _dynamic_sampling(self, inputs):
        self._rounds = []
        output = super()._dynamic_sampling(inputs)
        self.steps.append({"rounds": self._rounds, "output": output})
        return output


def alternating_reward(completions, **kwargs):
    """1, 0, 1, 0, ...: every group of an even size is mixed, so dynamic sampling drops nothing."""
    return [float(i % 2 == 0) for i in range(len(completions))]


def train(config, model_dir, reward=kind_reward, trainer_cls=RecordingTrainer, resume=None, num_prompts=16, **kw):
    model, tokenizer = load_tiny(model_dir)
    trainer = trainer_cls(
        model=model,
        reward_funcs=[reward],
        args=config,
        train_dataset=build_dataset(num_prompts),
        processing_class=tokenizer,
        **kw,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def history(trainer, key):
    return [entry[key] for entry in trainer.state.log_history if key in entry]


def assert_same_parameters(a, b):
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.slow
def test_dapo_ds_fills_the_batch_with_the_first_kept_groups(tmp_path, model_dir):
    config = DiPOConfig(**kwargs_for(tmp_path, preset="dapo", dynamic_sampling=True, max_generation_rounds=4))
    trainer = train(config, model_dir)
    refilled = 0
    for step in trainer.steps:
        rounds, output = step["rounds"], step["output"]
        keeps = []
        for r in rounds:  # the filter, recomputed from the round's raw rewards
            rewards = r["rewards_per_func"][:, 0]
            keeps.append(groups_to_keep(rewards, G))
            assert torch.equal(keeps[-1], r["keep"])
        selection = select_groups(keeps, 4)
        expected = [(ri, g) for ri, g in selection.kept + selection.fillers]
        assert len(expected) == 4 and output["completion_ids"].size(0) == 16  # TRL's shape, exactly
        for slot, (ri, g) in enumerate(expected):
            source = rounds[ri]["rows"]["completion_ids"][g * G : (g + 1) * G]
            got = output["completion_ids"][slot * G : (slot + 1) * G]
            width = min(source.size(1), got.size(1))
            assert torch.equal(got[:, :width], source[:, :width])
        kept_slots = len(selection.kept)
        assert torch.all(output["completion_mask"][kept_slots * G :] == 0)  # fillers carry no loss tokens
        assert int(output["num_items_in_batch"]) == int(output["completion_mask"].sum())
        refilled += len(rounds) > 1
    assert refilled > 0, "no refill round happened: the test would be vacuous"
    rounds = history(trainer, "dipo/ds_rounds")
    kept, dropped = history(trainer, "dipo/ds_kept_groups"), history(trainer, "dipo/ds_dropped_groups")
    assert len(rounds) == 3 and max(rounds) > 1
    assert [k + d for k, d in zip(kept, dropped, strict=True)] == [4 * r for r in rounds]
    assert history(trainer, "dipo/ds_kept_reallocated") == [0.0, 0.0, 0.0]  # DAPO: BRR is off


@pytest.mark.slow
def test_dipo_ds_keeps_the_groups_brr_reallocated(tmp_path, model_dir):
    common = dict(preset="dipo", dipo_judgment=False, dynamic_sampling=True, max_generation_rounds=2)
    trainer = train(DiPOConfig(**kwargs_for(tmp_path / "keep", **common)), model_dir)
    kept_by_brr = 0
    for step in trainer.steps:
        for r in step["rounds"]:
            plain = groups_to_keep(r["rewards_per_func"][:, 0], G)
            assert torch.equal(r["keep"], plain | r["realloc"])
            kept_by_brr += int((r["keep"] & ~plain).sum())
    assert kept_by_brr > 0 and sum(history(trainer, "dipo/ds_kept_reallocated")) == kept_by_brr

    ablation = train(DiPOConfig(**kwargs_for(tmp_path / "drop", **common, dipo_ds_keep_reallocated=False)), model_dir)
    for step in ablation.steps:
        for r in step["rounds"]:
            assert torch.equal(r["keep"], groups_to_keep(r["rewards_per_func"][:, 0], G))
    assert history(ablation, "dipo/ds_kept_reallocated") == [0.0, 0.0, 0.0]


@pytest.mark.slow
def test_ds_that_drops_nothing_and_ds_off_give_todays_updates(tmp_path, model_dir):
    """Every group mixed: DS keeps round 1 as it is, so the weights, losses and global RNG equal DS off's."""
    runs = {}
    for ds in (False, True):
        torch.manual_seed(0)
        config = DiPOConfig(**kwargs_for(tmp_path / str(ds), preset="dipo", dynamic_sampling=ds))
        trainer = train(config, model_dir, reward=alternating_reward)
        runs[ds] = (trainer, torch.get_rng_state())
    (off, rng_off), (on, rng_on) = runs[False], runs[True]
    assert off.steps == [] and not history(off, "dipo/ds_rounds")  # DS off: the DS path never runs
    assert history(on, "dipo/ds_rounds") == [1.0, 1.0, 1.0]
    assert history(on, "loss") == history(off, "loss")
    assert_same_parameters(on, off)
    assert torch.equal(rng_on, rng_off)  # no extra draw from the global RNG


@pytest.mark.slow
def test_cap_fills_with_masked_groups_or_raises(tmp_path, model_dir, caplog):
    common = dict(preset="dapo", dynamic_sampling=True, max_generation_rounds=1, max_steps=1)
    with caplog.at_level(logging.WARNING, logger="dipo.integrations.trl.trainer"):
        trainer = train(DiPOConfig(**kwargs_for(tmp_path / "fill", **common)), model_dir)
    assert history(trainer, "dipo/ds_filler_groups")[0] >= 2  # the easy and the hard group
    assert "masked out of the loss" in caplog.text
    with pytest.raises(RuntimeError, match="dipo_ds_on_cap='raise'"):
        train(DiPOConfig(**kwargs_for(tmp_path / "raise", **common, dipo_ds_on_cap="raise")), model_dir)


@pytest.mark.slow
def test_queue_kept_holds_only_the_batch_groups(tmp_path, model_dir):
    common = dict(preset="dipo", dynamic_sampling=True, max_generation_rounds=3, max_steps=1, dipo_ds_queue="kept")
    trainer = train(DiPOConfig(**kwargs_for(tmp_path, **common)), model_dir)
    (step,) = trainer.steps
    keeps = [r["keep"] for r in step["rounds"]]
    kept = select_groups(keeps, 4).kept
    assert trainer.dipo.queue.num_batches == 1 and len(trainer.dipo.queue) == G * len(kept)


@pytest.mark.slow
def test_ds_with_accumulation_steps_per_generation_and_iterations(tmp_path, model_dir):
    config = DiPOConfig(
        **kwargs_for(
            tmp_path,
            per_device_train_batch_size=8,
            gradient_accumulation_steps=2,
            steps_per_generation=4,
            num_iterations=2,
            preset="dipo",
            dynamic_sampling=True,
            max_steps=8,
        )
    )
    trainer = train(config, model_dir, num_prompts=32)
    assert len(trainer.steps) == 2  # one generation of 32 rows every (4 x 2) micro-steps = every 4 optimizer steps
    for step in trainer.steps:
        assert step["output"]["completion_ids"].size(0) == 32
    assert max(history(trainer, "dipo/ds_rounds")) > 1
    assert all(loss == loss for loss in history(trainer, "loss"))


@pytest.mark.slow
def test_ds_resume_matches_the_uninterrupted_run(tmp_path, model_dir):
    common = dict(preset="dipo", dipo_judgment=False, dynamic_sampling=True, max_steps=4, save_strategy="steps")
    common.update(save_steps=2)
    full = train(DiPOConfig(**kwargs_for(tmp_path / "full", **common)), model_dir)
    assert max(history(full, "dipo/ds_rounds")[2:]) > 1, "no refill after the checkpoint: the test would be vacuous"
    resumed = train(
        DiPOConfig(**kwargs_for(tmp_path / "resumed", **common)),
        model_dir,
        resume=str(tmp_path / "full" / "checkpoint-2"),
    )
    assert_same_parameters(resumed, full)
    for key in ("loss", "dipo/ds_rounds", "dipo/ds_kept_groups", "dipo/ds_kept_reallocated"):
        assert history(resumed, key)[-2:] == history(full, key)[-2:], key


@pytest.mark.slow
def test_ds_with_a_lora_adapter(tmp_path, model_dir):
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, bias="none")
    config = DiPOConfig(**kwargs_for(tmp_path, preset="dipo", dynamic_sampling=True, max_steps=2))
    trainer = train(config, model_dir, peft_config=lora)
    assert max(history(trainer, "dipo/ds_rounds")) > 1
    assert all(step["output"]["completion_ids"].size(0) == 16 for step in trainer.steps)


def test_iterable_dataset_is_refused(tmp_path, model_dir):
    from datasets import IterableDataset

    model, tokenizer = load_tiny(model_dir)
    stream = IterableDataset.from_generator(lambda: iter(build_dataset(8)))
    config = DiPOConfig(**kwargs_for(tmp_path, preset="dapo", dynamic_sampling=True))
    with pytest.raises(ValueError, match="iterable"):
        DiPOTrainer(
            model=model, reward_funcs=[kind_reward], args=config, train_dataset=stream, processing_class=tokenizer
        )
