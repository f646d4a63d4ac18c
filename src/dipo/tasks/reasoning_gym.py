"""Short-answer generators of ``reasoning-gym`` (optional: ``pip install 'dipo[atlas]'``, i.e. reasoning-gym==0.1.25).

``dataset`` names one generator; each has a fixed configuration (:data:`GENERATORS`) chosen so that the answer is one
integer of a few tokens and small models get mixed groups:

=====================  ================================================================  ==============
generator              configuration                                                     example
=====================  ================================================================  ==============
``basic_arithmetic``   2–3 terms of 1–2 digits, + − ×, no parentheses                      "Calculate 12 * 3 - 7."
``chain_sum``          2–4 terms of 1–2 digits, + −                                        "… 57 + 8 - 13 ="
``gcd``                GCD of two numbers 1–100                                           "… GCD … 84, 36."
``lcm``                LCM of two numbers 2–20                                            "… LCM … 6, 8"
``simple_equations``   one linear equation, 2 terms, constants 1–20                       "Solve for x: 3*x + 4 = 19"
=====================  ================================================================  ==============

The user message is the generator's question, a new line and "Answer with just the number.". Items are drawn with
``create_dataset(name, seed=seed, ...)`` in index order: deterministic by seed, distinct questions, hash train /
held-out split (:mod:`dipo.tasks.generated`).

**Reward** (binary): the candidate answer is the *last* number of the completion in canonical form (``+013.0`` →
``13``, see :func:`dipo.tasks.generated.canonical_number`); it is scored by the generator's own ``score_answer``, and
the reward is 1.0 iff that score is ≥ 1.0 (:data:`SCORE_THRESHOLD`). reasoning-gym's scorers give partial credit
(0.01 for a wrong answer in some generators, ``len(gold) / len(answer)`` when the gold answer is a substring, so
``-13`` for ``13`` scores 0.67): all of it counts as wrong. Never raises on model output.

:data:`TASK` is the ``reasoning_gym`` task of :mod:`dipo.tasks.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

from dipo.tasks.data import TaskRow
from dipo.tasks.generated import canonical_number, chat_rows, draw_distinct, generated_loader, number_tokens, safe_text
from dipo.tasks.spec import TaskDefaults, TaskSpec

# Imported inside functions: reasoning_gym (optional package), only when the task is used.

VERSION = "0.1.25"
INSTALL_HINT = f"pip install reasoning-gym=={VERSION}  (or: pip install 'dipo[atlas]')"
INSTRUCTION = "Answer with just the number."
SCORE_THRESHOLD = 1.0
"""A reasoning-gym score at or above this is a correct answer (reward 1.0); anything below is wrong (0.0)."""

GENERATORS: dict[str, dict[str, Any]] = {
    "basic_arithmetic": {
        "min_terms": 2,
        "max_terms": 3,
        "min_digits": 1,
        "max_digits": 2,
        "operators": ("+", "-", "*"),
        "allow_parentheses": False,
        "allow_negation": False,
    },
    "chain_sum": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2, "allow_negation": False},
    "gcd": {"min_numbers": 2, "max_numbers": 2, "min_value": 1, "max_value": 100},
    "lcm": {"min_numbers": 2, "max_numbers": 2, "min_value": 2, "max_value": 20},
    "simple_equations": {"min_terms": 2, "max_terms": 2, "min_value": 1, "max_value": 20},
}
"""The registered generators and their fixed reasoning-gym configurations."""

_DATASET_SIZE = 1_000_000  # reasoning-gym's virtual dataset size (items are generated on demand, index by index)


class MissingReasoningGymError(ImportError, ValueError):
    """reasoning-gym is not installed (an ``ImportError``, and a ``ValueError`` so that the CLIs report it in one
    line with exit code 2, before any model is loaded)."""


def import_reasoning_gym() -> Any:
    """The ``reasoning_gym`` module, or :class:`MissingReasoningGymError` with the one-line install command."""
    try:
        import reasoning_gym
    except ImportError as err:
        missing = getattr(err, "name", None) or "reasoning_gym"
        raise MissingReasoningGymError(
            f"the reasoning_gym task needs reasoning-gym {VERSION} (import failed: {missing} missing); install it "
            f"with: {INSTALL_HINT}"
        ) from err
    return reasoning_gym


def check_generator(name: str | None) -> str:
    """``name`` if it is a registered generator; ``ValueError`` listing them otherwise (no import needed)."""
    if name not in GENERATORS:
        raise ValueError(f"reasoning_gym: dataset {name!r}; choose one generator of {', '.join(GENERATORS)}")
    return name


@lru_cache(maxsize=16)
def make_dataset(name: str, seed: int) -> Any:
    """reasoning-gym's procedural dataset ``name`` with its fixed configuration and ``seed``."""
    rg = import_reasoning_gym()
    return rg.create_dataset(check_generator(name), seed=seed, size=_DATASET_SIZE, **GENERATORS[name])


