"""Verifiable synthetic arithmetic with graded difficulty (the embedded default task of ``dipo demo``).

Items are written ``"<a><op><b>="`` and the answer is the exact integer result. By default the answer is written
with its digits **reversed** (least significant first, ``"37+85="`` → ``"221"``): a left-to-right decoder then
produces each digit right after the carry it depends on, which makes the task learnable by a tiny model in seconds.

Difficulty ``level`` = number of digits of the operands (1–5), so a batch naturally mixes easy groups (all
responses right), normal groups and hard groups (all wrong) — the regime DiPO acts on (spec §1, §6).

The train/held-out split is a deterministic hash of ``(split_seed, prompt)``: the same prompt is always on the same
side, whatever the sampling seed, so held-out prompts never leak into training.

:data:`TASK` is the ``arithmetic`` task of :mod:`dipo.tasks.registry` (loader :func:`load_task`).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dipo.tasks.data import TaskRow
from dipo.tasks.spec import DataOptions, TaskDefaults, TaskSpec, reject_options, slice_rows

OPERATIONS = ("+", "-", "*", "chain")
"""``+`` a+b; ``-`` a-b with a ≥ b; ``*`` a×b with a one-digit b; ``chain`` a+b+c."""

MAX_LEVEL = 5


@dataclass(frozen=True)
class ArithmeticItem:
    """One task instance: ``prompt`` (e.g. ``"37+85="``), exact ``answer`` string, ``level`` and ``op``."""

    prompt: str
    answer: str
    level: int
    op: str
    value: int


@dataclass(frozen=True)
class ArithmeticTask:
    """A task family: which operations and levels, answer format and the held-out split.

    Args:
        levels: difficulty levels to draw from (1..5 = operand digits).
        level_weights: relative sampling weights of ``levels`` (uniform if ``None``).
        ops: operations to draw from (subset of :data:`OPERATIONS`).
        reverse_answer: write answers least-significant digit first.
        heldout_fraction: share of the prompt space reserved for evaluation.
        split_seed: seed of the hash split (change it to get another split).
    """

    levels: tuple[int, ...] = (1, 2, 3, 4, 5)
    level_weights: tuple[float, ...] | None = None
    ops: tuple[str, ...] = ("+", "-")
    reverse_answer: bool = True
    heldout_fraction: float = 0.2
    split_seed: int = 0

    def __post_init__(self) -> None:
        if not self.levels or any(not 1 <= lv <= MAX_LEVEL for lv in self.levels):
            raise ValueError(f"ArithmeticTask.levels={self.levels!r}: use a non-empty tuple of ints in 1..{MAX_LEVEL}")
        if self.level_weights is not None and (
            len(self.level_weights) != len(self.levels) or any(w < 0 for w in self.level_weights)
        ):
            raise ValueError(
                f"ArithmeticTask.level_weights={self.level_weights!r}: give one non-negative weight per level "
                f"({len(self.levels)} levels) or None for uniform"
            )
        bad = [op for op in self.ops if op not in OPERATIONS]
        if not self.ops or bad:
            raise ValueError(f"ArithmeticTask.ops={self.ops!r}: choose a non-empty subset of {OPERATIONS}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"ArithmeticTask.heldout_fraction={self.heldout_fraction}: must be in (0, 1)")

    # --- formatting -----------------------------------------------------------------------------------------
    def format_answer(self, value: int) -> str:
        """The exact answer string of an integer result (reversed digits by default; sign stays in front)."""
        sign, digits = ("-", str(-value)) if value < 0 else ("", str(value))
        return sign + (digits[::-1] if self.reverse_answer else digits)

    def make_item(self, op: str, operands: Sequence[int], level: int) -> ArithmeticItem:
        """Build the item for ``op`` applied to ``operands``."""
        if op == "+":
            value, prompt = operands[0] + operands[1], f"{operands[0]}+{operands[1]}="
        elif op == "-":
            value, prompt = operands[0] - operands[1], f"{operands[0]}-{operands[1]}="
        elif op == "*":
            value, prompt = operands[0] * operands[1], f"{operands[0]}*{operands[1]}="
        elif op == "chain":
            value, prompt = sum(operands), "+".join(str(x) for x in operands) + "="
        else:
            raise ValueError(f"unknown operation {op!r}; choose from {OPERATIONS}")
        return ArithmeticItem(prompt=prompt, answer=self.format_answer(value), level=level, op=op, value=value)

    # --- split ----------------------------------------------------------------------------------------------
    def is_heldout(self, prompt: str) -> bool:
        """Deterministic split: a hash of ``(split_seed, prompt)`` decides the side of each prompt."""
        digest = hashlib.sha256(f"{self.split_seed}:{prompt}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.heldout_fraction

    # --- sampling -------------------------------------------------------------------------------------------
    def _draw(self, rng: random.Random, level: int) -> ArithmeticItem:
        op = rng.choice(self.ops)
        lo, hi = (0 if level == 1 else 10 ** (level - 1)), 10**level - 1
        if op == "*":
            operands = [rng.randint(lo, hi), rng.randint(0, 9)]
        elif op == "chain":
            operands = [rng.randint(lo, hi) for _ in range(3)]
        else:
            operands = [rng.randint(lo, hi), rng.randint(lo, hi)]
            if op == "-" and operands[0] < operands[1]:
                operands.reverse()
        return self.make_item(op, operands, level)

    def sample(
        self, n: int, seed: int, split: str = "train", levels: Sequence[int] | None = None
    ) -> list[ArithmeticItem]:
        """Draw ``n`` items of ``split`` ("train" or "heldout") deterministically from ``seed``.

        ``levels`` restricts the draw (default: the task's levels and weights). Duplicates are allowed for train
        (it is a stream); held-out items are distinct where the level's prompt space allows it.
        """
        if split not in ("train", "heldout"):
            raise ValueError(f"split={split!r}: use 'train' or 'heldout'")
        if n < 0:
            raise ValueError(f"n={n}: must be >= 0")
        lv = tuple(levels) if levels is not None else self.levels
        weights = self.level_weights if levels is None else None
        rng = random.Random(f"arith:{split}:{seed}")
        want_heldout = split == "heldout"
        items: list[ArithmeticItem] = []
        seen: set[str] = set()
        attempts = 0
        while len(items) < n:
            attempts += 1
            if attempts > 200 * n + 10_000:
                raise ValueError(f"could not draw {n} distinct {split} items from levels {lv}: prompt space too small")
            level = rng.choices(lv, weights=weights)[0] if weights else rng.choice(lv)
            item = self._draw(rng, level)
            if self.is_heldout(item.prompt) != want_heldout:
                continue
            if want_heldout:
                # Distinct prompts, but allow repeats once a tiny level (1-digit) is exhausted.
                if item.prompt in seen and attempts < 50 * n:
                    continue
                seen.add(item.prompt)
            items.append(item)
        return items

    def heldout_set(self, n_per_level: int, seed: int = 0) -> list[ArithmeticItem]:
        """A fixed evaluation set: ``n_per_level`` held-out items for each level of the task."""
        out: list[ArithmeticItem] = []
        for level in self.levels:
            out.extend(self.sample(n_per_level, seed=seed * 1000 + level, split="heldout", levels=[level]))
        return out


# --- verifier -------------------------------------------------------------------------------------------------
def extract_answer(completion: str, eos: str | None = None) -> str:
    """The answer part of a completion: text up to ``eos`` (if given) with surrounding whitespace removed."""
    if eos and eos in completion:
        completion = completion.split(eos, 1)[0]
    return completion.strip()


def verify(completion: str, answer: str, eos: str | None = None) -> bool:
    """Exact verifier: the completion (up to ``eos``) must equal the answer string exactly."""
    return extract_answer(completion, eos) == answer


def _as_text(completion: Any) -> str:
    """TRL passes plain strings for standard prompts and [{"role", "content"}] lists for conversational ones; any
    other model output is no answer (it scores 0 and never stops a training step)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return ""


def arithmetic_reward(prompts: list[Any], completions: list[Any], answer: list[str], **kwargs: Any) -> list[float]:
    """TRL reward function: 1.0 if the completion equals the ``answer`` column exactly, else 0.0."""
    if len(completions) != len(answer):
        raise ValueError(f"arithmetic_reward: {len(completions)} completions but {len(answer)} answers")
    return [1.0 if verify(_as_text(c), a) else 0.0 for c, a in zip(completions, answer, strict=True)]


def to_records(items: Sequence[ArithmeticItem]) -> list[dict[str, Any]]:
    """Rows for a ``datasets.Dataset``: ``prompt``, ``answer``, ``level``, ``op``."""
    return [{"prompt": it.prompt, "answer": it.answer, "level": it.level, "op": it.op} for it in items]


# --- the registered task ---------------------------------------------------------------------------------------
def load_task(
    *,
    dataset: str | None = None,
    split: str = "heldout",
    limit: int | None = None,
    offset: int = 0,
    seed: int = 0,
    ops: str = "+",
    data: DataOptions | None = None,  # generated data: file/field options do not apply (ignored)
    **options: Any,
) -> list[TaskRow]:
    """Loader of the ``arithmetic`` task (:mod:`dipo.tasks.registry`'s contract): ``dataset`` is a comma list of
    levels 1-5 (default all), ``ops`` a comma list of :data:`OPERATIONS`; ``limit`` defaults to 256 rows."""
    reject_options("arithmetic", options)
    try:
        levels = tuple(int(x) for x in (dataset or "1,2,3,4,5").split(",") if x.strip())
    except ValueError as err:
        raise ValueError(f"arithmetic: dataset must be a comma list of levels 1-5, got {dataset!r}") from err
    task = ArithmeticTask(levels=levels, ops=tuple(ops.split(",")))
    n = offset + (limit if limit is not None else 256)
    items = task.sample(n, seed=seed, split=split)
    rows = [
        TaskRow(it.prompt, it.answer, f"arithmetic-{split}-{i}", "arithmetic", {"level": it.level, "op": it.op})
        for i, it in enumerate(items)
    ]
    return slice_rows(rows, offset, limit)


def _reward() -> Any:
    return arithmetic_reward


TASK = TaskSpec(
    name="arithmetic",
    load=load_task,
    make_reward=_reward,
    defaults=TaskDefaults(max_new_tokens=8, chat_template=False, dataset="1,2,3,4,5"),
    description="the demo's synthetic addition ('37+85=' -> reversed digits '221'; plain text); dataset: comma "
    "list of levels 1-5",
)
