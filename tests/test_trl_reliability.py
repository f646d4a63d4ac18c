"""DiPOConfig / DiPOTrainer reliability (issue 12): one definition of "DiPO runs", validation at construction, clear
reward errors, verifier reward functions, the truncation warning, and safe checkpoint state (tiny local model, CPU)."""

from __future__ import annotations

import logging
import math
import os
import warnings
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from dipo.integrations._state import (
    DIPO_STATE_NAME,
    check_resumed_config,
    load_state_file,
    save_state_file,
)
from dipo.integrations.trl import DiPOConfig, DiPOTrainer
from trl_helpers import build_dataset, build_tiny_model_dir, kind_reward, load_tiny, tiny_grpo_kwargs

G = 4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny"), seed=0)


def config(tmp_path, **overrides) -> DiPOConfig:
    # 8 rows = 2 prompts x G; truncated completions are kept unless a test asks otherwise
    settings = {"per_device_train_batch_size": 8, "num_generations": G, "mask_truncated_completions": False}
    return DiPOConfig(**tiny_grpo_kwargs(tmp_path, **{**settings, **overrides}))


def trainer_for(args, model_dir, reward_funcs=(kind_reward,), dataset=None, **kwargs):
    model, tokenizer = load_tiny(model_dir)
    return DiPOTrainer(
        model=model,
        reward_funcs=list(reward_funcs),
        args=args,
        train_dataset=build_dataset(8) if dataset is None else dataset,
        processing_class=tokenizer,
        **kwargs,
    )


def half_reward(completion_ids, **kwargs):
    """A graded 'format' reward: always 0.5."""
    return [0.5] * len(completion_ids)


def style_reward(completion_ids, **kwargs):
    """A graded 'style' score that differs inside a group (the first token id / 100)."""
    return [0.01 * ids[0] if ids else 0.0 for ids in completion_ids]


def crafted_batch(rewards_per_func):
    """A generation output for ``_apply_dipo`` whose log-PPL is known: group 0 is easy (all correct) with its
    maximum-PPL response far above the others; group 1 mixes low-PPL correct and high-PPL wrong responses. The best
    cut τ* = 1.15 lies between them, so BRR penalises the easy group's maximum-PPL response (row 3)."""
    log_ppl = torch.tensor([0.1, 0.2, 0.3, 5.0, 0.15, 0.25, 2.0, 3.0])
    n = log_ppl.numel()
    output = {
        "prompt_ids": torch.zeros(n, 2, dtype=torch.long),
        "prompt_mask": torch.ones(n, 2, dtype=torch.long),
        "completion_ids": torch.zeros(n, 1, dtype=torch.long),
        "completion_mask": torch.ones(n, 1, dtype=torch.long),
        "old_per_token_logps": -log_ppl.unsqueeze(1),
        "advantages": torch.zeros(n),
    }
    return output, torch.tensor(rewards_per_func, dtype=torch.float32)


KIND = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


# ---------------------------------------------------------------- item 2: one definition of "DiPO runs"
def test_alpha_with_diagnostics_off_still_runs_dipo(tmp_path, model_dir):
    args = config(tmp_path, dipo_alpha=0.1, dipo_log_diagnostics=False, dipo_judgment=False)
    assert args.dipo_enabled and args.dipo_track and not args.dipo_logs_diagnostics
    observe = config(tmp_path, preset="dapo", dipo_log_diagnostics=True)
    assert observe.dipo_track and not observe.dipo_enabled and observe.dipo_logs_diagnostics  # observe-only
    assert not config(tmp_path, preset="dapo", dipo_log_diagnostics=False).dipo_track  # the demo's CDE runs
    trainer = trainer_for(args, model_dir)
    assert trainer.dipo is not None
    output, rewards = crafted_batch([[r] for r in KIND])
    trainer._apply_dipo(output, rewards)
    record = trainer.last_dipo_batch
    assert record.output.threshold == pytest.approx(1.15)
    assert record.output.realloc_mask[:4].all() and not record.output.realloc_mask[4:].any()
    assert (record.advantages[:4] != 0).all()  # DiPO changed the easy group's advantages
    assert not any(key.startswith("dipo/") for key in trainer._metrics["train"])  # diagnostics off


