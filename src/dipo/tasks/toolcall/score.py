"""Function calling, scoring: gold answers in BFCL's possible-answer form, the BFCL AST checker (binary) and the
graded ToolRL-style score."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from dipo.tasks.data import (
    DataFieldError,
)
from dipo.tasks.toolcall.parse import Call, ParsedCalls, _json_call
from dipo.tasks.toolcall.prompts import parse_json_field

# Imported inside functions: the BFCL checker (optional package), only when scoring.

# ---------------------------------------------------------------------------------------------------------------------
# Ground truth


def normalize_ground_truth(value: Any, where: str = "ground_truth", field_name: str = "ground_truth") -> list[Call]:
    """Gold calls in BFCL's possible-answer form ``[{name: {param: [acceptable values]}}]``.

    Accepts that form, or concrete calls ``{"name", "arguments"}`` (each value becomes the one acceptable value).
    An empty list means "no call expected" (irrelevance).
    """
    value = parse_json_field(value, where, field_name, list)
    gold: list[Call] = []
    for i, call in enumerate(value):
        try:
            if isinstance(call, dict) and "name" in call and ("arguments" in call or "parameters" in call):
                name, args = next(iter(_json_call(call).items()))
                gold.append({name: {k: [v] for k, v in args.items()}})
            elif isinstance(call, dict) and len(call) == 1 and isinstance(next(iter(call.values())), dict):
                name, args = next(iter(call.items()))
                gold.append({name: {k: v if isinstance(v, list) else [v] for k, v in args.items()}})
            else:
                raise ValueError("expected {name: {param: [values]}} or {'name': ..., 'arguments': {...}}")
        except (ValueError, json.JSONDecodeError) as err:
            raise DataFieldError(where, "-", f"{field_name}[{i}]", str(err)) from err
    return gold


# ---------------------------------------------------------------------------------------------------------------------
# Binary reward: the BFCL AST checker


@lru_cache(maxsize=1)
def _bfcl_checker() -> Any:
    try:
        from bfcl.eval_checker.ast_eval.ast_checker import ast_checker
    except ImportError as err:
        raise ImportError(
            "the BFCL AST checker needs nvidia-bfcl (imported as `bfcl`): `pip install --no-deps nvidia-bfcl==26.3` "
            "or `dipo assets`. Note: an unrelated PyPI package is also called `bfcl`."
        ) from err
    return ast_checker


def bfcl_check(
    tools: list[dict[str, Any]], parsed: ParsedCalls, gold: list[Call], category: str
) -> tuple[bool, str | None]:
    """BFCL v3 AST verdict for one output: ``(correct, error_type)``.

    ``irrelevance`` categories are correct iff the output holds no call (as BFCL's relevance runner decides);
    the others need a parsed call list that BFCL's ``ast_checker`` accepts (Python semantics).
    """
    if "irrelevance" in category or not gold:
        return (not parsed.has_calls), (None if not parsed.has_calls else "irrelevance:made_a_call")
    if parsed.calls is None:
        return False, "ast_decoder:decoder_failed"
    # BFCL's checker picks its mode from the category name: parallel (any order), multiple, else simple.
    if "parallel" in category or len(gold) > 1:
        mode = "parallel"
    elif "multiple" in category or len(tools) > 1:
        mode = "multiple"
    else:
        mode = "simple"
    checker = _bfcl_checker()  # a missing package is a setup error: it raises
    try:
        result = checker(tools, parsed.calls, gold, "Python", mode, "dipo")
    except Exception as err:
        # The checker indexes the model output without guarding types (e.g. a non-dict argument value) and may
        # convert huge numbers: whatever it raises on model output is a wrong answer, not a crash.
        return False, f"checker_error:{type(err).__name__}"
    return bool(result["valid"]), (None if result["valid"] else result.get("error_type"))


# ---------------------------------------------------------------------------------------------------------------------
# Graded reward (ToolRL-style)


def _standardize(value: Any) -> Any:
    if isinstance(value, str):  # BFCL's string normalisation: case, spaces and a few punctuation marks ignored
        return re.sub(r"[ ,./\-_*^]", "", value).lower().replace("'", '"')
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an integer beyond float range (309+ digits) is compared exactly
            return value
    if isinstance(value, (list, tuple)):
        return [_standardize(v) for v in value]
    if isinstance(value, dict):
        return {k: _standardize(v) for k, v in value.items()}
    return value


def value_matches(value: Any, acceptable: Sequence[Any]) -> bool:
    """True if ``value`` equals one acceptable value (after BFCL-style string and number normalisation)."""
    target = _standardize(value)
    return any(a != "" and _standardize(a) == target for a in acceptable)


def _pair_scores(pred: Call, gold: Call) -> tuple[float, float, float]:
    """(name match, parameter-name Jaccard, number of matching values) for one predicted and one gold call."""
    (p_name, p_args), (g_name, g_args) = next(iter(pred.items())), next(iter(gold.items()))
    required = {k for k, v in g_args.items() if "" not in v}
    gold_keys = required | {k for k in g_args if k in p_args}
    pred_keys = set(p_args)
    union = gold_keys | pred_keys
    key_score = len(gold_keys & pred_keys) / len(union) if union else 1.0
    value_score = float(sum(value_matches(p_args[k], g_args[k]) for k in gold_keys & pred_keys))
    return float(p_name == g_name), key_score, value_score


def toolrl_correctness(pred: list[Call], gold: list[Call]) -> float:
    """ToolRL's correctness score in [0, 1] (Qian et al. 2025, "ToolRL", Sec. 3.3), before its [-3, 3] scaling:
    (tool-name Jaccard + Σ parameter-name Jaccard + Σ matching values) / (1 + |gold calls| + Σ |gold params|),
    with predicted and gold calls paired to maximise the score (brute force up to 6 calls, else greedy)."""
    if not gold:
        return 1.0 if not pred else 0.0
    gold_names = [next(iter(g)) for g in gold]
    pred_names = [next(iter(p)) for p in pred]
    union = set(gold_names) | set(pred_names)
    name_score = len(set(gold_names) & set(pred_names)) / len(union) if union else 1.0
    max_score = 1 + len(gold) + sum(len({k for k, v in next(iter(g.values())).items() if "" not in v}) for g in gold)
    table = [[_pair_scores(p, g) for g in gold] for p in pred]

    def pair_total(i: int, j: int) -> float:
        name, keys, values = table[i][j]
        return (keys + values) if name else 0.0

    best = 0.0
    if pred and len(pred) <= 6 and len(gold) <= 6:
        small, large = (len(pred), len(gold))
        if small <= large:
            for perm in itertools.permutations(range(large), small):
                best = max(best, sum(pair_total(i, j) for i, j in enumerate(perm)))
        else:
            for perm in itertools.permutations(range(small), large):
                best = max(best, sum(pair_total(i, j) for j, i in enumerate(perm)))
    elif pred:
        used: set[int] = set()
        for j in range(len(gold)):
            options = [(pair_total(i, j), i) for i in range(len(pred)) if i not in used]
            if options:
                score, i = max(options)
                used.add(i)
                best += score
    return min(1.0, (name_score + best) / max_score)


def toolrl_score(parsed: ParsedCalls, gold: list[Call]) -> tuple[float, float]:
    """ToolRL's ``(format, correctness)``: format 1 if the output is a well-formed call list (or, when no call is
    expected, plain text / an empty list); correctness from :func:`toolrl_correctness` (0 if unparseable)."""
    if not gold:
        return 1.0, (1.0 if not parsed.has_calls else 0.0)
    if parsed.calls is None:
        return 0.0, 0.0
    return 1.0, toolrl_correctness(parsed.calls, gold)
