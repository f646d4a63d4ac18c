"""Spec §7: group-normalised advantages, the folded objective and its normaliser."""

import pytest
import torch

from dipo.core import fold_advantages, group_advantages, realloc_scale


def test_reallocated_hard_group_of_8_unbiased_std():
    r = torch.tensor([1.0] + [0.0] * 7)
    a = group_advantages(r, 8, std="unbiased", eps=0.0)
    assert a[0].item() == pytest.approx(2.4749, abs=1e-4)  # the spec's +2.47
    assert a[1:].tolist() == pytest.approx([-0.35355] * 7, abs=1e-4)  # the spec's −0.35


def test_reallocated_hard_group_of_8_population_std():
    a = group_advantages(torch.tensor([1.0] + [0.0] * 7), 8, std="population", eps=0.0)
    assert a[0].item() == pytest.approx(2.6458, abs=1e-4)
    assert a[1].item() == pytest.approx(-0.3780, abs=1e-4)


def test_matches_trl_formula_with_eps():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    grouped = r.view(-1, 4)
    expected = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
    assert torch.allclose(group_advantages(r, 4), expected.view(-1))


def test_batch_scaling_uses_batch_std_and_group_mean():
    r = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0])
    grouped = r.view(-1, 4)
    expected = (grouped - grouped.mean(1, keepdim=True)) / (r.std() + 1e-4)
    assert torch.allclose(group_advantages(r, 4, scale_rewards="batch"), expected.view(-1))


def test_no_scaling_only_centres():
    r = torch.tensor([2.0, 0.0, 1.0, 1.0])
    assert group_advantages(r, 2, scale_rewards="none").tolist() == [1.0, -1.0, 0.0, 0.0]


def test_zero_variance_groups_have_zero_advantage():
    assert group_advantages(torch.tensor([1.0, 1.0, 0.0, 0.0]), 2).tolist() == [0.0, 0.0, 0.0, 0.0]


def test_invalid_rows_are_excluded_and_get_zero():
    r = torch.tensor([1.0, 0.0, float("nan"), 0.0])
    valid = torch.tensor([True, True, False, True])
    a = group_advantages(r, 4, valid=valid, eps=0.0)
    expected = group_advantages(torch.tensor([1.0, 0.0, 0.0]), 3, eps=0.0)
    assert a[2].item() == 0.0
    assert torch.allclose(a[[0, 1, 3]], expected)


def test_fold_and_alpha_zero():
    base, realloc = torch.tensor([0.5, -0.5, 0.0, 0.0]), torch.tensor([0.0, 0.0, 2.0, -2.0])
    assert fold_advantages(base, realloc, 0.1).tolist() == pytest.approx([0.5, -0.5, 0.2, -0.2])
    assert torch.equal(fold_advantages(base, realloc, 0.0), base)
    with pytest.raises(ValueError, match="alpha"):
        fold_advantages(base, realloc, -1.0)


def test_realloc_scale():
    mask = torch.tensor([True, True, False, False, False, False])
    assert realloc_scale(mask, "shared") == 1.0
    assert realloc_scale(mask, "separate") == 3.0  # 6 rows / 2 reallocated rows
    tokens = torch.tensor([1, 3, 2, 2, 2, 2])
    assert realloc_scale(mask, "separate", tokens) == 3.0  # 12 tokens / 4
    assert realloc_scale(torch.zeros(4, dtype=torch.bool), "separate") == 1.0
    with pytest.raises(ValueError, match="realloc_normalizer"):
        realloc_scale(mask, "own")


def test_unknown_options_are_errors():
    with pytest.raises(ValueError, match="scale_rewards"):
        group_advantages(torch.zeros(4), 2, scale_rewards="global")
    with pytest.raises(ValueError, match="std"):
        group_advantages(torch.zeros(4), 2, std="sample")
