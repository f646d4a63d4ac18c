"""Decimal comparison, a task small models get confidently wrong: "Which is larger, 9.11 or 9.9?".

Two numbers with the same integer part, one with one decimal digit (``I.d``), one with two (``I.xy``, ``x, y`` ≥ 1).
Levels (``dataset``, comma list):

===========  ===========================================================  ====================================
level        pair                                                          the "more digits = larger" heuristic
===========  ===========================================================  ====================================
``trap``     ``x < d``: the *shorter* number is larger (9.9 > 9.11)        wrong
``control``  ``x >= d``: the *longer* number is larger (9.91 > 9.9)        right
===========  ===========================================================  ====================================

Integer part 0–20, ``d`` 2–9; the two numbers appear in random order, under three phrasings, followed by
"Answer with just the number.". Deterministic from a seed, distinct questions, hash train / held-out split
(:mod:`dipo.tasks.generated`).

**Verifier**: the model's answer is the *first* number of the completion that equals (by value: 9.90 = 9.9) one of
the two options ("9.9 is larger than 9.11" answers 9.9); reward 1.0 iff it is the larger one, 0.0 otherwise (no
option named, or the smaller one). Bounded and never raises on model output.

:data:`TASK` is the ``decimal_compare`` task of :mod:`dipo.tasks.registry`.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any

from dipo.tasks.data import TaskRow
from dipo.tasks.generated import chat_rows, draw_distinct, generated_loader, number_tokens, safe_text, to_decimal
from dipo.tasks.spec import TaskDefaults, TaskSpec

INSTRUCTION = "Answer with just the number."
LEVELS = {
    "trap": "the shorter decimal is larger (9.9 vs 9.11)",
    "control": "the longer decimal is larger (9.91 vs 9.9)",
}
_TEMPLATES = ("Which is larger, {a} or {b}?", "Which number is bigger: {a} or {b}?", "Which is greater, {a} or {b}?")


def draw_pair(rng: random.Random, level: str) -> tuple[str, str, str]:
    """``(short, long, larger)`` decimals of ``level`` (``trap``: larger = short; ``control``: larger = long)."""
    whole, d, y = rng.randint(0, 20), rng.randint(2, 9), rng.randint(1, 9)
    if level == "trap":
        x = rng.randint(1, d - 1)
    elif level == "control":
        x = rng.randint(d, 9)
    else:
        raise ValueError(f"decimal_compare: unknown level {level!r}; choose from {', '.join(LEVELS)}")
    short, long = f"{whole}.{d}", f"{whole}.{x}{y}"
    return short, long, short if level == "trap" else long


def _draws(levels: Sequence[str], seed: int, split: str) -> Iterator[tuple[str, str, str, str]]:
    rng = random.Random(f"decimal_compare:{split}:{seed}:{','.join(levels)}")
    while True:
        level = rng.choice(levels)
        short, long, larger = draw_pair(rng, level)
        a, b = (short, long) if rng.random() < 0.5 else (long, short)
        yield f"{rng.choice(_TEMPLATES).format(a=a, b=b)} {INSTRUCTION}", larger, level, f"{a} {b}"


def parse_levels(dataset: str | None) -> tuple[str, ...]:
    """Levels of a ``dataset`` comma list (default ``trap,control``); ``ValueError`` naming the choices."""
    levels = tuple(x.strip() for x in (dataset or "trap,control").split(",") if x.strip())
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"decimal_compare: dataset {dataset!r}; use a comma list of {', '.join(LEVELS)}")
    return levels


def load_rows(
    dataset: str | None, split: str, limit: int | None, offset: int, seed: int, split_seed: int = 0, chat: bool = True
) -> list[TaskRow]:
    """``limit`` rows (default 256) after ``offset`` of the levels in ``dataset``; meta: ``level`` and ``options``
    (the two numbers, space-separated, in the order shown)."""
    levels = parse_levels(dataset)
    n = offset + (limit if limit is not None else 256)
    items = draw_distinct("decimal_compare", n, _draws(levels, seed, split), lambda it: it[0], split, split_seed)
    triples = [(text, larger, {"level": level, "options": pair}) for text, larger, level, pair in items[offset:]]
    return chat_rows(triples, f"decimal_compare-{'+'.join(levels)}-{split}", chat, offset)


def options_of(question: str) -> list[str]:
    """The two decimal options named in a question (its first two number tokens)."""
    return number_tokens(question)[:2]


def chosen_option(completion: str, options: Sequence[str]) -> str | None:
    """The first number of ``completion`` equal by value to one of ``options`` (that option), else ``None``."""
    values = {to_decimal(o): o for o in options}
    for token in number_tokens(completion):
        value = to_decimal(token)
        if value is not None and value in values:
            return values[value]
    return None


def is_correct(completion: str, answer: str, options: Sequence[str]) -> bool:
    """The verifier: the option the completion names first is ``answer`` (the larger number)."""
    return chosen_option(completion, options) == answer


class DecimalCompareReward:
    """TRL reward: 1.0 iff the first option the completion names is the ``answer`` column (the larger number).

    The options come from the ``options`` column (space-separated); without it, from the first two numbers of the
    prompt's last message."""

    __name__ = "decimal_compare_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        answers = kwargs.get("answer")
        if answers is None or len(answers) != len(completions):
            raise ValueError("DecimalCompareReward: needs an 'answer' column with one gold answer per completion")
        options = kwargs.get("options") or [None] * len(completions)
        out = []
        for i, (completion, answer) in enumerate(zip(completions, answers, strict=True)):
            pair = str(options[i]).split() if options[i] else options_of(_question_text(prompts[i]))
            if to_decimal(str(answer)) is None or str(answer) not in pair:
                raise ValueError(f"DecimalCompareReward: gold answer {answer!r} is not one of the options {pair}")
            out.append(1.0 if is_correct(safe_text(completion), str(answer), pair) else 0.0)
        return out


def _question_text(prompt: Any) -> str:
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        return str(prompt[-1].get("content") or "")
    return str(prompt or "")


TASK = TaskSpec(
    name="decimal_compare",
    load=generated_loader("decimal_compare", load_rows),
    make_reward=DecimalCompareReward,
    defaults=TaskDefaults(max_new_tokens=16, dataset="trap,control"),
    description="'Which is larger, 9.11 or 9.9? Answer with just the number.'; dataset: comma list of levels "
    "trap (the shorter decimal is larger), control (the longer is larger); first-named-option reward",
)
