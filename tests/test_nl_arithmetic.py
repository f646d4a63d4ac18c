"""Natural-language arithmetic task: deterministic generation, levels, split and the last-integer reward."""

from __future__ import annotations

import pytest

from dipo.tasks.nl_arithmetic import (
    INSTRUCTION,
    LEVELS,
    NLArithmeticReward,
    draw_item,
    extract_last_integer,
    generate_items,
    is_correct,
    is_heldout,
    to_task_rows,
)


def test_generation_is_deterministic_and_seed_dependent():
    a = generate_items(20, levels=("add1", "mul1"), seed=3)
    b = generate_items(20, levels=("add1", "mul1"), seed=3)
    c = generate_items(20, levels=("add1", "mul1"), seed=4)
    assert a == b
    assert a != c
    assert len({it.question for it in a}) == 20  # distinct by default


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_level_gives_correct_answers(level):
    import random
    import re

    rng = random.Random(0)
    for _ in range(50):
        item = draw_item(rng, level)
        assert item.level == level
        numbers = [int(x) for x in re.findall(r"\d+", item.question)]
        a, b = numbers[0], numbers[1]
        if level == "mul1":
            assert int(item.answer) == a * b and 2 <= a <= 9 and 2 <= b <= 9
        elif level == "add1":
            assert int(item.answer) == a + b and a <= 9 and b <= 9
        elif level == "add2":
            assert int(item.answer) == a + b and 10 <= a <= 99 and 10 <= b <= 99
        else:
            assert int(item.answer) in (a + b, a - b) and int(item.answer) >= 0
        assert item.text.endswith(INSTRUCTION)


def test_split_is_disjoint_and_follows_the_hash():
    train = generate_items(100, levels=("add1", "mul1"), split="train")
    held = generate_items(60, levels=("add1", "mul1"), split="heldout")
    assert not {it.question for it in train} & {it.question for it in held}
    assert all(is_heldout(it.question) for it in held)
    assert not any(is_heldout(it.question) for it in train)


def test_too_many_distinct_items_is_a_clear_error():
    with pytest.raises(ValueError, match="prompt space is too small"):
        generate_items(400, levels=("add1",), split="train")
    assert len(generate_items(400, levels=("add1",), distinct=False)) == 400


def test_bad_levels_and_split():
    with pytest.raises(ValueError, match="choose a non-empty subset"):
        generate_items(3, levels=("add3",))
    with pytest.raises(ValueError, match="split"):
        generate_items(3, split="test")


def test_rows_are_chat_prompts_with_level_column():
    rows = to_task_rows(generate_items(3, levels=("word",)))
    assert rows[0].prompt[0]["role"] == "user" and rows[0].prompt[0]["content"].endswith(INSTRUCTION)
    assert rows[0].to_dict()["level"] == "word"
    assert isinstance(to_task_rows(generate_items(1), chat=False)[0].prompt, str)


@pytest.mark.parametrize(
    "text, value",
    [("12", 12), ("7 + 5 = 12.", 12), ("The answer is 1,234", 1234), ("-3", -3), ("no number", None), ("12, 13", 13)],
)
def test_extract_last_integer(text, value):
    assert extract_last_integer(text) == value


@pytest.mark.parametrize(
    "text, value",
    [("1,2", 2), ("the pair 3,4", 4), ("12,345,678", 12345678), ("-1,234", -1234), ("1,2345", 2345),
     ("1234,567", 567), ("1,234,56", 56), ("so 12,", 12)],
)  # fmt: skip
def test_commas_count_only_in_thousands_groups(text, value):
    """Regression (issue 16): any comma was a thousands separator, so "1,2" read as 12."""
    assert extract_last_integer(text) == value


def test_reward_last_integer_rule():
    reward = NLArithmeticReward()
    completions = ["12", "7 + 5 = 12", "12 apples, no 13", "twelve", [{"role": "assistant", "content": "12."}]]
    assert reward(None, completions, None, answer=["12"] * 5) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert is_correct("0", "0") and not is_correct("", "0")
    assert reward(None, ["1,2", "1,200"], None, answer=["12", "1200"]) == [0.0, 1.0]


def test_reward_errors_name_the_problem():
    reward = NLArithmeticReward()
    with pytest.raises(ValueError, match="no 'answer' column"):
        reward(None, ["1"], None)
    with pytest.raises(ValueError, match="not an integer"):
        reward(None, ["1"], None, answer=["x"])
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        reward(None, ["1", "2"], None, answer=["1"])


def test_reward_never_raises_on_hostile_model_output():
    from dipo.tasks.nl_arithmetic import NLArithmeticReward

    reward = NLArithmeticReward()
    completions = ["9" * 5000, "1," * 200_000, None, 12, [{"role": "assistant", "content": "so 4 + 8 = 12"}]]
    assert reward(["p"] * 5, completions, answer=["3", "3", "3", "12", "12"]) == [0.0, 0.0, 0.0, 0.0, 1.0]
