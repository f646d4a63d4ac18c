"""Natural-language arithmetic with difficulty levels: a real task on which a small instruct model gets *mixed* groups.

A prompt reads like ``"What is 7 + 5? Answer with just the number."`` (a user chat turn). Levels:

========  ===================================================  ===========================================
level     question                                             SmolLM2-135M-Instruct, T=1 (docs/results)
========  ===================================================  ===========================================
``add1``  sum of two one-digit numbers (0–9)                   mixed groups
``mul1``  product of two one-digit numbers (2–9)               mixed groups
``add2``  sum of two two-digit numbers (10–99)                 mostly hard groups
``word``  one-line word problem, one + or − of numbers ≤ 20    mostly hard groups
========  ===================================================  ===========================================

Each level has a few phrasings (templates), so the prompt space of the one-digit levels is large enough for a few
hundred distinct prompts. Generation is deterministic from a seed; the train / held-out split is a hash of
``(split_seed, prompt)`` as in :mod:`dipo.tasks.arithmetic`, so a held-out prompt never appears in training.

**Verifier**: the *last integer* in the completion must equal the answer (``"7 + 5 = 12"`` and ``"12."`` are both
right; ``"12 apples, no 13"`` is wrong). This is the last-number rule of GSM8K-style evaluation; a response that
names the right number and then another one is judged by the last. Rewards are binary (1.0 / 0.0).

:data:`TASK` is the ``nl_arithmetic`` task of :mod:`dipo.tasks.registry` (loader :func:`load_task`).
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dipo.tasks.data import TaskRow, completion_text
from dipo.tasks.generated import generated_loader
from dipo.tasks.spec import TaskDefaults, TaskSpec, slice_rows

INSTRUCTION = "Answer with just the number."

LEVELS: dict[str, str] = {
    "add1": "sum of two one-digit numbers",
    "mul1": "product of two one-digit numbers (2-9)",
    "add2": "sum of two two-digit numbers",
    "word": "one-line word problem (one + or - of numbers up to 20)",
}

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "add1": ("What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}."),
    "mul1": ("What is {a} * {b}?", "What is {a} times {b}?", "Compute {a} x {b}."),
    "add2": ("What is {a} + {b}?", "What is {a} plus {b}?", "Compute {a} + {b}."),
}
_NAMES = ("Tom", "Anna", "Ben", "Mia", "Sam", "Lily", "Max", "Emma", "Leo", "Zoe")
_THINGS = ("apples", "pencils", "marbles", "cookies", "stickers", "books", "coins", "cards")
_WORD_ADD = "{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?"
_WORD_SUB = "{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have left?"

#: An integer: digits with proper thousands grouping (``1,234``, ``12,345,678``) or plain digits. A comma elsewhere
#: separates numbers ("1,2" is 1 and 2, not 12).
_INT = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)")


@dataclass(frozen=True)
class NLArithmeticItem:
    """One question: ``question`` (without the instruction), the integer ``answer`` as a string, its ``level``."""

    question: str
    answer: str
    level: str

    @property
    def text(self) -> str:
        """The full user message: the question followed by :data:`INSTRUCTION`."""
        return f"{self.question} {INSTRUCTION}"


def _check_levels(levels: Sequence[str]) -> tuple[str, ...]:
    levels = tuple(levels)
    bad = [lv for lv in levels if lv not in LEVELS]
    if not levels or bad:
        raise ValueError(f"nl_arithmetic levels {list(levels)!r}: choose a non-empty subset of {sorted(LEVELS)}")
    return levels


def draw_item(rng: random.Random, level: str) -> NLArithmeticItem:
    """One random item of ``level`` drawn with ``rng``."""
    if level == "add1":
        a, b = rng.randint(0, 9), rng.randint(0, 9)
        return NLArithmeticItem(rng.choice(_TEMPLATES[level]).format(a=a, b=b), str(a + b), level)
    if level == "mul1":
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        return NLArithmeticItem(rng.choice(_TEMPLATES[level]).format(a=a, b=b), str(a * b), level)
    if level == "add2":
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return NLArithmeticItem(rng.choice(_TEMPLATES[level]).format(a=a, b=b), str(a + b), level)
    if level == "word":
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        a, b = rng.randint(2, 20), rng.randint(1, 20)
        if rng.random() < 0.5:
            return NLArithmeticItem(_WORD_ADD.format(name=name, thing=thing, a=a, b=b), str(a + b), level)
        a, b = max(a, b), min(a, b)
        return NLArithmeticItem(_WORD_SUB.format(name=name, thing=thing, a=a, b=b), str(a - b), level)
    raise ValueError(f"unknown nl_arithmetic level {level!r}; choose from {sorted(LEVELS)}")


def is_heldout(question: str, split_seed: int = 0, heldout_fraction: float = 0.25) -> bool:
    """Deterministic train / held-out split: a hash of ``(split_seed, question)`` decides the side."""
    digest = hashlib.sha256(f"nl:{split_seed}:{question}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < heldout_fraction


def generate_items(
    n: int,
    *,
    levels: Sequence[str] = ("add1",),
    seed: int = 0,
    split: str = "train",
    split_seed: int = 0,
    heldout_fraction: float = 0.25,
    distinct: bool = True,
) -> list[NLArithmeticItem]:
    """``n`` items of ``split`` ("train", "heldout" or "all"), levels drawn uniformly, deterministic from ``seed``.

    With ``distinct`` (default) no question repeats; raises ``ValueError`` if the levels' prompt space (on that side
    of the split) is too small for ``n`` distinct questions.
    """
    levels = _check_levels(levels)
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"nl_arithmetic split={split!r}: use 'train', 'heldout' or 'all'")
    if n < 0:
        raise ValueError(f"nl_arithmetic n={n}: must be >= 0")
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"nl_arithmetic heldout_fraction={heldout_fraction}: must lie in (0, 1)")
    rng = random.Random(f"nl_arith:{split}:{seed}:{','.join(levels)}")
    items: list[NLArithmeticItem] = []
    seen: set[str] = set()
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > 1000 * n + 10_000:
            raise ValueError(
                f"nl_arithmetic: could not draw {n} distinct {split} questions from levels {list(levels)}; "
                "the prompt space is too small: ask for fewer, add levels, or pass distinct=False"
            )
        item = draw_item(rng, rng.choice(levels))
        if split != "all" and is_heldout(item.question, split_seed, heldout_fraction) != (split == "heldout"):
            continue
        if distinct and item.question in seen:
            continue
        seen.add(item.question)
        items.append(item)
    return items


def to_task_rows(
    items: Sequence[NLArithmeticItem], *, chat: bool = True, source: str = "nl_arithmetic"
) -> list[TaskRow]:
    """Rows for trainers / the probe: a chat prompt (one user turn) or the plain text, ``answer``, ``level`` column."""
    return [
        TaskRow(
            prompt=[{"role": "user", "content": it.text}] if chat else it.text,
            answer=it.answer,
            id=f"{source}-{i}",
            source=source,
            meta={"level": it.level},
        )
        for i, it in enumerate(items)
    ]


MAX_INT_DIGITS = 64
"""Integers longer than this in a completion count as no answer (bounds the work on untrusted model output)."""


def extract_last_integer(text: str) -> int | None:
    """The last integer in ``text`` (thousands separators allowed in proper groups of three: ``1,234``; "1,2" is the
    two integers 1 and 2), or ``None`` if there is none."""
    matches = _INT.findall(text)
    if not matches:
        return None
    token = matches[-1].replace(",", "")
    if len(token) > MAX_INT_DIGITS:  # model output: never convert an unbounded digit string
        return None
    try:
        return int(token)
    except ValueError:
        return None


def is_correct(completion: str, answer: str) -> bool:
    """The verifier: the last integer in ``completion`` equals the integer ``answer``."""
    value = extract_last_integer(completion)
    return value is not None and value == int(answer)


class NLArithmeticReward:
    """TRL reward function: 1.0 if the last integer of the completion equals the ``answer`` column, else 0.0."""

    def __init__(self, answer_field: str = "answer") -> None:
        self.answer_field = answer_field
        self.__name__ = "nl_arithmetic_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        answers = kwargs.get(self.answer_field)
        if answers is None:
            raise ValueError(
                f"NLArithmeticReward: no {self.answer_field!r} column in the batch (columns: {sorted(kwargs)}); "
                "the dataset needs the gold answers there"
            )
        if len(answers) != len(completions):
            raise ValueError(f"NLArithmeticReward: {len(completions)} completions but {len(answers)} answers")
        out = []
        for completion, answer in zip(completions, answers, strict=True):
            if answer is None or not str(answer).strip().lstrip("-").isdigit():
                raise ValueError(f"NLArithmeticReward: gold answer {answer!r} is not an integer")
            try:
                text = completion_text(completion)
            except TypeError:  # model output that is not text scores 0, it never stops the step
                text = ""
            out.append(1.0 if is_correct(text, str(answer)) else 0.0)
        return out


def load_rows(
    dataset: str | None,
    split: str,
    limit: int | None,
    offset: int,
    seed: int,
    *,
    split_seed: int = 0,
    chat: bool = True,
) -> list[TaskRow]:
    """Rows of the ``nl_arithmetic`` task: ``dataset`` is a comma list of levels (default ``add1``); ``limit``
    defaults to 256 rows."""
    levels = tuple(x.strip() for x in (dataset or "add1").split(",") if x.strip())
    n = offset + (limit if limit is not None else 256)
    items = generate_items(n, levels=levels, seed=seed, split=split, split_seed=split_seed)
    rows = to_task_rows(items, chat=chat, source=f"nl_arithmetic-{'+'.join(levels)}-{split}")
    return slice_rows(rows, offset, limit)


#: The registry loader (:mod:`dipo.tasks.registry`'s contract) of ``nl_arithmetic``, shared with the generated tasks.
load_task = generated_loader("nl_arithmetic", load_rows)


def _reward() -> NLArithmeticReward:
    return NLArithmeticReward(answer_field="answer")


TASK = TaskSpec(
    name="nl_arithmetic",
    load=load_task,
    make_reward=_reward,
    defaults=TaskDefaults(max_new_tokens=16, dataset="add1"),
    description="natural-language arithmetic ('What is 7 + 5? Answer with just the number.'); dataset: comma "
    "list of levels add1, mul1, add2, word",
)