# ---------------------------------------------------------------- items 7, 20: validation when the config is built
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dipo_zero_variance_tol": math.nan}, "DiPOConfig: dipo_zero_variance_tol must be finite"),
        ({"dipo_judgment": "no"}, "DiPOConfig: dipo_judgment must be a bool"),
        ({"dipo_reallocate_hard": "False"}, "DiPOConfig: dipo_reallocate_hard must be a bool"),
        ({"dipo_correct_threshold": math.inf}, "DiPOConfig: dipo_correct_threshold must be finite"),
        ({"dipo_alpha": math.nan}, "DiPOConfig: dipo_alpha must be finite"),
        ({"loss_type": "dappo"}, r"unknown loss_type='dappo'; TRL supports 'grpo'"),
        ({"dipo_verifier_reward_funcs": "kind_reward"}, "dipo_verifier_reward_funcs='kind_reward' must be None"),
        ({"dipo_truncation_warn_threshold": 1.5}, r"dipo_truncation_warn_threshold=1.5 must be a number in \[0, 1\]"),
        ({"dipo_log_diagnostics": "yes"}, "dipo_log_diagnostics='yes' must be True, False or None"),
    ],
)
def test_bad_options_fail_at_construction_with_the_field_name(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        config(tmp_path, **kwargs)


def test_dataset_without_prompt_column_fails_at_construction(tmp_path, model_dir):
    dataset = build_dataset(8).rename_column("prompt", "question")
    with pytest.raises(ValueError, match=r"train_dataset has no 'prompt' column .*'question'.*rename_column"):
        trainer_for(config(tmp_path), model_dir, dataset=dataset)
    with pytest.raises(ValueError, match=r"eval_dataset\['val'\] has no 'prompt' column"):
        trainer_for(config(tmp_path), model_dir, eval_dataset={"val": dataset})


def test_reward_returning_strings_names_the_function(tmp_path, model_dir):
    def text_reward(completion_ids, **kwargs):
        return ["1.0"] * len(completion_ids)

    trainer = trainer_for(config(tmp_path, max_steps=1), model_dir, reward_funcs=[kind_reward, text_reward])
    assert trainer.reward_func_names == ["kind_reward", "text_reward"]  # the check keeps TRL's names
    with pytest.raises(TypeError, match=r"reward function 'text_reward' returned '1.0' \(str\) for completion 0"):
        trainer.train()


def test_async_reward_functions_stay_async_and_are_checked(tmp_path, model_dir):
    async def async_reward(completion_ids, **kwargs):
        return [1.0] * len(completion_ids)

    trainer = trainer_for(config(tmp_path, preset="dapo", max_steps=1), model_dir, reward_funcs=[async_reward])
    trainer.train()
    assert trainer.state.log_history[0]["rewards/async_reward/mean"] == 1.0


# ---------------------------------------------------------------- items 19, 24: verifier rewards and their errors
def test_binary_error_names_the_reward_function_and_the_option(tmp_path, model_dir):
    trainer = trainer_for(config(tmp_path, max_steps=1), model_dir, reward_funcs=[kind_reward, half_reward])
    with pytest.raises(ValueError) as caught:
        trainer.train()
    message = str(caught.value)
    assert "dipo_reward_mode='binary'" in message and "reward function(s) ['half_reward']" in message
    assert "dipo_verifier_reward_funcs=['kind_reward']" in message and "half_reward=0.5" in message
    assert "rewards[" not in message  # not the core's wording


def test_infinite_reward_names_the_function(tmp_path, model_dir):
    def broken_reward(completion_ids, **kwargs):
        return [math.inf] * len(completion_ids)

    trainer = trainer_for(config(tmp_path, max_steps=1), model_dir, reward_funcs=[broken_reward])
    with pytest.raises(ValueError, match=r"reward function 'broken_reward' returned inf for completion 0"):
        trainer.train()


def test_bool_and_int_rewards_work(tmp_path, model_dir):
    def bool_reward(completion_ids, kind, **kwargs):
        return [k == "easy" for k in kind]

    def int_reward(completion_ids, kind, **kwargs):
        return [int(k == "easy") for k in kind]

    for func in (bool_reward, int_reward):
        trainer = trainer_for(config(tmp_path, max_steps=1, dipo_judgment=False), model_dir, reward_funcs=[func])
        trainer.train()
        assert set(trainer.last_dipo_batch.rewards.tolist()) <= {0.0, 1.0}


def test_verifier_reward_funcs_use_only_the_named_functions(tmp_path, model_dir):
    args = config(tmp_path, dipo_judgment=False, dipo_verifier_reward_funcs=["kind_reward"], reward_weights=[2, 1])
    trainer = trainer_for(args, model_dir, reward_funcs=[kind_reward, style_reward])
    style = [0.3, 0.1, 0.2, 0.4, 0.3, 0.1, 0.2, 0.4]  # graded, differs inside the groups
    output, rewards = crafted_batch([[k, st] for k, st in zip(KIND, style, strict=True)])
    trainer._apply_dipo(output, rewards)
    record = trainer.last_dipo_batch
    assert record.rewards.tolist() == KIND  # the unweighted kind_reward only: binary mode works
    assert record.output.realloc_mask[:4].all()
    # without the option, the weighted total (2·kind + style) is DiPO's verifier reward and binary mode fails
    plain = trainer_for(config(tmp_path, reward_weights=[2, 1]), model_dir, reward_funcs=[kind_reward, style_reward])
    with pytest.raises(ValueError, match=r"dipo_verifier_reward_funcs=\['kind_reward'\]"):
        plain._apply_dipo(*crafted_batch([[k, st] for k, st in zip(KIND, style, strict=True)]))


def test_unknown_verifier_reward_func_fails_at_construction(tmp_path, model_dir):
    args = config(tmp_path, dipo_verifier_reward_funcs=["accuracy"])
    with pytest.raises(ValueError, match=r"dipo_verifier_reward_funcs names \['accuracy'\].*\['kind_reward'"):
        trainer_for(args, model_dir, reward_funcs=[kind_reward, style_reward])


# ---------------------------------------------------------------- item 25: masked truncated completions
def test_truncation_share_is_logged_and_warned(tmp_path, model_dir, caplog):
    # max_completion_length=1: the random tiny model (almost) never stops that early, so DAPO's overlong filtering
    # masks (almost) every completion out of the loss.
    args = config(tmp_path, preset="dipo", mask_truncated_completions=None, max_completion_length=1, max_steps=2)
    assert args.mask_truncated_completions is True
    trainer = trainer_for(args, model_dir)
    with caplog.at_level(logging.WARNING, logger="dipo.integrations.trl.trainer"):
        trainer.train()
    fracs = trainer.dipo_log_history("frac_masked_truncated")
    assert len(fracs) == 2 and all(f > 0.5 for f in fracs)
    warned = [r for r in caplog.records if "masked out of the loss" in r.getMessage()]
    assert len(warned) == 1  # once, not every step
    assert "dipo_truncation_warn_threshold" in warned[0].getMessage()
    assert "max_completion_length=1" in warned[0].getMessage()


# ---------------------------------------------------------------- item 14: the state file
def test_state_file_is_written_atomically(tmp_path, monkeypatch):
    path = save_state_file({"queue": [1]}, tmp_path)
    assert os.path.basename(path) == DIPO_STATE_NAME and load_state_file(tmp_path) == {"queue": [1]}

    def crash(obj, handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_state_file({"queue": [2]}, tmp_path)
    monkeypatch.undo()
    assert load_state_file(tmp_path) == {"queue": [1]}  # the previous file is intact
    assert os.listdir(tmp_path) == [DIPO_STATE_NAME]  # no temporary file left behind


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "not_a_dict"])
def test_unreadable_state_file_names_the_file_and_what_to_do(tmp_path, damage):
    path = save_state_file({"queue": torch.arange(1000.0)}, tmp_path)
    data = Path(path).read_bytes()
    if damage == "not_a_dict":
        torch.save([1, 2], path)
    else:
        with open(path, "wb") as handle:
            handle.write({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x80\x02garbage"}[damage])
    with pytest.raises(ValueError) as caught:
        load_state_file(tmp_path)
    message = str(caught.value)
    assert path in message and "delete" in message and "earlier" in message


def test_config_comparison_refuses_label_changes_and_warns_for_others():
    saved = {"reward_mode": "binary", "correct_threshold": 0.5, "queue_batches": 2, "alpha": 0.1}
    with pytest.raises(ValueError, match=r"dipo_reward_mode='binary' when saved, 'graded' now.*delete /x"):
        check_resumed_config(saved, {**saved, "reward_mode": "graded"}, "/x", lambda k: f"dipo_{k}")
    with pytest.warns(UserWarning, match=r"correct_threshold: 0.5 -> 1.0"):  # binary: 1 is correct either way
        assert check_resumed_config(saved, {**saved, "correct_threshold": 1.0}, "/x") == ["correct_threshold"]
    with pytest.raises(ValueError, match=r"correct_threshold=0.5 when saved, 1.5 now"):
        check_resumed_config(saved, {**saved, "correct_threshold": 1.5}, "/x")
    graded = {**saved, "reward_mode": "graded"}
    with pytest.raises(ValueError, match=r"correct_threshold=0.5 when saved, 0.7 now"):
        check_resumed_config(graded, {**graded, "correct_threshold": 0.7}, "/x")
    with pytest.warns(UserWarning, match=r"alpha: 0.1 -> 0.3"):
        assert check_resumed_config(saved, {**saved, "alpha": 0.3}, "/x") == ["alpha"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_resumed_config(saved, dict(saved), "/x") == []
        assert check_resumed_config(None, dict(saved), "/x") == []


# ---------------------------------------------------------------- items 6, 14: resuming a TRL checkpoint
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model_dir):
    out = tmp_path_factory.mktemp("run")
    args = config(out, max_steps=1, save_strategy="steps", save_steps=1)
    trainer_for(args, model_dir).train()
    path = out / "checkpoint-1"
    assert (path / DIPO_STATE_NAME).exists()
    return path


def resume(tmp_path, model_dir, checkpoint, **overrides):
    args = config(tmp_path, max_steps=2, save_strategy="no", **overrides)
    trainer = trainer_for(args, model_dir)
    trainer.train(resume_from_checkpoint=str(checkpoint))
    return trainer


def test_resume_with_other_label_meaning_is_refused(tmp_path, model_dir, checkpoint):
    with pytest.raises(ValueError) as caught:
        resume(tmp_path, model_dir, checkpoint, dipo_reward_mode="graded", dipo_correct_threshold=0.7)
    message = str(caught.value)
    assert str(checkpoint / DIPO_STATE_NAME) in message
    assert "dipo_reward_mode='binary' when saved, 'graded' now" in message
    assert "dipo_correct_threshold=0.5 when saved, 0.7 now" in message and "delete" in message
    with pytest.raises(ValueError, match=r"dipo_queue_batches=2 when saved, 3 now"):
        resume(tmp_path, model_dir, checkpoint, dipo_queue_batches=3)


def test_resume_with_other_options_warns_and_keeps_the_queue(tmp_path, model_dir, checkpoint):
    with pytest.warns(UserWarning, match=r"changed DiPO options \(dipo_alpha: 0.1 -> 0.3, dipo_membership"):
        trainer = resume(tmp_path, model_dir, checkpoint, dipo_alpha=0.3, dipo_membership="all")
    assert trainer.dipo_log_history("queue_size")[-1] == 16  # the restored batch + the new one


def test_resume_with_dipo_off_warns_that_the_queue_is_ignored(tmp_path, model_dir, checkpoint):
    with pytest.warns(UserWarning, match=r"holds a DiPO PPL queue .* DiPO does not run .*preset='dapo'"):
        resume(tmp_path, model_dir, checkpoint, preset="dapo")


def test_resume_from_a_truncated_state_file_names_it(tmp_path, model_dir, checkpoint):
    damaged = tmp_path / "checkpoint-1"
    damaged.mkdir()
    for name in os.listdir(checkpoint):
        data = (checkpoint / name).read_bytes()
        (damaged / name).write_bytes(data[: len(data) // 2] if name == DIPO_STATE_NAME else data)
    with pytest.raises(ValueError, match=rf"DiPO state file {damaged / DIPO_STATE_NAME} cannot be read"):
        resume(tmp_path / "out", model_dir, damaged)


# ---------------------------------------------------------------- item 23: PEFT is part of the trl extra
def test_trl_extra_pins_peft():
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    extra = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]["trl"]
    peft = [req for req in extra if req.replace(" ", "").startswith("peft")]
    assert peft and ">=" in peft[0] and "<" in peft[0].split(">=")[1], peft  # a tested range (tests/test_trl_peft.py)
