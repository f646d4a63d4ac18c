"""Tests of the synthetic arithmetic task family: formatting, verifier, split, reward function."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dipo.tasks.arithmetic import (
    ArithmeticTask,
    arithmetic_reward,
    extract_answer,
    to_records,
    verify,
)


def test_answers_are_exact_and_reversed_by_default():
    task = ArithmeticTask()
    assert task.make_item("+", [37, 85], 2).answer == "221"  # 122 reversed
    assert task.make_item("-", [100, 1], 3).answer == "99"  # 99 reversed is "99"
    assert task.make_item("-", [120, 1], 3).answer == "911"  # 119
    assert task.make_item("*", [123, 4], 3).answer == "294"  # 492
    assert task.make_item("chain", [1, 2, 30], 2).answer == "33"
    assert task.make_item("chain", [1, 2, 30], 2).prompt == "1+2+30="
    plain = ArithmeticTask(reverse_answer=False)
    assert plain.make_item("+", [37, 85], 2).answer == "122"
    assert plain.format_answer(-12) == "-12"
    assert task.format_answer(-12) == "-21"


@given(a=st.integers(0, 99_999), b=st.integers(0, 99_999))
def test_reversed_answer_decodes_to_the_sum(a: int, b: int):
    item = ArithmeticTask().make_item("+", [a, b], 5)
    assert int(item.answer[::-1]) == a + b
    assert verify(item.answer, item.answer)


def test_verifier_is_exact():
    assert verify("221", "221")
    assert verify(" 221 ", "221")
    assert not verify("2210", "221")
    assert not verify("22", "221")
    assert not verify("", "221")
    assert verify("221<eos>junk", "221", eos="<eos>")
    assert extract_answer("12<eos>3", eos="<eos>") == "12"


def test_reward_function_matches_trl_signature():
    prompts = ["1+2=", "5+7="]
    out = arithmetic_reward(prompts=prompts, completions=["3", "21"], answer=["3", "21"], completion_ids=[[1], [2]])
    assert out == [1.0, 1.0]
    assert arithmetic_reward(prompts, ["4", "12"], answer=["3", "21"]) == [0.0, 0.0]
    chat = [[{"role": "assistant", "content": "3"}], [{"role": "assistant", "content": "0"}]]
    assert arithmetic_reward(prompts, chat, answer=["3", "21"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="answers"):
        arithmetic_reward(prompts, ["3"], answer=["3", "21"])


def test_sampling_is_deterministic_and_respects_levels():
    task = ArithmeticTask(ops=("+", "-", "*", "chain"))
    a = task.sample(200, seed=7)
    assert a == task.sample(200, seed=7)
    assert a != task.sample(200, seed=8)
    assert {it.level for it in a} == {1, 2, 3, 4, 5}
    assert {it.op for it in a} == {"+", "-", "*", "chain"}
    for it in task.sample(100, seed=1, levels=[3]):
        assert it.level == 3
        operands = [int(x) for x in it.prompt[:-1].replace("*", "+").replace("-", "+").split("+")]
        assert len(str(operands[0])) == 3
        assert it.value >= 0  # subtraction keeps a >= b


def test_split_is_disjoint_deterministic_and_seed_dependent():
    task = ArithmeticTask(levels=(2, 3))
    train = {it.prompt for it in task.sample(3000, seed=0, split="train")}
    held = {it.prompt for it in task.sample(300, seed=0, split="heldout")}
    assert not train & held
    assert all(task.is_heldout(p) for p in held) and not any(task.is_heldout(p) for p in train)
    # the held-out share of the prompt space is close to heldout_fraction
    space = [f"{a}+{b}=" for a in range(10, 100) for b in range(10, 100)]
    share = sum(task.is_heldout(p) for p in space) / len(space)
    assert abs(share - task.heldout_fraction) < 0.02
    other = ArithmeticTask(levels=(2, 3), split_seed=1)
    assert [task.is_heldout(p) for p in space[:500]] != [other.is_heldout(p) for p in space[:500]]


def test_heldout_set_has_each_level_and_distinct_prompts():
    task = ArithmeticTask()
    items = task.heldout_set(30, seed=0)
    assert len(items) == 150
    for level in task.levels:
        prompts = [it.prompt for it in items if it.level == level]
        assert len(prompts) == 30
        if level >= 2:
            assert len(set(prompts)) == 30


def test_records_have_trl_columns():
    rec = to_records(ArithmeticTask().sample(3, seed=0))
    assert set(rec[0]) == {"prompt", "answer", "level", "op"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"levels": ()}, "levels"),
        ({"levels": (0, 1)}, "levels"),
        ({"levels": (1, 2), "level_weights": (1.0,)}, "level_weights"),
        ({"ops": ("/",)}, "ops"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ArithmeticTask(**kwargs)


def test_bad_split_name_is_rejected():
    with pytest.raises(ValueError, match="split"):
        ArithmeticTask().sample(1, seed=0, split="test")


def test_reward_scores_non_text_output_zero_instead_of_raising():
    from dipo.tasks.arithmetic import arithmetic_reward

    assert arithmetic_reward(["1+2="] * 3, [None, 3, [{"content": "3"}]], answer=["3", "3", "3"]) == [0.0, 0.0, 1.0]