def _draws(name: str, seed: int) -> Iterator[tuple[str, str]]:
    dataset = make_dataset(name, seed)
    for idx in range(_DATASET_SIZE):
        entry = dataset[idx]
        yield f"{entry['question'].strip()}\n{INSTRUCTION}", str(entry["answer"])


def load_rows(
    dataset: str | None, split: str, limit: int | None, offset: int, seed: int, split_seed: int = 0, chat: bool = True
) -> list[TaskRow]:
    """``limit`` rows (default 256) after ``offset`` of generator ``dataset``; meta: ``generator``."""
    name = check_generator(dataset)
    n = offset + (limit if limit is not None else 256)
    items = draw_distinct(f"reasoning_gym-{name}", n, _draws(name, seed), lambda it: it[0], split, split_seed)
    triples = [(text, answer, {"generator": name}) for text, answer in items[offset:]]
    return chat_rows(triples, f"rg_{name}-{split}", chat, offset)


def candidate_answer(completion: str) -> str | None:
    """The last number of ``completion`` in canonical form (the string handed to the scorer), or ``None``."""
    tokens = number_tokens(completion)
    return canonical_number(tokens[-1]) if tokens else None


@lru_cache(maxsize=16)
def scorer(name: str) -> Callable[[str | None, dict[str, Any]], float]:
    """reasoning-gym's ``score_answer`` of generator ``name``."""
    return make_dataset(check_generator(name), 0).score_answer


def score(name: str, completion: str, answer: str) -> float:
    """reasoning-gym's score of ``completion``'s candidate answer against ``answer`` (0.0 if it has none or the
    scorer raises)."""
    candidate = candidate_answer(completion)
    if candidate is None:
        return 0.0
    try:
        return float(scorer(name)(candidate, {"answer": answer, "metadata": {}}))
    except Exception:  # model output never stops a step
        return 0.0


class ReasoningGymReward:
    """TRL reward: 1.0 iff reasoning-gym scores the completion's last number ≥ :data:`SCORE_THRESHOLD` against the
    ``answer`` column; the generator comes from the ``generator`` column."""

    __name__ = "reasoning_gym_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        answers, generators = kwargs.get("answer"), kwargs.get("generator")
        if answers is None or generators is None or not len(answers) == len(generators) == len(completions):
            raise ValueError("ReasoningGymReward: needs 'answer' and 'generator' columns, one value per completion")
        out = []
        for completion, answer, name in zip(completions, answers, generators, strict=True):
            if answer is None or not str(answer).strip():
                raise ValueError(f"ReasoningGymReward: empty gold answer for generator {name!r}")
            value = score(check_generator(name), safe_text(completion), str(answer))
            out.append(1.0 if value >= SCORE_THRESHOLD else 0.0)
        return out


TASK = TaskSpec(
    name="reasoning_gym",
    load=generated_loader("reasoning_gym", load_rows),
    make_reward=ReasoningGymReward,
    defaults=TaskDefaults(max_new_tokens=16, dataset="basic_arithmetic"),
    description="short-answer reasoning-gym generators (optional: pip install reasoning-gym==0.1.25); dataset: "
    "basic_arithmetic, chain_sum, gcd, lcm or simple_equations; its scorer thresholded at 1.0",
)
