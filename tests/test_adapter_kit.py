"""The adapter kit (issue 17 item 2): one log-prob source policy, one verifier-reward composition, one state format,
one version check, one metric set — checked by hand, without a framework."""

from __future__ import annotations

import warnings

import pytest
import torch

from dipo.core import DiPO, DiPOCoreConfig
from dipo.integrations._kit import (
    StepInputs,
    choose_log_probs,
    compose_verifier_rewards,
    core_state,
    restore_dipo_state,
    run_step,
    save_dipo_state,
    step_metrics,
)
from dipo.integrations._kit import logprobs as kit_logprobs
from dipo.integrations._kit.state import DIPO_STATE_NAME, STATE_FORMAT, load_state_file, save_state_file
from dipo.integrations._kit.step import ADAPTER_METRICS
from dipo.integrations._kit.versions import check_version


# ----------------------------------------------------------------------------------------------- log-prob source
def test_legacy_verl_names_map_to_the_shared_ones_and_warn_once(monkeypatch):
    monkeypatch.setattr(kit_logprobs, "_warned", set())
    with pytest.warns(FutureWarning, match=r"log_probs='old_log_probs' is deprecated, use log_probs='old'"):
        assert kit_logprobs.ppl_source_option("old_log_probs", "log_probs") == "old"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second use of the same name is silent
        assert kit_logprobs.ppl_source_option("old_log_probs", "log_probs") == "old"
    with pytest.warns(FutureWarning, match=r"use log_probs='sampling'"):
        assert kit_logprobs.ppl_source_option("rollout_log_probs", "log_probs") == "sampling"


def test_unknown_or_unsupported_source_names_the_option():
    with pytest.raises(ValueError, match=r"unknown dipo_ppl_source='vllm'; choose one of 'auto', 'old'"):
        kit_logprobs.ppl_source_option("vllm", "dipo_ppl_source")
    with pytest.raises(ValueError, match=r"unknown algorithm.dipo.log_probs='forward'"):
        kit_logprobs.ppl_source_option("forward", "algorithm.dipo.log_probs", ("auto", "old", "sampling"))


def test_auto_prefers_old_then_sampling_then_forward():
    old, sampling, extra = torch.zeros(1), torch.ones(1), torch.full((1,), 2.0)
    forward = lambda: extra  # noqa: E731
    assert choose_log_probs("auto", {"old": old, "sampling": sampling}, forward) == (old, "old")
    assert choose_log_probs("auto", {"old": None, "sampling": sampling}, forward) == (sampling, "sampling")
    assert choose_log_probs("auto", {"old": None, "sampling": None}, forward) == (extra, "forward")
    assert choose_log_probs("auto", {"old": None, "sampling": None}) == (None, "sampling")  # verl: no extra pass
    assert choose_log_probs("forward", {"old": old, "sampling": sampling}, forward) == (extra, "forward")
    assert choose_log_probs("sampling", {"old": old, "sampling": None}, forward) == (None, "sampling")  # forced


# ----------------------------------------------------------------------------------------------- verifier reward
def test_verifier_reward_is_the_weighted_sum_and_nan_rows_are_invalid():
    columns = torch.tensor([[1.0, 0.5], [float("nan"), 1.0], [float("nan"), float("nan")]])
    out = compose_verifier_rewards(columns, torch.tensor([1.0, 2.0]))
    assert out.rewards.tolist() == [2.0, 2.0, 0.0] and out.valid.tolist() == [True, True, False]


def test_overlong_shaping_is_taken_out_of_the_score_or_left_out_as_a_column():
    score = torch.tensor([1.0, 1.0 - 0.3, 0.0 - 0.5, 0.0], dtype=torch.float32)  # verl: penalty folded in
    penalty = torch.tensor([0.0, -0.3, -0.5, 0.0], dtype=torch.float32)
    folded = compose_verifier_rewards(score, penalty=penalty, in_score=True)
    assert folded.rewards.tolist() == [1.0, 1.0, 0.0, 0.0]  # float32 rounding snapped back to 0/1
    assert folded.frac_penalised == 0.5
    separate = compose_verifier_rewards(torch.tensor([1.0, 1.0, 0.0, 0.0]), penalty=penalty)  # TRL: its own column
    assert separate.rewards.tolist() == [1.0, 1.0, 0.0, 0.0] and separate.frac_penalised == 0.5
    graded = compose_verifier_rewards(torch.tensor([0.75 - 0.25]), penalty=torch.tensor([-0.25]), in_score=True)
    assert graded.rewards.tolist() == [0.75]


# ----------------------------------------------------------------------------------------------- state format
def _core_with_queue() -> DiPO:
    core = DiPO(DiPOCoreConfig())
    core.step(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0.1, 0.9, 0.2, 0.3]), 2)
    return core


