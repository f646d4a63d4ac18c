"""Choice points of the core are name → rule tables that the config, the probe and the docs iterate (issue 17, item 3);
``DiPO.step`` validates and converts its inputs once, at its entry."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch

import dipo.core.advantages as advantages_module
import dipo.core.brr as brr_module
import dipo.core.dipo as dipo_module
import dipo.core.threshold as threshold_module
from dipo.core import (
    MEMBERSHIP_RULES,
    SELECTION_RULES,
    DiPO,
    DiPOCoreConfig,
    in_space,
    reallocate,
    select_max_ppl,
    select_random,
)
from dipo.probe.analysis import AnalysisConfig, analyse
from dipo.probe.report import markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "algorithm.md"
TAU = 1.0


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_unknown_membership_is_an_error_not_the_mean_rule():
    # Regression: in_space read any unknown name as "mean" (its ``else:`` branch).
    s, selected = t(0.1, 0.2, 1.5, 0.3), torch.tensor([2])
    with pytest.raises(ValueError, match=r"unknown membership='median'; choose one of 'selected', 'all', 'mean'"):
        in_space(s, selected, 4, TAU, "median", low=True)
    with pytest.raises(ValueError, match="membership"):
        in_space(s, selected, 4, TAU, ["mean"], low=True)  # unhashable: the same clear error


@pytest.mark.parametrize("name", list(MEMBERSHIP_RULES))
def test_every_membership_rule_is_accepted_by_the_config_and_matches_in_space(name):
    assert DiPOCoreConfig(membership=name).membership == name
    s, selected = t(0.1, 0.2, 1.5, 0.3), torch.tensor([2])
    by_hand = {"selected": [False], "all": [False], "mean": [True]}  # mean 0.525 < τ; max 1.5 > τ
    assert in_space(s, selected, 4, TAU, name, low=True).tolist() == by_hand[name]


@pytest.mark.parametrize("name", list(SELECTION_RULES))
def test_every_selection_rule_is_accepted_and_reallocate_uses_the_table(name):
    assert DiPOCoreConfig(selection=name).selection == name
    s = t(0.1, 0.5, 0.3, 0.2, 0.2, 0.1, 0.4, 0.3)
    out = reallocate(t(0, 0, 0, 0, 0, 0, 0, 0), s, 4, TAU, selection=name, generator=torch.Generator().manual_seed(3))
    expected = SELECTION_RULES[name](s, 4, torch.Generator().manual_seed(3))
    assert out.selected.tolist() == expected.tolist()


def test_selection_table_holds_the_public_rules():
    assert SELECTION_RULES["max_ppl"] is select_max_ppl and SELECTION_RULES["random"] is select_random
    with pytest.raises(ValueError, match=r"unknown selection='maxppl'; choose one of 'max_ppl', 'random'"):
        DiPOCoreConfig(selection="maxppl")
    with pytest.raises(TypeError):
        MEMBERSHIP_RULES["median"] = MEMBERSHIP_RULES["mean"]  # read-only: a rule is added in dipo.core.brr


@pytest.mark.parametrize(("option", "table"), [("membership", MEMBERSHIP_RULES), ("selection", SELECTION_RULES)])
def test_docs_options_table_lists_exactly_the_table_keys(option, table):
    rows = [line for line in DOCS.read_text().splitlines() if line.startswith(f"| `{option}`")]
    assert len(rows) == 1, f"docs/algorithm.md needs one options-table row for `{option}`"
    assert set(re.findall(r'"([^"]+)"', rows[0])) == set(table)


def test_probe_tables_have_one_row_per_membership_rule():
    log_ppl = [0.1, 0.2, 0.3, 0.4, 1.0, 2.0, 3.0, 4.0, 0.2, 0.3, 0.1, 0.2, 5.0, 5.1, 5.2, 5.3]
    reward = [0, 0, 0, 0, 1, 0, 1, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    records = [
        {"id": f"p{i // 4}", "sample": i % 4, "reward": float(r), "token_logps": [-s], "truncated": False,
         "num_tokens": 1}
        for i, (s, r) in enumerate(zip(log_ppl, reward, strict=True))
    ]  # fmt: skip
    result = analyse(records, AnalysisConfig(judgment_confidence=None, batch_prompts=2))
    assert list(result["reallocation"]) == list(MEMBERSHIP_RULES)
    assert [k for k in result["batches"] if k in MEMBERSHIP_RULES] == list(MEMBERSHIP_RULES)
    page = markdown(result, {"sampling": {}})
    for name in MEMBERSHIP_RULES:
        assert len(re.findall(rf"^\| {name} \|", page, flags=re.MULTILINE)) >= 2  # BRR table and replay table


def test_step_converts_rewards_once_and_does_not_revalidate(monkeypatch):
    """Regression: DiPO.step converted the rewards to float again in each ``group_advantages`` call and re-ran the
    public checks of ``group_advantages`` and ``find_threshold`` on data it had validated."""
    rewards = t(0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0)
    log_ppl = t(0.1, 0.5, 0.3, 0.2, 1.2, 1.9, 1.4, 1.3, 0.2, 1.5, 0.3, 1.6)
    expected = DiPO(DiPOCoreConfig(judgment_confidence=None, judgment=False)).step(rewards, log_ppl, 4)
    assert expected.realloc_mask.any()  # both group_advantages calls run
    conversions = []
    real = dipo_module.float_rewards

    def counted(x, *args, **kwargs):
        conversions.append(x.dtype)
        return real(x, *args, **kwargs)

    def refuse(*args, **kwargs):
        raise AssertionError("re-validated inside DiPO.step")

    monkeypatch.setattr(dipo_module, "float_rewards", counted)
    for module in (advantages_module, brr_module):
        monkeypatch.setattr(module, "float_rewards", counted)
    for module, names in (
        (advantages_module, ("check_same_device", "output_dtype", "cast_result")),
        (threshold_module, ("check_1d", "check_same_shape", "check_same_device")),
    ):
        for name in names:
            monkeypatch.setattr(module, name, refuse)
    out = DiPO(DiPOCoreConfig(judgment_confidence=None, judgment=False)).step(rewards, log_ppl, 4)
    assert conversions == [torch.float32]
    for name in ("advantages", "base_advantages", "realloc_rewards", "realloc_mask"):
        assert torch.equal(getattr(out, name), getattr(expected, name))


def test_a_config_changed_after_validation_is_still_refused_by_the_step():
    core = DiPO(DiPOCoreConfig())
    core.config.scale_rewards = "global"
    with pytest.raises(ValueError, match="scale_rewards"):
        core.step(t(1, 0, 1, 0), t(0.1, 0.2, 0.3, 0.4), 2)
    core = DiPO(DiPOCoreConfig(judgment=False))
    core.config.membership = "median"
    with pytest.raises(ValueError, match="membership"):
        core.step(t(0, 0, 1, 1), t(0.1, 0.2, 0.3, 0.4), 2)


def test_classify_groups_from_dipo_core_dipo_warns_and_works():
    from dipo.core import classify_groups

    assert "classify_groups" not in dipo_module.__all__
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        legacy = dipo_module.classify_groups
    assert legacy is classify_groups
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
