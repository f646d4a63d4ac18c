"""Spec §6 BRR: hard / easy / normal groups, each membership rule, graded rewards, bad input."""

import math

import pytest
import torch

from dipo.core import GroupType, classify_groups, reallocate, reallocate_detailed, select_max_ppl

G = 4
TAU = 1.0


def t(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_hard_group_in_exploitation_space_rewards_the_max_ppl_response():
    result = reallocate(t(0, 0, 0, 0), t(0.1, 0.5, 0.3, 0.2), G, TAU)
    r, m = result.rewards, result.mask
    assert r.tolist() == [0, 1, 0, 0] and m.all()


def test_hard_group_in_exploration_space_is_left_alone():
    result = reallocate(t(0, 0, 0, 0), t(0.1, 1.5, 0.3, 0.2), G, TAU)  # max PPL above τ
    r, m = result.rewards, result.mask
    assert r.tolist() == [0, 0, 0, 0] and not m.any()


def test_easy_group_in_exploration_space_penalises_the_max_ppl_response():
    result = reallocate(t(1, 1, 1, 1), t(0.1, 0.2, 1.7, 0.3), G, TAU)
    r, m = result.rewards, result.mask
    assert r.tolist() == [1, 1, 0, 1] and m.all()


def test_easy_group_in_exploitation_space_is_left_alone():
    result = reallocate(t(1, 1, 1, 1), t(0.1, 0.2, 0.7, 0.3), G, TAU)
    r, m = result.rewards, result.mask
    assert r.tolist() == [1, 1, 1, 1] and not m.any()


def test_normal_groups_never_change():
    result = reallocate(t(1, 0, 1, 0), t(3.0, 0.1, 0.2, 0.3), G, TAU)
    r, m = result.rewards, result.mask
    assert r.tolist() == [1, 0, 1, 0] and not m.any()


def test_several_groups_at_once():
    rewards = t(0, 0, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1)
    s = t(0.1, 0.9, 0.2, 0.3, 0.1, 1.2, 1.9, 0.2, 0.1, 0.2, 0.3, 0.4)
    out = reallocate(rewards, s, G, TAU)
    assert out.rewards.tolist() == [0, 1, 0, 0, 1, 1, 0, 1, 0, 1, 0, 1]
    assert out.group_types.tolist() == [GroupType.HARD, GroupType.EASY, GroupType.NORMAL]
    assert out.selected.tolist() == [1, 2, 3]
    assert out.hard.tolist() == [True, False, False] and out.easy.tolist() == [False, True, False]
    assert out.mask.tolist() == [True] * 8 + [False] * 4


def test_ties_take_the_lowest_index_and_nan_is_never_selected():
    assert select_max_ppl(t(0.5, 0.5, 0.1, 0.5), G).tolist() == [0]
    assert select_max_ppl(t(float("nan"), 0.2, 0.3, 0.1), G).tolist() == [2]
    assert select_max_ppl(t(*[float("nan")] * 4), G).tolist() == [-1]
    m = reallocate(t(0, 0, 0, 0), t(*[float("nan")] * 4), G, TAU).mask
    assert not m.any()


@pytest.mark.parametrize(
    ("membership", "s", "expected"),
    [
        # easy group, max PPL (1.5) above τ but the others below: "selected" yes, "all" no, "mean" (0.525) no
        ("selected", (0.1, 0.2, 1.5, 0.3), True),
        ("all", (0.1, 0.2, 1.5, 0.3), False),
        ("mean", (0.1, 0.2, 1.5, 0.3), False),
        # every response above τ: all rules agree
        ("all", (1.1, 1.2, 1.5, 1.3), True),
        ("mean", (1.1, 1.2, 1.5, 1.3), True),
        # mean above τ (1.25) though two responses below
        ("mean", (0.5, 0.5, 3.0, 1.0), True),
        ("all", (0.5, 0.5, 3.0, 1.0), False),
    ],
)
def test_membership_rules_on_an_easy_group(membership, s, expected):
    m = reallocate(t(1, 1, 1, 1), t(*s), G, TAU, membership=membership).mask
    assert bool(m.any()) is expected


@pytest.mark.parametrize(
    ("membership", "s", "expected"),
    [
        ("selected", (0.1, 0.2, 0.5, 0.3), True),
        ("all", (0.1, 0.2, 0.5, 0.3), True),
        ("mean", (0.1, 0.2, 0.5, 0.3), True),
        ("selected", (0.1, 0.2, 1.5, 0.3), False),  # max above τ: not all in EiS
        ("mean", (0.1, 0.2, 1.5, 0.3), True),  # mean 0.525 < τ
        ("all", (0.1, 0.2, 1.5, 0.3), False),
    ],
)
def test_membership_rules_on_a_hard_group(membership, s, expected):
    m = reallocate(t(0, 0, 0, 0), t(*s), G, TAU, membership=membership).mask
    assert bool(m.any()) is expected


def test_direction_switches_for_ablations():
    rewards, s = t(0, 0, 0, 0, 1, 1, 1, 1), t(0.1, 0.9, 0.2, 0.3, 0.1, 1.2, 1.9, 0.2)
    m = reallocate(rewards, s, G, TAU, reallocate_easy=False).mask
    assert m.tolist() == [True] * 4 + [False] * 4
    m = reallocate(rewards, s, G, TAU, reallocate_hard=False).mask
    assert m.tolist() == [False] * 4 + [True] * 4


def test_nan_threshold_means_no_reallocation():
    m = reallocate(t(0, 0, 0, 0), t(0.1, 0.2, 0.3, 0.4), G, math.nan).mask
    assert not m.any()


def test_graded_rewards_move_by_delta():
    rewards = t(0.3, 0.3, 0.3, 0.3, 2.0, 2.0, 2.0, 2.0, 0.0, 1.0, 2.0, 3.0)
    s = t(0.1, 0.9, 0.2, 0.3, 0.1, 1.2, 1.9, 0.2, 0.1, 0.2, 0.3, 0.4)
    out = reallocate(rewards, s, G, TAU, reward_mode="graded", correct_threshold=1.0, graded_delta=0.5)
    assert out.group_types.tolist() == [GroupType.HARD, GroupType.EASY, GroupType.NORMAL]
    assert out.rewards.tolist() == pytest.approx([0.3, 0.8, 0.3, 0.3, 2.0, 2.0, 1.5, 2.0, 0.0, 1.0, 2.0, 3.0])
    # default delta: the batch's reward range (3.0)
    out = reallocate(rewards, s, G, TAU, reward_mode="graded", correct_threshold=1.0)
    assert out.rewards[1].item() == pytest.approx(3.3)


def test_graded_zero_variance_tolerance_scales_with_rewards():
    rewards = t(100.0, 100.0 + 5e-5, 100.0, 100.0)  # spread 5e-5 <= 1e-6 * 100
    assert classify_groups(rewards, torch.ones(4, dtype=torch.bool), G, 50.0).tolist() == [GroupType.EASY]
    rewards = t(1.0, 1.0 + 5e-5, 1.0, 1.0)  # spread 5e-5 > 1e-6 * 1
    assert classify_groups(rewards, torch.ones(4, dtype=torch.bool), G, 0.5).tolist() == [GroupType.NORMAL]


def test_group_with_invalid_row_is_never_extreme():
    rewards = t(0, 0, float("nan"), 0)
    valid = torch.tensor([True, True, False, True])
    result = reallocate(rewards, t(0.1, 0.2, 0.3, 0.4), G, TAU, valid=valid)
    r, m = result.rewards, result.mask
    assert not m.any() and math.isnan(r[2])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rewards": t(0, 0, 0)}, "shape"),
        ({"group_size": 3}, "not divisible"),
        ({"group_size": 1}, ">= 2"),
        ({"rewards": t(0, 0.5, 0, 0)}, "binary"),
        ({"rewards": t(0, float("nan"), 0, 0)}, "not finite"),
        ({"rewards": t(0, float("inf"), 0, 0)}, "not finite"),
        ({"log_ppl": t(0.1, float("inf"), 0.1, 0.1)}, "finite"),
        ({"membership": "most"}, "membership"),
        ({"reward_mode": "fuzzy"}, "reward_mode"),
    ],
)
def test_bad_input_raises_clear_errors(kwargs, match):
    args = {"rewards": t(0, 0, 0, 0), "log_ppl": t(0.1, 0.2, 0.3, 0.4), "group_size": G, "threshold": TAU}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        reallocate(**args)