def test_state_roundtrip_in_the_shared_format(tmp_path):
    core = _core_with_queue()
    save_dipo_state(core, tmp_path, "old", 7)
    payload = load_state_file(tmp_path)
    assert payload["format"] == STATE_FORMAT and payload["ppl_source"] == "old" and payload["global_step"] == 7
    assert set(core.state_dict()) <= set(payload)  # the core's keys at the top level, as TRL always wrote them
    fresh = DiPO(DiPOCoreConfig())
    assert restore_dipo_state(fresh, tmp_path) == str(tmp_path / DIPO_STATE_NAME)
    assert fresh.queue.values()[0].tolist() == core.queue.values()[0].tolist()
    assert restore_dipo_state(fresh, tmp_path / "absent") is None


@pytest.mark.parametrize(
    "legacy",
    [
        lambda core: core.state_dict(),  # TRL before the kit: the core's state dict itself
        lambda core: {"dipo": core.state_dict(), "log_probs": "old_log_probs", "global_step": 3},  # verl before
    ],
    ids=["trl", "verl"],
)
def test_earlier_state_formats_still_load(tmp_path, legacy):
    core = _core_with_queue()
    save_state_file(legacy(core), tmp_path)
    fresh = DiPO(DiPOCoreConfig())
    restore_dipo_state(fresh, tmp_path)
    assert len(fresh.queue) == len(core.queue) == 4


def test_a_dict_that_is_no_state_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"dipo_state.pt is not a DiPO state \(it has no 'queue'\)"):
        core_state({"weights": 1}, str(tmp_path / DIPO_STATE_NAME))


# ----------------------------------------------------------------------------------------------- version check
def test_version_check_refuses_unsupported_and_warns_outside_the_tested_range():
    args = (("1", "2"), ("1.14", "1.17"), "trl>=1.14,<1.17", "private hooks")
    assert check_version("trl", "1.16.0", *args).major == 1
    with pytest.raises(ImportError, match=r"supports trl >= 1, < 2 .* pip install 'trl>=1.14,<1.17'"):
        check_version("trl", "2.0.0", *args)
    with pytest.warns(UserWarning, match=r"trl 1.20.1 is outside the tested range \[1.14, 1.17\)"):
        check_version("trl", "1.20.1", *args)
    with pytest.raises(ImportError, match=r"cannot parse"):
        check_version("trl", "not-a-version", *args)
    verl = (("0.9", None), ("0.9.1", "0.9.2"), "dipo[verl]", "verl internals")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_version("verl", "0.9.1.post1", *verl)
    with pytest.raises(ImportError, match=r"supports verl >= 0.9 "):
        check_version("verl", "0.8.5", *verl)


# ----------------------------------------------------------------------------------------------- step and metrics
def test_one_metric_set_built_from_the_step_result():
    core = DiPO(DiPOCoreConfig(judgment=False))
    verifier = compose_verifier_rewards(torch.tensor([0.0, 0.0, 1.0, 0.0]), penalty=torch.tensor([0.0, -1.0, 0, 0]))
    result = run_step(core, StepInputs(verifier, torch.tensor([0.2, 0.9, 0.3, float("nan")]), 2, inactive_rows=3))
    metrics = step_metrics(result)
    expected = {f"dipo/{k}" for k in result.output.metrics()} | {f"dipo/{k}" for k in ADAPTER_METRICS}
    assert set(metrics) == expected
    assert metrics["dipo/num_groups"] == 2 and metrics["dipo/group_size"] == 2 and metrics["dipo/inactive_rows"] == 3
    assert metrics["dipo/frac_rows_overlong_penalty"] == 0.25 and metrics["dipo/frac_rows_no_ppl"] == 0.25
    assert metrics["dipo/advantage_delta_abs_mean"] == pytest.approx(float(result.delta.abs().mean()))


