"""Math, TRL reward functions: :class:`MathAccuracyReward` (binary) and :class:`MathFormatReward`."""

from __future__ import annotations

from typing import Any

from dipo.tasks.math.extract import _BOXED_RE, extract_boxed
from dipo.tasks.math.verify import _completion_str, _gold_text, _judge_many

# ---------------------------------------------------------------------------------------------------------------------
# TRL reward functions: fn(prompts, completions, completion_ids, **dataset_columns) -> list[float | None]


class MathAccuracyReward:
    """Binary verifier reward: 1.0 if the completion's final answer equals the row's gold answer, else 0.0.

    ``answer_field`` names the dataset column holding the gold answer (passed by TRL as a keyword argument).
    A row whose gold answer is missing or unparseable raises ``ValueError`` naming the row: a silent 0 would train
    on noise. Model output never raises and never hangs: a completion that is not text has no answer, and every
    comparison runs in the bounded math-verify worker (VERIFY_TIMEOUT_S each; past it, 0 and counted in
    :func:`verify_stats`), in whatever thread TRL calls the reward.
    """

    def __init__(self, answer_field: str = "answer") -> None:
        self.answer_field = answer_field
        self.__name__ = "math_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        golds = kwargs.get(self.answer_field)
        if golds is None:
            raise ValueError(
                f"math_accuracy reward: the dataset has no column {self.answer_field!r} "
                f"(columns passed: {sorted(k for k in kwargs if not k.startswith('trainer'))}); "
                "set the answer field in the task config"
            )
        if len(golds) != len(completions):
            raise ValueError(f"math_accuracy reward: {len(completions)} completions but {len(golds)} gold answers")
        wheres = [f"batch row {i}, field {self.answer_field!r}" for i in range(len(golds))]
        golds = [_gold_text(gold, where) for gold, where in zip(golds, wheres, strict=True)]
        return [1.0 if j.correct else 0.0 for j in _judge_many(list(completions), golds, wheres)]


class MathFormatReward:
    """Optional format reward: 1.0 if the completion ends its reasoning with exactly one ``\\boxed{}`` answer."""

    def __init__(self) -> None:
        self.__name__ = "math_format"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        out: list[float | None] = []
        for completion in completions:
            text = _completion_str(completion)
            out.append(1.0 if len(_BOXED_RE.findall(text)) == 1 and extract_boxed(text) else 0.0)
        return out
