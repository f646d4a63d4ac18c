"""Letter counting, a task small models get confidently wrong: "How many times does the letter "r" appear in the word
"strawberry"?" (3; models tend to say 2).

Words come from a fixed list in this module (:data:`WORDS`, no download). Levels (``dataset``, comma list) by the
count of the asked letter: ``repeat`` (the letter occurs 2–4 times: where tokenised models miscount), ``single``
(once), ``absent`` (0: a letter not in the word). Three phrasings, followed by "Answer with just the number.".
Deterministic from a seed, distinct questions, hash train / held-out split (:mod:`dipo.tasks.generated`).

**Verifier**: the *last* number in the completion — digits, or a number word zero–twelve — must equal the count
("There are 3 r's." and "three" are both right). Bounded and never raises on model output.

:data:`TASK` is the ``letter_count`` task of :mod:`dipo.tasks.registry`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from typing import Any

from dipo.tasks.data import TaskRow
from dipo.tasks.generated import MAX_SCAN_CHARS, chat_rows, draw_distinct, generated_loader, safe_text
from dipo.tasks.spec import TaskDefaults, TaskSpec

INSTRUCTION = "Answer with just the number."
LEVELS = {
    "repeat": "the letter occurs 2-4 times",
    "single": "the letter occurs once",
    "absent": "the letter is absent",
}

WORDS: tuple[str, ...] = tuple(
    """
    strawberry raspberry blueberry cranberry gooseberry mulberry elderberry berry cherry carrot mirror error terror
    horror barrel arrow sparrow tomorrow borrow burrow furrow narrow marrow current corridor embarrass referral
    banana pajama panama alabama cabana savanna caravan anagram grammar drama llama mama papa baccarat catamaran
    mississippi possess possession assess assassin success necessary address princess business mattress compass
    tennessee committee coffee toffee referee employee guarantee agreement engineer pioneer volunteer eleven seventeen
    excellent elephant telephone television envelope experience independence everywhere nevertheless between beekeeper
    cheese freeze sneeze breeze degree eyelet teeter settee peppermint pepper puppet puppy happy apple application
    approach opposite appropriate hippopotamus poppy copper shopping zipper pineapple
    balloon bookkeeper cookbook foodstuff voodoo igloo kangaroo tattoo shampoo bamboo cuckoo lollipop potato tomato
    chocolate photograph onomatopoeia locomotive motorboat
    bubble dribble pebble rabbit ribbon stubborn hobby lobby cabbage
    giraffe coffee muffin puffin staff cliff stuff effort different offer
    little bottle battle cattle kettle letter butter matter better attitude attention statistics potato tattle
    pizza puzzle jazz dizzy fizzy buzz zigzag
    committee common comma commit summer hammer drummer swimming immediate community recommend accommodate
    connection cinnamon banner dinner tunnel channel annual announce antenna beginning running winning innocent
    illusion intelligent parallel umbrella vanilla gorilla guerrilla caterpillar pillow yellow follow hollow balloon
    skill million village collection dollar
    assignment classic glasses message passage mission dessert pressure scissors
    radar level kayak civic refer rotor noon
    queue quiz equation aquarium banquet mosquito
    """.split()  # noqa: SIM905
)
"""The fixed word list (lower-case; duplicates are removed when drawn)."""

_TEMPLATES = (
    'How many times does the letter "{c}" appear in the word "{w}"?',
    'How many "{c}"s are in the word "{w}"?',
    'Count the letter "{c}" in "{w}". How many are there?',
)
_ALPHABET = "abcdefghijklmnopqrstuvwxyz"
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve".split()  # noqa: SIM905
    )
}
_TOKEN = re.compile(r"\d+|[a-z]+")


def letters_of_level(word: str, level: str) -> list[str]:
    """Letters of the alphabet whose count in ``word`` fits ``level`` (repeat 2-4, single 1, absent 0)."""
    if level not in LEVELS:
        raise ValueError(f"letter_count: unknown level {level!r}; choose from {', '.join(LEVELS)}")
    fits = {"repeat": lambda n: 2 <= n <= 4, "single": lambda n: n == 1, "absent": lambda n: n == 0}[level]
    return [c for c in _ALPHABET if fits(word.count(c))]


def _draws(levels: Sequence[str], seed: int, split: str) -> Iterator[tuple[str, str, str, str]]:
    rng = random.Random(f"letter_count:{split}:{seed}:{','.join(levels)}")
    words = sorted(set(WORDS))
    while True:
        word, level = rng.choice(words), rng.choice(levels)
        letters = letters_of_level(word, level)
        if not letters:
            continue
        letter = rng.choice(letters)
        text = f"{rng.choice(_TEMPLATES).format(c=letter, w=word)} {INSTRUCTION}"
        yield text, str(word.count(letter)), level, word


def parse_levels(dataset: str | None) -> tuple[str, ...]:
    """Levels of a ``dataset`` comma list (default ``repeat,single``); ``ValueError`` naming the choices."""
    levels = tuple(x.strip() for x in (dataset or "repeat,single").split(",") if x.strip())
    if not levels or any(lv not in LEVELS for lv in levels):
        raise ValueError(f"letter_count: dataset {dataset!r}; use a comma list of {', '.join(LEVELS)}")
    return levels


def load_rows(
    dataset: str | None, split: str, limit: int | None, offset: int, seed: int, split_seed: int = 0, chat: bool = True
) -> list[TaskRow]:
    """``limit`` rows (default 256) after ``offset`` of the levels in ``dataset``; meta: ``level``, ``word``."""
    levels = parse_levels(dataset)
    n = offset + (limit if limit is not None else 256)
    items = draw_distinct("letter_count", n, _draws(levels, seed, split), lambda it: it[0], split, split_seed)
    triples = [(text, answer, {"level": level, "word": word}) for text, answer, level, word in items[offset:]]
    return chat_rows(triples, f"letter_count-{'+'.join(levels)}-{split}", chat, offset)


def last_count(text: str) -> int | None:
    """The last number of ``text``: a digit string (at most 6 digits) or a number word zero-twelve; else ``None``."""
    value = None
    for token in _TOKEN.findall(text[:MAX_SCAN_CHARS].lower()):
        if token.isdigit():
            value = int(token) if len(token) <= 6 else None
        elif token in _NUMBER_WORDS:
            value = _NUMBER_WORDS[token]
    return value


class LetterCountReward:
    """TRL reward: 1.0 iff the last number of the completion equals the ``answer`` column (the letter's count)."""

    __name__ = "letter_count_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        answers = kwargs.get("answer")
        if answers is None or len(answers) != len(completions):
            raise ValueError("LetterCountReward: needs an 'answer' column with one gold count per completion")
        out = []
        for completion, answer in zip(completions, answers, strict=True):
            if not str(answer).isdigit():
                raise ValueError(f"LetterCountReward: gold answer {answer!r} is not a count")
            out.append(1.0 if last_count(safe_text(completion)) == int(answer) else 0.0)
        return out


TASK = TaskSpec(
    name="letter_count",
    load=generated_loader("letter_count", load_rows),
    make_reward=LetterCountReward,
    defaults=TaskDefaults(max_new_tokens=16, dataset="repeat,single"),
    description='\'How many times does the letter "r" appear in the word "strawberry"?\'; dataset: comma list '
    "of levels repeat (2-4 times), single, absent; last-number reward (digits or zero-twelve)",
)