def test_the_kit_imports_no_framework():
    """torch, the standard library, dipo.core and the kit itself (``versions.py`` also ``packaging``)."""
    import ast
    import sys
    from pathlib import Path

    import dipo.integrations._kit as kit

    allowed = {"torch", "dipo", "__future__"} | set(sys.stdlib_module_names)
    for path in Path(kit.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        extra = {"packaging"} if path.name == "versions.py" else set()
        bad = {n for n in names if n.split(".")[0] not in allowed | extra}
        bad |= {
            n for n in names if n.startswith("dipo.") and not n.startswith(("dipo.core", "dipo.integrations._kit"))
        }
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_dynamic_sampling_metrics_share_one_builder():
    from dipo.integrations._kit import DS_METRICS, ds_metrics

    metrics = ds_metrics(2.5, 6, 3, 1)
    assert list(metrics) == list(DS_METRICS) and list(metrics.values()) == [2.5, 6.0, 3.0, 1.0]


def test_kept_groups_marks_the_groups_kept_only_by_brr():
    from dipo.integrations._kit.dynamic_sampling import kept_groups

    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # groups of 2: all right, mixed, all wrong
    keep, by_brr = kept_groups(rewards, 2)
    assert keep.tolist() == [False, True, False] and by_brr.tolist() == [False] * 3
    keep, by_brr = kept_groups(rewards, 2, torch.tensor([True, False, False]))
    assert keep.tolist() == [True, True, False] and by_brr.tolist() == [True, False, False]
    keep, by_brr = kept_groups(rewards, 2, torch.tensor([True, False, False]), keep_reallocated=False)
    assert keep.tolist() == [False, True, False] and by_brr.tolist() == [False] * 3


# ----------------------------------------------------------------------------------------------- reward functions
def test_reward_return_values_accepted_and_refused():
    import numpy as np

    from dipo.integrations._kit.reward_funcs import check_reward_output

    ok = [1.0, None, True, 0, np.float32(0.5), np.int64(1), np.bool_(False), torch.tensor(1.0)]
    assert check_reward_output("f", ok) is ok
    assert check_reward_output("f", (r for r in [1.0, 0.0])) == [1.0, 0.0]  # a generator is read once
    array = np.array([1.0, 0.0])
    assert check_reward_output("f", array) is array
    check_reward_output("f", torch.tensor([True, False]))
    for bad, match in [("10", "returned a str"), (1.0, "returned a float"), ([[1.0]], r"returned \[1.0\] \(list\)")]:
        with pytest.raises(TypeError, match=rf"^X: reward function 'f' {match}"):
            check_reward_output("f", bad, "X: ")
    with pytest.raises(TypeError, match=r"returned 'a' \(str\) for completion 1"):
        check_reward_output("f", np.array([1.0, "a"], dtype=object))


def test_checked_reward_funcs_keep_their_kind_and_name():
    import asyncio
    import functools

    from dipo.integrations._kit.reward_funcs import checked_reward_func, is_async_callable

    def sync_reward(completions, scale):
        """doc"""
        return [scale] * len(completions)

    async def async_reward(completions, scale):
        return [str(scale)] * len(completions)

    checked = checked_reward_func(functools.partial(sync_reward, scale=1.0), "mine", "T: ")
    assert checked(["a", "b"]) == [1.0, 1.0] and checked.__name__ == "mine" and not is_async_callable(checked)
    assert checked_reward_func(checked, "other") is checked  # wrapped once
    checked_async = checked_reward_func(functools.partial(async_reward, scale=1.0), "later", "T: ")
    assert is_async_callable(checked_async) and is_async_callable(functools.partial(async_reward, scale=2))
    with pytest.raises(TypeError, match=r"^T: reward function 'later' returned '1.0' \(str\) for completion 0"):
        asyncio.run(checked_async(["a"]))


def test_dapo_overlong_penalty_by_hand():
    """max 10 tokens, buffer 4, factor 0.5: no penalty up to 6 tokens, then −0.5 · (length − 6) / 4."""
    from dipo.integrations._kit.rewards import OverlongPenalty

    penalty = OverlongPenalty(max_resp_len=10, buffer_len=4, penalty_factor=0.5)
    assert penalty(torch.tensor([5, 6, 8, 10])).tolist() == [0.0, 0.0, -0.25, -0.5]
    assert penalty(torch.tensor([8])).dtype == torch.float64


# ----------------------------------------------------------------------------------------------- dynamic sampling
def test_select_groups_takes_kept_groups_in_generation_order_and_drops_the_surplus():
    from dipo.integrations._kit.dynamic_sampling import select_groups

    keeps = [torch.tensor([True, False, False, True]), torch.tensor([False, True, True, True])]
    selection = select_groups(keeps, 4)
    assert selection.kept == [(0, 0), (0, 3), (1, 1), (1, 2)] and selection.fillers == []  # (1, 3) is surplus
    short = select_groups([torch.tensor([False, True, False, False])], 4)
    assert short.kept == [(0, 1)] and short.fillers == [(0, 0), (0, 2), (0, 3)]


def test_queue_kept_groups_replaces_the_rounds_by_the_kept_groups():
    """An earlier batch in the queue, two rounds of two groups of 2 stepped; kept: group 1 of round 0, group 0 of
    round 1 -> the queue holds the earlier batch and one batch of those 4 responses."""
    from dipo.integrations._kit.dynamic_sampling import queue_kept_groups

    core = DiPO(DiPOCoreConfig(queue_batches=4))
    core.queue.push(torch.tensor([0.5, 0.6], dtype=torch.float64), torch.tensor([True, False]))
    saved = core.queue.state_dict()
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0])
    rounds = [core.step(rewards, torch.tensor([0.1, 0.2, 0.3, 0.4]), 2)]
    rounds.append(core.step(rewards, torch.tensor([1.1, 1.2, 1.3, 1.4]), 2))
    assert core.queue.num_batches == 3
    queue_kept_groups(core, saved, rounds, [(0, 1), (1, 0)], 2)
    log_ppl, correct = core.queue.values()
    assert core.queue.num_batches == 2
    assert log_ppl.tolist() == pytest.approx([0.5, 0.6, 0.3, 0.4, 1.1, 1.2])
    assert correct.tolist() == [True, False, True, True, True, False]
    queue_kept_groups(core, saved, rounds, [], 2)  # nothing kept: only the earlier batch
    assert core.queue.num_batches == 1


