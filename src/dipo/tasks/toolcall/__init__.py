"""Function calling: prompts with tool schemas, a parser of model output into calls, BFCL-checked and graded
(ToolRL-style) rewards, and BFCL v3 loaders.

The paper reports BFCLv3 accuracy after training on ToolRL data with the ToolRL reward (spec §9). ToolRL's data
is not installable offline, so the built-in split trains on BFCL's ``live_*`` categories and evaluates on the
non-live Python AST categories and ``irrelevance`` (:data:`BFCL_TRAIN_CATEGORIES`, :data:`BFCL_EVAL_CATEGORIES`);
every report says so.

Ground truth uses BFCL's possible-answer form: a list of calls ``{name: {param: [acceptable values]}}``, where an
acceptable value ``""`` marks an optional parameter. Concrete ToolRL-style calls (``{"name", "arguments"}``) are
converted to that form by :func:`normalize_ground_truth`.

Model output never hangs or crashes a reward: :func:`parse_tool_calls` bounds its input (:data:`MAX_OUTPUT_CHARS`,
:data:`MAX_NESTING`, :data:`MAX_CALLS`), evaluates arithmetic with a size bound (:data:`MAX_ARITHMETIC_BITS`) and
never raises; the rewards score anything they cannot read as no call.

The package is split by role; every name is importable from ``dipo.tasks.toolcall`` as before:

* :mod:`~dipo.tasks.toolcall.prompts` — tool schemas and the system prompt;
* :mod:`~dipo.tasks.toolcall.parse` — model output into calls (``Call``, the one call shape, is documented there);
* :mod:`~dipo.tasks.toolcall.score` — gold answers, the BFCL AST checker, the graded ToolRL-style score;
* :mod:`~dipo.tasks.toolcall.rewards` — TRL reward functions;
* :mod:`~dipo.tasks.toolcall.loaders` — BFCL v3 categories and users' datasets.

:data:`TASK` is the ``toolcall`` task of :mod:`dipo.tasks.registry` (loader :func:`load_task`).
"""

from __future__ import annotations

from typing import Any

from dipo.tasks.data import TaskRow
from dipo.tasks.spec import (
    DataOptions,
    RewardChoice,
    TaskDefaults,
    TaskEvaluation,
    TaskSpec,
    reject_options,
    slice_rows,
)
from dipo.tasks.toolcall.loaders import (
    BFCL_EVAL_CATEGORIES,
    BFCL_SIZES,
    BFCL_TRAIN_CATEGORIES,
    load_bfcl,
    load_toolcall_dataset,
)
from dipo.tasks.toolcall.parse import (
    MAX_ARITHMETIC_BITS,
    MAX_CALLS,
    MAX_NESTING,
    MAX_OUTPUT_CHARS,
    Call,
    ParsedCalls,
    parse_json_calls,
    parse_python_calls,
    parse_tool_calls,
)
from dipo.tasks.toolcall.prompts import (
    TOOL_SYSTEM_PROMPT,
    build_toolcall_prompt,
    parse_json_field,
    validate_tools,
)
from dipo.tasks.toolcall.rewards import (
    BFCLAccuracyReward,
    ToolRLReward,
)
from dipo.tasks.toolcall.score import (
    bfcl_check,
    normalize_ground_truth,
    toolrl_correctness,
    toolrl_score,
    value_matches,
)

# Imported inside functions: dipo.evaluation.harness (torch; it imports this module), only when scoring.

__all__ = [
    "BFCL_EVAL_CATEGORIES",
    "BFCL_SIZES",
    "BFCL_TRAIN_CATEGORIES",
    "MAX_ARITHMETIC_BITS",
    "MAX_CALLS",
    "MAX_NESTING",
    "MAX_OUTPUT_CHARS",
    "TASK",
    "TOOL_SYSTEM_PROMPT",
    "BFCLAccuracyReward",
    "Call",
    "ParsedCalls",
    "ToolRLReward",
    "bfcl_check",
    "build_toolcall_prompt",
    "load_bfcl",
    "load_task",
    "load_toolcall_dataset",
    "normalize_ground_truth",
    "parse_json_calls",
    "parse_json_field",
    "parse_python_calls",
    "parse_tool_calls",
    "toolrl_correctness",
    "toolrl_score",
    "validate_tools",
    "value_matches",
]


def load_task(
    *,
    dataset: str | None = None,
    split: str = "train",
    limit: int | None = None,
    offset: int = 0,
    seed: int = 0,
    data: DataOptions | None = None,
    **options: Any,
) -> list[TaskRow]:
    """Loader of the ``toolcall`` task (:mod:`dipo.tasks.registry`'s contract): a BFCL category (``simple``,
    ``bfcl:<category>``, ``bfcl_train``: the live_* categories) or a user's file / folder / Hub id (default
    ``simple``)."""
    reject_options("toolcall", options)
    data = data or DataOptions()
    name = dataset or "simple"
    end = None if limit is None else offset + limit
    category = name.split(":", 1)[1] if name.startswith("bfcl:") else name
    if name == "bfcl_train":
        rows = [row for train_category in BFCL_TRAIN_CATEGORIES for row in load_bfcl(train_category)]
    elif name.startswith("bfcl:") or category in BFCL_SIZES:
        rows = load_bfcl(category, limit=end)
    else:
        rows = load_toolcall_dataset(
            name, tools_field=data.tools_field, split=split, limit=end, **data.dataset_kwargs()
        )
    return slice_rows(rows, offset, limit)


def _bfcl_reward() -> BFCLAccuracyReward:
    return BFCLAccuracyReward(answer_field="answer")


def _toolrl_reward() -> ToolRLReward:
    return ToolRLReward(answer_field="answer")


def _scoring() -> Any:
    """``dipo eval``'s scoring of function calling (:data:`dipo.evaluation.harness.BFCL_SCORING`; the harness
    imports torch)."""
    from dipo.evaluation.harness import BFCL_SCORING

    return BFCL_SCORING


TASK = TaskSpec(
    name="toolcall",
    load=load_task,
    make_reward=_bfcl_reward,
    defaults=TaskDefaults(max_new_tokens=256, dataset="simple"),
    description="BFCL v3 function calling (AST checker); dataset: a BFCL category (simple, multiple, ...), "
    "bfcl:<category>, bfcl_train (the live_* categories) or a file / Hub id with 'prompt', 'answer' and 'tools' "
    "fields",
    rewards={"bfcl": RewardChoice(_bfcl_reward), "toolrl": RewardChoice(_toolrl_reward, binary=False)},
    evaluation=TaskEvaluation(
        defaults=TaskDefaults(k=1, temperature=0.0, top_p=0.95, max_new_tokens=256),
        benchmarks=BFCL_EVAL_CATEGORIES,
        scoring=_scoring,
        benchmark_names=tuple(BFCL_SIZES),
    ),
)
