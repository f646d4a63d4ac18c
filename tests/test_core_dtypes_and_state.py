"""Issue 16, items 2–3: dtype-safe core (float64 computation, NaN log-probs, devices) and atomic state."""

from __future__ import annotations

import math

import pytest
import torch

from dipo.core import (
    DiPO,
    DiPOCoreConfig,
    GroupType,
    PPLQueue,
    group_advantages,
    groups_to_keep,
    reallocate,
    sequence_log_ppl,
)

S8 = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], dtype=torch.float64)


def graded(scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Two groups of 4: a mixed group 0/scale/0/scale and a constant (hard) group."""
    return torch.tensor([0, scale, 0, scale, 0, 0, 0, 0], dtype=torch.float64).to(dtype)


# ---------------------------------------------------------------- item 2: float64 computation
@pytest.mark.parametrize(("scale", "dtype"), [(300.0, torch.float16), (1e20, torch.float32), (1e300, torch.float64)])
def test_graded_rewards_at_the_edge_of_their_dtype_give_the_scale_free_advantages(scale, dtype):
    # Old code: float16 0/300 and float32 0/1e20 overflowed the sum of squares (all-zero advantages); float64 0/1e300
    # crashed in BRR ("value cannot be converted to type float without overflow").
    cfg = DiPOCoreConfig(reward_mode="graded", correct_threshold=scale / 2, judgment=False)
    out = DiPO(cfg).step(graded(scale, dtype), S8, 4)
    expected = DiPO(DiPOCoreConfig(reward_mode="graded", judgment=False)).step(graded(1.0, torch.float64), S8, 4)
    assert out.advantages.dtype == dtype
    torch.testing.assert_close(out.advantages.double(), expected.advantages, atol=1e-3, rtol=1e-3)
    assert abs(float(out.advantages[1])) > 0.8
    standalone = group_advantages(graded(scale, dtype), 4)
    assert standalone.dtype == dtype and abs(float(standalone[1]) - math.sqrt(3) / 2) < 1e-3


def test_float64_rewards_beyond_float32_range_are_reallocated_by_the_range():
    rewards = graded(1e300, torch.float64)  # group 1 is hard; its max-PPL row (index 7) lies below τ = 1.0
    result = reallocate(rewards, S8, 4, 1.0, reward_mode="graded", correct_threshold=5e299)
    assert result.hard.tolist() == [False, True]
    assert result.rewards[7].item() == 1e300 and result.rewards[4:7].tolist() == [0, 0, 0]


def test_the_power_of_two_scaling_is_exact_for_ordinary_rewards():
    r = torch.tensor([1.0, 0, 0, 0, 0, 0, 0, 0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    manual = r.view(-1, 4)
    manual = (manual - manual.mean(1, keepdim=True)) / (manual.std(1, keepdim=True) + 1e-4)
    assert torch.equal(group_advantages(r, 4), manual.view(-1))


def test_large_integer_rewards_keep_their_exact_values():
    # 2**24 and 2**24 + 1 are equal in float32 (the old default dtype of integer rewards): the group looked extreme.
    rewards = torch.tensor([2**24, 2**24 + 1, 2**24, 2**24 + 1], dtype=torch.int64)
    assert groups_to_keep(rewards, 4, zero_variance_tol=0.0).tolist() == [True]
    cfg = DiPOCoreConfig(reward_mode="graded", correct_threshold=1.0, zero_variance_tol=0.0, judgment=False)
    out = DiPO(cfg).step(rewards, S8[:4], 4)
    assert out.group_types.tolist() == [GroupType.NORMAL] and out.advantages.abs().min() > 0.8


def test_correct_threshold_is_compared_in_the_rewards_dtype():
    # float32(0.7) = 0.69999998... < 0.7 in float64: the threshold is rounded to float32 as well, as before.
    rewards = torch.tensor([0.7, 0.7, 0.0, 0.0], dtype=torch.float32)
    out = DiPO(DiPOCoreConfig(reward_mode="graded", correct_threshold=0.7, judgment=False)).step(rewards, S8[:4], 2)
    assert out.correct.tolist() == [True, True, False, False]
    assert out.group_types.tolist() == [GroupType.EASY, GroupType.HARD]


def test_a_result_beyond_the_rewards_dtype_is_an_error_not_inf():
    rewards = torch.tensor([60000.0, 60000.0], dtype=torch.float16)  # a hard group; 60000 + delta does not fit
    with pytest.raises(ValueError, match=r"exceed the range of the rewards' dtype torch\.float16"):
        reallocate(rewards, S8[:2], 2, 1.0, reward_mode="graded", correct_threshold=1e5, graded_delta=60000.0)


# ---------------------------------------------------------------- item 2: NaN log-probs, devices
def test_nan_log_prob_at_a_counted_token_is_refused_naming_the_row():
    logps = torch.tensor([[-1.0, -1.0], [-1.0, float("nan")], [float("nan"), -2.0]])
    mask = torch.tensor([[1, 1], [1, 1], [0, 1]])
    with pytest.raises(ValueError, match=r"token_logps\[1, 1\] is NaN at a counted token .*1 row\(s\)"):
        sequence_log_ppl(logps, mask)
    mask[1, 1] = 0  # NaN at masked positions stays harmless
    assert sequence_log_ppl(logps, mask).tolist() == [1.0, 1.0, 2.0]


def meta(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, device="meta")


@pytest.mark.parametrize(
    "call",
    [
        lambda r, s: DiPO().step(r, meta(s), 4),
        lambda r, s: DiPO().step(r, s, 4, valid=meta(torch.ones(8, dtype=torch.bool))),
        lambda r, s: DiPO().step(r, s, 4, token_counts=meta(s)),
        lambda r, s: group_advantages(r, 4, valid=meta(torch.ones(8, dtype=torch.bool))),
        lambda r, s: reallocate(r, meta(s), 4, 0.5),
        lambda r, s: groups_to_keep(r, 4, valid=meta(torch.ones(8, dtype=torch.bool))),
        lambda r, s: sequence_log_ppl(s.view(2, 4), meta(s.view(2, 4))),
        lambda r, s: PPLQueue().push(s, meta(r.bool())),
    ],
)
def test_device_mismatch_names_both_devices(call):
    with pytest.raises(ValueError, match=r"on cpu.* on meta|on meta.* on cpu"):
        call(graded(1.0, torch.float32), S8)


# ---------------------------------------------------------------- item 3: atomic state, empty batches
def filled_dipo() -> DiPO:
    dipo = DiPO(DiPOCoreConfig(selection="random"))
    dipo.step(graded(1.0, torch.float32), S8, 4)
    dipo.step(graded(1.0, torch.float32), S8 + 1, 4)
    return dipo


def test_dipo_load_state_dict_is_atomic_on_a_bad_generator_state():
    # Old code replaced the queue, then failed on the generator state: half-loaded object.
    dipo = filled_dipo()
    before_queue, before_gen = dipo.queue.state_dict(), dipo.generator.get_state()
    other = DiPO(DiPOCoreConfig(selection="random"))
    other.step(graded(1.0, torch.float32), S8 + 5, 4)
    bad = {**other.state_dict(), "generator": torch.zeros(3, dtype=torch.uint8)}
    with pytest.raises(ValueError, match=r"'generator' is not a CPU torch\.Generator state"):
        dipo.load_state_dict(bad)
    after = dipo.queue.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(after["log_ppl"], before_queue["log_ppl"], strict=True))
    assert torch.equal(dipo.generator.get_state(), before_gen)
    dipo.load_state_dict(other.state_dict())  # a good state still loads
    assert len(dipo.queue) == 8


@pytest.mark.parametrize(
    "corrupt",
    [
        {"max_batches": "2"},
        {"log_ppl": torch.zeros(2, 3), "correct": torch.zeros(2, 3)},
        {"log_ppl": [torch.zeros(2), ["x", "y"]], "correct": [torch.zeros(2), torch.zeros(2)]},
    ],
)
def test_queue_load_state_dict_refuses_corrupt_parts_and_keeps_its_contents(corrupt):
    dipo = filled_dipo()
    state = {**dipo.queue.state_dict(), **corrupt}
    before = dipo.queue.values()
    with pytest.raises(ValueError, match="PPL queue state"):
        dipo.queue.load_state_dict(state)
    with pytest.raises(ValueError, match="PPL queue state"):
        dipo.load_state_dict({**dipo.state_dict(), "queue": state})
    after = dipo.queue.values()
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


def test_an_empty_batch_is_skipped_and_never_evicts_real_data():
    queue = PPLQueue(2)
    queue.push(S8[:4], torch.tensor([True, False, True, False]))
    queue.push(S8[4:], torch.tensor([False, False, True, True]))
    before = queue.values()
    assert queue.push(torch.full((4,), math.nan), torch.ones(4, dtype=torch.bool)) is False
    assert queue.push(torch.empty(0), torch.empty(0, dtype=torch.bool)) is False
    after = queue.values()
    assert queue.num_batches == 2 and torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])


def test_a_step_without_valid_rows_keeps_the_queue_and_tau():
    dipo = filled_dipo()
    tau = dipo.step(graded(1.0, torch.float32), S8 + 1, 4).threshold
    size = len(dipo.queue)
    out = dipo.step(graded(1.0, torch.float32), S8, 4, valid=torch.zeros(8, dtype=torch.bool))
    assert len(dipo.queue) == size and out.queue_size == size and out.threshold == tau