def test_run_step_names_the_adapter_in_input_errors():
    verifier = compose_verifier_rewards(torch.tensor([1.0, 0.5, 0.0, 1.0]))  # 0.5: not binary
    inputs = StepInputs(verifier, torch.tensor([0.2, 0.9, 0.3, 0.4]), 2)
    with pytest.raises(ValueError, match=r"^Where: .*binary.* Fix it\.$"):
        run_step(DiPO(DiPOCoreConfig()), inputs, "Where: ", " Fix it.")
    with pytest.raises(ValueError, match=r"^(?!Where)"):  # no context given: the core's own error
        run_step(DiPO(DiPOCoreConfig()), inputs)


def test_verifier_reward_problems_name_the_column_by_hand():
    from dipo.integrations._kit.rewards import infinite_verifier_value, non_binary_verifier_reward

    nan, inf = float("nan"), float("inf")
    columns = torch.tensor([[1.0, nan], [0.0, inf]])
    expected = "reward function 'fmt' returned inf for completion 1 of the batch"
    assert infinite_verifier_value(columns, ["acc", "fmt"]) == expected
    assert infinite_verifier_value(columns[:1], ["acc", "fmt"]) is None  # NaN: skipped, not infinite
    columns = torch.tensor([[1.0, 0.0], [1.0, 0.5], [0.0, 0.5], [nan, nan]])
    weights = torch.tensor([1.0, 2.0])
    verifier = compose_verifier_rewards(columns, weights)  # R = 1, 2, 1, 0 (last row invalid)
    assert non_binary_verifier_reward(columns, weights, verifier.rewards, verifier.valid, ["acc", "fmt"]) == (
        "completion 1 of the batch gets 2 from acc=1, fmt=0.5 (weight 2) (1 such completions; reward function(s) "
        "['fmt'] returned values outside {0, 1})"
    )
    binary = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    summed = compose_verifier_rewards(binary)  # R = 2, 1: every column is 0/1, their sum is not
    problem = non_binary_verifier_reward(binary, torch.ones(2), summed.rewards, summed.valid, ["a", "b"])
    assert problem.endswith("each function is 0/1 but their weighted sum is not)")
    ok = compose_verifier_rewards(torch.tensor([1.0, 0.0]))
    assert non_binary_verifier_reward(torch.tensor([[1.0], [0.0]]), torch.ones(1), ok.rewards, ok.valid, ["a"]) is None


def test_free_registry_slot_replaces_only_dipos_own_entry():
    import types

    from dipo.integrations._kit.registry import free_registry_slot

    def entry():
        pass

    reloaded = types.FunctionType(entry.__code__, {}, "entry")  # same module and qualified name, another object
    reloaded.__module__, reloaded.__qualname__ = entry.__module__, entry.__qualname__
    registry = {"dipo": reloaded}
    free_registry_slot(registry, "dipo", entry, "estimator")
    assert registry == {}
    free_registry_slot(registry, "dipo", entry, "estimator")  # nothing there: nothing to do
    registry = {"dipo": print}
    with pytest.raises(ValueError, match=r"^estimator 'dipo' is already registered to .*not DiPO's"):
        free_registry_slot(registry, "dipo", entry, "estimator")
    assert registry == {"dipo": print}


def test_the_filters_threshold_follows_the_runs_threshold_rule():
    """Regression: the kit's read-only τ* (verl's dynamic-sampling filter) used the paper's rule whatever
    ``threshold_rule`` said. Queue as in tests/test_core_dipo.py: "error" cuts at 0.85, "balanced" at 0.35."""
    from dipo.integrations._kit.dynamic_sampling import reallocation_threshold

    s = torch.arange(1, 11, dtype=torch.float64) / 10
    core = DiPO(DiPOCoreConfig(judgment=False, threshold_rule="balanced"))
    core.queue.push(s, torch.tensor([1, 1, 1, 0, 1, 1, 1, 1, 0, 1]).bool())
    assert reallocation_threshold(core) == pytest.approx(0.35)
