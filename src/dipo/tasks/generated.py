"""Shared pieces of the generated (procedural) tasks: the hash train / held-out split, distinct deterministic draws,
chat rows and a bounded number extractor for untrusted model output.

Used by :mod:`dipo.tasks.decimal_compare`, :mod:`dipo.tasks.letter_count` and :mod:`dipo.tasks.reasoning_gym`
(:mod:`dipo.tasks.nl_arithmetic` predates it and keeps its own copy of the same rules); :func:`generated_loader`
turns their ``load_rows`` into a registry loader.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Any

from dipo.tasks.data import TaskRow, completion_text
from dipo.tasks.spec import DataOptions, Loader, check_bounds, reject_options

SPLITS = ("train", "heldout", "all")
HELDOUT_FRACTION = 0.25

MAX_NUMBER_CHARS = 32
"""Number tokens longer than this in a completion count as no answer (bounds the work on model output)."""

MAX_SCAN_CHARS = 20_000
"""Only the first this many characters of a completion are scanned (responses are capped by max_new_tokens anyway)."""

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def is_heldout(task: str, question: str, split_seed: int = 0, fraction: float = HELDOUT_FRACTION) -> bool:
    """Deterministic split: a hash of ``(task, split_seed, question)`` puts ``fraction`` of the questions held out."""
    digest = hashlib.sha256(f"{task}:{split_seed}:{question}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def check_split(task: str, split: str) -> None:
    """``ValueError`` naming the choices unless ``split`` is train, heldout or all."""
    if split not in SPLITS:
        raise ValueError(f"{task}: split={split!r}; use one of {', '.join(SPLITS)}")


def draw_distinct(
    task: str, n: int, draws: Iterator[Any], key: Callable[[Any], str], split: str, split_seed: int = 0
) -> list[Any]:
    """The first ``n`` items of ``draws`` on the ``split`` side whose ``key`` (the question) was not seen before.

    ``ValueError`` if ``draws`` runs out or ``1000 n + 10000`` draws do not give ``n`` items (too small a space).
    """
    check_split(task, split)
    if n < 0:
        raise ValueError(f"{task}: n={n} must be >= 0")
    items: list[Any] = []
    seen: set[str] = set()
    for attempt, item in enumerate(draws):
        if len(items) >= n:
            break
        if attempt > 1000 * n + 10_000:
            break
        question = key(item)
        if question in seen:
            continue
        if split != "all" and is_heldout(task, question, split_seed) != (split == "heldout"):
            continue
        seen.add(question)
        items.append(item)
    if len(items) < n:
        raise ValueError(
            f"{task}: could not draw {n} distinct {split} questions (got {len(items)}); the prompt space is too "
            "small: ask for fewer prompts or choose more levels"
        )
    return items


def chat_rows(
    questions: list[tuple[str, str, dict[str, Any]]], source: str, chat: bool = True, offset: int = 0
) -> list[TaskRow]:
    """Rows from ``(user message, answer, meta)`` triples: one user turn (or plain text with ``chat=False``)."""
    return [
        TaskRow(
            prompt=[{"role": "user", "content": text}] if chat else text,
            answer=answer,
            id=f"{source}-{offset + i}",
            source=source,
            meta=meta,
        )
        for i, (text, answer, meta) in enumerate(questions)
    ]


def number_tokens(text: str) -> list[str]:
    """Number tokens (``-3``, ``+5``, ``9.11``) of ``text`` in order, the scan bounded by :data:`MAX_SCAN_CHARS`;
    tokens longer than :data:`MAX_NUMBER_CHARS` are dropped."""
    return [t for t in _NUMBER.findall(text[:MAX_SCAN_CHARS]) if len(t) <= MAX_NUMBER_CHARS]


def to_decimal(token: str) -> Decimal | None:
    """``Decimal`` of a short number token, ``None`` if it is not one."""
    if len(token) > MAX_NUMBER_CHARS:
        return None
    try:
        return Decimal(token)
    except InvalidOperation:
        return None


def canonical_number(token: str) -> str | None:
    """A number token in canonical form: sign ``+`` and leading zeros dropped, an integral value without decimals
    (``"+013.0"`` → ``"13"``, ``"-0"`` → ``"0"``, ``"2.50"`` → ``"2.5"``); ``None`` if it is not a short number."""
    value = to_decimal(token)
    if value is None or not value.is_finite():
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def safe_text(completion: Any) -> str:
    """The completion's text (:func:`dipo.tasks.data.completion_text`), ``""`` for output that is not text."""
    try:
        return completion_text(completion)
    except TypeError:
        return ""


def generated_loader(name: str, load_rows: Callable[..., list[TaskRow]]) -> Loader:
    """The registry loader (:mod:`dipo.tasks.registry`'s contract) of generated task ``name`` whose rows come from
    ``load_rows(dataset, split, limit, offset, seed, split_seed=..., chat=...)``."""

    def load(
        *,
        dataset: str | None = None,
        split: str = "train",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        chat: bool = True,
        split_seed: int = 0,
        data: DataOptions | None = None,  # generated data: file/field options do not apply (ignored)
        **options: Any,
    ) -> list[TaskRow]:
        reject_options(name, options)
        check_bounds(offset, limit)
        return load_rows(dataset, split, limit, offset, seed, split_seed=split_seed, chat=chat)

    load.__doc__ = f"Loader of the generated task {name!r} (see its module)."
    load.__module__ = load_rows.__module__
    return load
