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
"""

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

__all__ = [
    "BFCL_EVAL_CATEGORIES",
    "BFCL_SIZES",
    "BFCL_TRAIN_CATEGORIES",
    "MAX_ARITHMETIC_BITS",
    "MAX_CALLS",
    "MAX_NESTING",
    "MAX_OUTPUT_CHARS",
    "TOOL_SYSTEM_PROMPT",
    "BFCLAccuracyReward",
    "Call",
    "ParsedCalls",
    "ToolRLReward",
    "bfcl_check",
    "build_toolcall_prompt",
    "load_bfcl",
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
