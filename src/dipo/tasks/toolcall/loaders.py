"""Function calling, data: BFCL v3 categories (``nvidia-bfcl`` package) and users' function-calling datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dipo.tasks.assets import package_dir
from dipo.tasks.data import (
    DataFieldError,
    FieldMap,
    OnError,
    RawRow,
    TaskRow,
    load_dataset_rows,
    load_records,
    normalize_prompt,
)
from dipo.tasks.toolcall.prompts import build_toolcall_prompt, validate_tools
from dipo.tasks.toolcall.score import normalize_ground_truth

# ---------------------------------------------------------------------------------------------------------------------
# BFCL v3 loaders (nvidia-bfcl package)

#: Non-live Python AST categories and irrelevance: the evaluation split (BFCL v3 sizes in parentheses).
BFCL_EVAL_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
#: Live (user-contributed) categories: the training split, disjoint from the evaluation split.
BFCL_TRAIN_CATEGORIES = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_irrelevance")
BFCL_SIZES = {
    "simple": 400,
    "multiple": 200,
    "parallel": 200,
    "parallel_multiple": 200,
    "irrelevance": 240,
    "live_simple": 258,
    "live_multiple": 1052,  # 1,053 questions, one without a possible answer
    "live_parallel": 16,
    "live_parallel_multiple": 24,
    "live_irrelevance": 882,
    "live_relevance": 18,
}


def _bfcl_data_dir() -> Path:
    return package_dir("bfcl") / "data"


def load_bfcl(
    category: str,
    limit: int | None = None,
    data_dir: str | Path | None = None,
    on_error: OnError = "skip",
) -> list[TaskRow]:
    """One BFCL v3 category as rows with ``prompt`` (system prompt with the tools + the question), ``answer``
    (JSON of the gold calls, ``[]`` for irrelevance), and ``tools`` / ``category`` columns (``meta``).

    BFCL ships one question without a possible answer (``live_multiple_1052-79-0``): with ``on_error="skip"`` it is
    counted and logged, so ``live_multiple`` has 1,052 usable rows (see :data:`BFCL_SIZES`).
    """
    if category not in BFCL_SIZES:
        raise ValueError(f"unsupported BFCL category {category!r}; choose from {sorted(BFCL_SIZES)}")
    folder = Path(data_dir) if data_dir else _bfcl_data_dir()
    where = f"BFCL_v3_{category}.json"
    answers: dict[str, Any] = {}
    answer_path = folder / "possible_answer" / where
    if answer_path.exists():
        answers = {r["id"]: r["ground_truth"] for r in load_records(answer_path)}
    elif "relevance" not in category:
        raise FileNotFoundError(f"{answer_path} is missing: BFCL category {category!r} needs possible answers")

    def convert(row: RawRow) -> TaskRow:
        tools = validate_tools(row.field("function"), where, "function")
        turns = row.field("question")
        question = normalize_prompt(turns[0] if isinstance(turns[0], list) else turns, where, row.index, "question")
        gold: list[Any] = []  # irrelevance: no call expected; relevance: any call counts (scored by has_calls)
        if answers and "relevance" not in category:
            if row.values.get("id") not in answers:
                raise row.error("id", f"{row.values.get('id')!r} has no possible answer")
            gold = normalize_ground_truth(answers[row.values["id"]], where, "ground_truth")
        return TaskRow(
            prompt=build_toolcall_prompt(question, tools),
            answer=json.dumps(gold),
            id=str(row.values["id"]),
            source=f"bfcl_{category}",
            meta={"tools": json.dumps(tools), "category": category},
        )

    if limit is not None and limit < 1:
        return []  # as the slice of the questions did (load_records takes a limit >= 1)
    return load_dataset_rows(
        folder / where, convert, name=where, limit=limit, on_error=on_error, max_skip_fraction=0.01
    )


def load_toolcall_dataset(
    source: str,
    fields: FieldMap | None = None,
    tools_field: str = "tools",
    split: str = "train",
    config_name: str | None = None,
    limit: int | None = None,
    on_error: OnError = "raise",
    max_skip_fraction: float = 0.05,
    add_tool_prompt: bool = True,
) -> list[TaskRow]:
    """A user's function-calling dataset (ToolRL/xLAM-style): a prompt (string or messages), tool schemas (JSON
    string or list) and gold calls (``[{"name", "arguments"}]`` or BFCL form) under configurable field names.
    ``add_tool_prompt=False`` keeps prompts that already describe the tools and the output format."""
    fields = fields or FieldMap(prompt="prompt", answer="answer")

    def convert(row: RawRow) -> TaskRow:
        prompt = row.prompt(fields.prompt)
        try:
            tools = validate_tools(row.field(tools_field), row.source, tools_field)
            gold = normalize_ground_truth(row.field(fields.answer), row.source, fields.answer)
        except DataFieldError as err:
            raise row.error(err.field_name, err.problem) from err
        row_id = row.row_id(fields.id)
        messages = build_toolcall_prompt(prompt, tools) if add_tool_prompt else prompt
        category = "irrelevance" if not gold else ("parallel" if len(gold) > 1 else "simple")
        meta = {"tools": json.dumps(tools), "category": category}
        return TaskRow(prompt=messages, answer=json.dumps(gold), id=row_id, source=Path(row.source).stem, meta=meta)

    return load_dataset_rows(
        source,
        convert,
        split=split,
        config_name=config_name,
        limit=limit,
        on_error=on_error,
        max_skip_fraction=max_skip_fraction,
    )
