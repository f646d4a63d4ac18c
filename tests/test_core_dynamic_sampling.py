"""DiPO-aware dynamic sampling filter (spec §7; docs/algorithm.md "Dynamic sampling"): hand-computed cases."""

import pytest
import torch

from dipo.core import DiPO, DiPOCoreConfig, groups_to_keep


def test_plain_dapo_filter_drops_zero_variance_groups():
    # G = 2: [0,0] hard, [1,0] mixed, [1,1] easy, [0,1] mixed.
    r = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    assert groups_to_keep(r, 2).tolist() == [False, True, False, True]


def test_reallocated_groups_are_kept_unless_switched_off():
    r = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    realloc = torch.tensor([True, False, False, False])
    assert groups_to_keep(r, 2, realloc).tolist() == [True, True, False, True]
    assert groups_to_keep(r, 2, realloc, keep_reallocated=False).tolist() == [False, True, False, True]


def test_graded_zero_variance_uses_the_extremeness_tolerance():
    # scale = max(1, 300) = 300: a spread of 1e-4 is within 1e-6 * 300 = 3e-4 -> zero variance.
    r = torch.tensor([300.0, 300.0001, 0.2, 0.7], dtype=torch.float64)
    assert groups_to_keep(r, 2).tolist() == [False, True]
    assert groups_to_keep(r, 2, zero_variance_tol=1e-9).tolist() == [True, True]


def test_group_with_invalid_row_is_kept():
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    valid = torch.tensor([True, False, True, True])
    assert groups_to_keep(r, 2, valid=valid).tolist() == [True, False]


def test_bad_inputs_are_refused_with_a_clear_message():
    r = torch.tensor([1.0, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="one flag per group"):
        groups_to_keep(r, 2, torch.tensor([True]))
    with pytest.raises(ValueError, match="not finite"):
        groups_to_keep(torch.tensor([1.0, float("nan")]), 2)
    with pytest.raises(ValueError, match="divisible"):
        groups_to_keep(torch.tensor([1.0, 1.0, 0.0]), 2)


def test_keeps_exactly_the_groups_dipo_reallocated_among_extreme_ones():
    torch.manual_seed(0)
    dipo = DiPO(DiPOCoreConfig(judgment=False))
    # Hard group 0 lies in the low-PPL space (confident errors), easy group 2 holds one high-PPL right answer.
    r = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    s = torch.tensor([0.1, 0.2, 0.15, 0.12, 0.3, 2.0, 0.4, 2.2, 0.2, 0.3, 0.25, 3.0])
    out = dipo.step(r, s, group_size=4)
    reallocated = out.realloc_hard | out.realloc_easy
    keep = groups_to_keep(r, 4, reallocated)
    assert keep.tolist() == [bool(reallocated[0]), True, bool(reallocated[2])]
    assert bool(reallocated.any())
