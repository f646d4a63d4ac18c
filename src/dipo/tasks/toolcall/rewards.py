"""Function calling, TRL reward functions: :class:`BFCLAccuracyReward` (binary) and :class:`ToolRLReward` (graded)."""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

from dipo.tasks.data import (
    completion_text,
)
from dipo.tasks.toolcall.parse import Call, parse_tool_calls
from dipo.tasks.toolcall.prompts import validate_tools
from dipo.tasks.toolcall.score import _bfcl_checker, bfcl_check, normalize_ground_truth, toolrl_score

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# TRL reward functions


def _completion_str(completion: Any) -> str:
    """Text of a completion (string or chat messages); anything unreadable is no text, never an error."""
    try:
        return completion_text(completion)
    except TypeError:
        return ""


class _ToolReward:
    """Shared column handling. Config errors (a missing column, invalid gold or tool JSON) raise; model output
    never does: each completion is parsed with the bounded :func:`parse_tool_calls`, and anything the scorer
    still raises on it scores as an unparseable output (logged), so one reward is returned per completion."""

    def __init__(self, tools_field: str = "tools", answer_field: str = "answer", category_field: str = "category"):
        self.tools_field, self.answer_field, self.category_field = tools_field, answer_field, category_field

    def _score(self, index: int, scorer: Any, fallback: float) -> float:
        try:
            return float(scorer())
        except Exception as err:  # model output only: gold and tools were read before
            logger.warning("%s reward: batch row %d scored %s: %s: %.200s", self.__name__, index, fallback,
                           type(err).__name__, err)  # fmt: skip
            return fallback

    def _columns(self, kwargs: dict[str, Any], n: int) -> tuple[list[Any], list[Any], list[str]]:
        for name in (self.tools_field, self.answer_field):
            if kwargs.get(name) is None:
                raise ValueError(
                    f"{self.__name__} reward: the dataset has no column {name!r} (columns passed: "
                    f"{sorted(k for k in kwargs if not k.startswith('trainer'))}); set the field names in the config"
                )
        categories = kwargs.get(self.category_field) or ["custom"] * n
        return kwargs[self.tools_field], kwargs[self.answer_field], categories

    __name__ = "tool"


class BFCLAccuracyReward(_ToolReward):
    """Binary reward: 1.0 if BFCL's AST checker accepts the parsed calls (irrelevance: no call), else 0.0."""

    __name__ = "bfcl_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        tools_col, gold_col, categories = self._columns(kwargs, len(completions))
        _bfcl_checker()  # a missing package raises here, not as a 0 for every completion
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            where = f"batch row {i}"
            tools = _cached_tools(_key(tools_col[i]), where, self.tools_field)
            gold = _cached_gold(_key(gold_col[i]), where, self.answer_field)
            category = categories[i]

            def score(tools=tools, gold=gold, category=category, completion=completion) -> float:
                ok, _ = bfcl_check(tools, parse_tool_calls(_completion_str(completion)), gold, category)
                return 1.0 if ok else 0.0

            out.append(self._score(i, score, 0.0))
        return out


class ToolRLReward(_ToolReward):
    """Graded ToolRL-style reward: ``format + correctness``, rescaled to [0, 1] by default.

    ToolRL's own scale is ``R = R_format + R_correct`` in [-3, 4] (R_format ∈ {0, 1}, R_correct = 6·c − 3);
    ``scale="toolrl"`` returns that, ``scale="unit"`` returns (R + 3) / 7, so 1.0 means exact and DiPO's graded mode
    (spec §6, "graded") can use ``correct_threshold=1.0``.
    """

    __name__ = "toolrl"

    def __init__(self, scale: str = "unit", **fields: str) -> None:
        super().__init__(**fields)
        if scale not in ("unit", "toolrl"):
            raise ValueError(f"scale must be 'unit' or 'toolrl', got {scale!r}")
        self.scale = scale

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        _, gold_col, _ = self._columns(kwargs, len(completions))
        out: list[float | None] = []
        for i, completion in enumerate(completions):
            gold = _cached_gold(_key(gold_col[i]), f"batch row {i}", self.answer_field)

            def score(gold=gold, completion=completion) -> float:
                fmt, correct = toolrl_score(parse_tool_calls(_completion_str(completion)), gold)
                return fmt + 6.0 * correct - 3.0

            reward = self._score(i, score, -3.0)
            out.append(reward if self.scale == "toolrl" else (reward + 3.0) / 7.0)
        return out


def _key(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


@lru_cache(maxsize=4096)
def _cached_tools(text: str, where: str, field_name: str) -> list[dict[str, Any]]:
    return validate_tools(text, where, field_name)


@lru_cache(maxsize=4096)
def _cached_gold(text: str, where: str, field_name: str) -> list[Call]:
    return normalize_ground_truth(text, where, field_name)