# --- selection="random" control (same groups as the max-PPL rule, a uniformly random valid response moves) ---------
def test_random_selection_hand_case_moves_the_drawn_response_of_the_same_groups():
    # Groups: hard in EiS (reallocated), normal (untouched), easy in ErS (reallocated); row 9 has no valid PPL.
    rewards = t(0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1)
    log_ppl = t(0.1, 0.5, 0.3, 0.2, 3.0, 0.1, 0.2, 0.3, 0.1, math.nan, 1.7, 0.3)
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand((3, G), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    noise[2, 1] = -1.0  # the invalid row is never drawn
    expected = noise.argmax(1).tolist()
    out = reallocate(rewards, log_ppl, G, TAU, selection="random", generator=gen)
    assert out.hard.tolist() == [True, False, False] and out.easy.tolist() == [False, False, True]
    assert out.selected.tolist() == expected
    want = rewards.clone().view(3, G)
    want[0, expected[0]] = 1.0
    want[2, expected[2]] = 0.0
    assert out.rewards.tolist() == want.view(-1).tolist()
    assert out.mask.tolist() == [True] * 4 + [False] * 4 + [True] * 4


def test_random_selection_is_uniform_over_valid_rows_and_never_picks_invalid_ones():
    log_ppl = t(*([0.1, math.nan, 0.3, 0.2] * 2000))
    picks = reallocate(
        torch.zeros(8000), log_ppl, G, TAU, selection="random", generator=torch.Generator().manual_seed(1)
    ).selected
    counts = torch.bincount(picks, minlength=G).tolist()
    assert counts[1] == 0
    assert all(abs(c - 2000 / 3) < 100 for c in (counts[0], counts[2], counts[3]))  # ±~4.7 sd of a binomial


def test_max_ppl_selection_is_the_default_and_random_is_validated():
    out = reallocate(t(0, 0, 0, 0), t(0.1, 0.5, 0.3, 0.2), G, TAU)
    assert out.selected.tolist() == [1]
    with pytest.raises(ValueError, match="selection"):
        reallocate(t(0, 0, 0, 0), t(0.1, 0.5, 0.3, 0.2), G, TAU, selection="maxppl")


def test_reallocate_detailed_is_a_deprecated_alias_of_reallocate():
    rewards, s = t(0, 0, 0, 0, 1, 1, 1, 1), t(0.1, 0.9, 0.2, 0.3, 0.1, 1.2, 1.9, 0.2)
    with pytest.warns(DeprecationWarning, match="reallocate"):
        old = reallocate_detailed(rewards, s, G, TAU, membership="all")
    new = reallocate(rewards, s, G, TAU, membership="all")
    assert torch.equal(old.rewards, new.rewards) and torch.equal(old.mask, new.mask)
    assert torch.equal(old.selected, new.selected) and torch.equal(old.hard, new.hard)
