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
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import operator
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dipo.tasks.data import (
    DataFieldError,
    FieldMap,
    OnError,
    TaskRow,
    completion_text,
    convert_rows,
    get_field,
    load_records,
    normalize_prompt,
)

logger = logging.getLogger(__name__)

Call = dict[str, dict[str, Any]]  # {function_name: {param: value}}, BFCL's decoded form

# BFCL's prompting-style system prompt (bfcl/model_handler/constant.py, DEFAULT_SYSTEM_PROMPT), Apache-2.0.
TOOL_SYSTEM_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. Based on "
    "the question, you will need to make one or more function/tool calls to achieve the purpose.\n"
    "If none of the functions can be used, point it out. If the given question lacks the parameters required by the "
    "function, also point it out.\n"
    "You should only return the function calls in your response.\n\n"
    "If you decide to invoke any of the function(s), you MUST put it in the format of "
    "[func_name1(params_name1=params_value1, params_name2=params_value2...), func_name2(params)]\n"
    "You SHOULD NOT include any other text in the response.\n\n"
    "Here is a list of functions in JSON format that you can invoke.\n{functions}\n"
)

# ---------------------------------------------------------------------------------------------------------------------
# Schemas and prompts


def parse_json_field(value: Any, where: str, field_name: str, expect: type = list) -> Any:
    """A field that holds JSON (a string) or the decoded value; raises :class:`DataFieldError` when it is invalid."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise DataFieldError(where, "-", field_name, f"not valid JSON ({err.msg} at char {err.pos})") from err
    if hasattr(value, "tolist"):
        value = value.tolist()
    if expect is list and isinstance(value, dict):
        value = [value]
    if not isinstance(value, expect):
        raise DataFieldError(where, "-", field_name, f"expected a JSON {expect.__name__}, got {type(value).__name__}")
    return value


def validate_tools(tools: Any, where: str = "tools", field_name: str = "tools") -> list[dict[str, Any]]:
    """Tool schemas as a list of ``{"name", "description", "parameters": {"properties", "required"}}``.

    Accepts a JSON string or list, BFCL's form, and OpenAI's ``{"type": "function", "function": {...}}`` wrapper.
    """
    tools = parse_json_field(tools, where, field_name, list)
    out = []
    for i, tool in enumerate(tools):
        if isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict):
            tool = tool["function"]
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise DataFieldError(where, "-", f"{field_name}[{i}]", "a tool needs a non-empty string 'name'")
        params = tool.get("parameters") or {"type": "dict", "properties": {}, "required": []}
        if not isinstance(params, dict) or not isinstance(params.get("properties", {}), dict):
            raise DataFieldError(where, "-", f"{field_name}[{i}].parameters", "must be an object with 'properties'")
        params = {"type": params.get("type", "dict"), **params}
        params.setdefault("properties", {})
        params.setdefault("required", [])
        out.append({**tool, "parameters": params})
    return out


def build_toolcall_prompt(
    question: Sequence[dict[str, str]] | str,
    tools: Sequence[dict[str, Any]],
    system_template: str = TOOL_SYSTEM_PROMPT,
) -> list[dict[str, str]]:
    """Chat prompt: BFCL's system prompt listing the tool schemas as JSON, then the conversation (a system message
    already in ``question`` is appended to ours, as BFCL does)."""
    system = system_template.format(functions=json.dumps(list(tools), ensure_ascii=False))
    messages = [{"role": "user", "content": question}] if isinstance(question, str) else [dict(m) for m in question]
    if messages and messages[0]["role"] == "system":
        system = f"{system}\n\n{messages[0]['content']}"
        messages = messages[1:]
    return [{"role": "system", "content": system}, *messages]


# ---------------------------------------------------------------------------------------------------------------------
# Parsing model output into calls


@dataclass(frozen=True)
class ParsedCalls:
    """Calls found in a completion. ``calls`` is None when the output is not in a call format (plain text);
    ``[]`` when it is an explicit empty list. ``syntax`` is ``python``, ``json`` or None."""

    calls: list[Call] | None
    syntax: str | None
    error: str | None = None

    @property
    def has_calls(self) -> bool:
        return bool(self.calls)


#: Outputs longer than this (characters) are not parsed: no call. BFCL-style answers take a few hundred.
MAX_OUTPUT_CHARS = 100_000
#: Deepest nesting accepted in an output: brackets and runs of signs in the text, the Python syntax tree, and the
#: values of the parsed arguments. Deeper output is not a call (Python's own parser fails on deep nesting with
#: MemoryError or RecursionError).
MAX_NESTING = 64
#: Most calls accepted in one output; more is degenerate output, not a call list.
MAX_CALLS = 64
#: Largest integer (in bits) that arithmetic in a Python call argument (``2**10``, ``3*4``) may produce; a result
#: that would be larger is refused before it is computed, so nested powers cannot hang the parser.
MAX_ARITHMETIC_BITS = 1024


def _short(node: ast.AST) -> str:
    return ast.unparse(node)[:80]


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if not isinstance(value, (int, float)):
            raise ValueError("unary operator on a non-number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True) if k is not None}
    if isinstance(node, ast.Name):
        return {"true": True, "false": False, "null": None, "none": None}.get(node.id.lower(), node.id)
    if isinstance(node, ast.Call):
        return _call_from_ast(node)
    if isinstance(node, ast.BinOp):  # e.g. 2**10, 3*4: BFCL evaluates these too
        return _arithmetic(node)
    raise ValueError(f"unsupported value {_short(node)!r}")


_ARITHMETIC = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


def _arithmetic(node: ast.AST) -> int | float:
    """Value of constant arithmetic: numbers, unary ``+``/``-`` and ``+ - * / // % **``, nothing that calls code.

    Bounded work: an integer product or power whose result would exceed :data:`MAX_ARITHMETIC_BITS` is refused
    from the operands' sizes before it is computed (``((9**64)**64)**64`` fails at once); floats cost O(1).
    Raises ``ValueError`` for anything else, a too-large or complex result, or a division by zero.
    """
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        value = node.value
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _arithmetic(node.operand)
        value = -value if isinstance(node.op, ast.USub) else value
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        if isinstance(left, int) and isinstance(right, int):
            size = max(abs(left).bit_length() - 1, 0)  # log2 |left|, rounded down
            if isinstance(node.op, ast.Mult) and left.bit_length() + right.bit_length() > MAX_ARITHMETIC_BITS + 1:
                raise ValueError(f"{_short(node)!r} is too large")
            if isinstance(node.op, ast.Pow) and right > 0 and size * right > MAX_ARITHMETIC_BITS:
                raise ValueError(f"{_short(node)!r} is too large")
        try:
            value = _ARITHMETIC[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError) as err:
            raise ValueError(f"{_short(node)!r}: {err}") from err
    else:
        raise ValueError(f"unsupported value {_short(node)!r}")
    if isinstance(value, int) and value.bit_length() > MAX_ARITHMETIC_BITS:
        raise ValueError(f"{_short(node)!r} is too large")
    if not isinstance(value, (int, float)):  # e.g. (-8) ** 0.5 is complex
        raise ValueError(f"{_short(node)!r} is not a real number")
    return value


def _call_name(func: ast.AST) -> str:
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        raise ValueError("call target is not a (dotted) name")
    parts.append(func.id)
    return ".".join(reversed(parts))


def _call_from_ast(node: ast.Call) -> Call:
    if node.args:
        raise ValueError(f"positional arguments in {_short(node)!r}; use keyword arguments")
    return {_call_name(node.func): {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}}


_BRACKET_RE = re.compile(r"[][(){}]")


def _check_nesting(text: str) -> None:
    """``ValueError`` if ``text`` nests brackets, or chains signs (``- - -1``), deeper than :data:`MAX_NESTING`:
    checked in one pass before Python's parser, which fails on those with MemoryError or RecursionError."""
    depth = 0
    for match in _BRACKET_RE.finditer(text):
        depth = depth + 1 if match.group() in "([{" else max(depth - 1, 0)
        if depth > MAX_NESTING:
            raise ValueError(f"brackets nested deeper than {MAX_NESTING}")
    if re.search(rf"[-+~](?:\s*[-+~]){{{MAX_NESTING}}}", text):
        raise ValueError(f"more than {MAX_NESTING} signs in a row")


def _check_tree_depth(tree: ast.AST) -> None:
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ValueError(f"expression nested deeper than {MAX_NESTING}")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


def parse_python_calls(text: str) -> list[Call]:
    """``[f(a=1), g.h(b="x")]`` or ``f(a=1)`` → calls. Raises ``ValueError``/``SyntaxError`` otherwise.

    Input longer than :data:`MAX_OUTPUT_CHARS` or nested deeper than :data:`MAX_NESTING` is refused before
    Python's parser sees it; what the parser still raises on pathological input (MemoryError, RecursionError)
    becomes ``ValueError``.
    """
    body = text.strip().strip("`").strip()
    if body.startswith("python"):
        body = body[len("python") :].strip()
    if len(body) > MAX_OUTPUT_CHARS:
        raise ValueError(f"longer than {MAX_OUTPUT_CHARS} characters")
    _check_nesting(body)
    try:
        tree = ast.parse(body, mode="eval").body
    except (MemoryError, RecursionError) as err:  # the parser's own stack limits: not a real out-of-memory
        raise ValueError(f"too complex for Python's parser ({type(err).__name__})") from err
    nodes = tree.elts if isinstance(tree, (ast.List, ast.Tuple)) else [tree]
    if len(nodes) > MAX_CALLS:
        raise ValueError(f"more than {MAX_CALLS} calls")
    _check_tree_depth(tree)
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            raise ValueError(f"{_short(node)!r} is not a function call")
        calls.append(_call_from_ast(node))
    return calls


def _json_call(obj: Any) -> Call:
    if not isinstance(obj, dict):
        raise ValueError("a JSON call must be an object")
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI tool_calls entry
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        args = json.loads(args)
    if isinstance(name, str) and isinstance(args, dict):
        return {name: args}
    if len(obj) == 1 and isinstance(next(iter(obj.values())), dict):  # BFCL form {name: {args}}
        return {str(next(iter(obj))): next(iter(obj.values()))}
    raise ValueError('a JSON call needs "name" and an "arguments" object')


def _tool_call_blocks(text: str) -> list[str]:
    """Contents of ``<tool_call>...</tool_call>`` blocks, found with ``str.find`` (linear in the text)."""
    blocks, pos = [], 0
    while (start := text.find("<tool_call>", pos)) != -1:
        end = text.find("</tool_call>", start)
        if end == -1:
            break
        blocks.append(text[start + len("<tool_call>") : end].strip())
        pos = end + len("</tool_call>")
    return blocks


def parse_json_calls(text: str) -> list[Call]:
    """``{"name": ..., "arguments": {...}}``, a list of those, ``<tool_call>`` blocks (Hermes/Qwen) or
    ``{"tool_calls": [...]}`` → calls. Raises ``ValueError`` otherwise."""
    blocks = _tool_call_blocks(text)
    if blocks:
        return [_json_call(json.loads(b)) for b in blocks]
    body = text.strip()
    if len(body) >= 6 and body.startswith("```") and body.endswith("```"):  # a fenced block, optionally ```json
        body = body[3:-3]
        body = (body[4:] if body.startswith("json") else body).strip()
    obj = json.loads(body)
    if isinstance(obj, dict) and isinstance(obj.get("tool_calls"), list):
        obj = obj["tool_calls"]
    if isinstance(obj, list) and len(obj) > MAX_CALLS:
        raise ValueError(f"more than {MAX_CALLS} calls")
    return [_json_call(o) for o in obj] if isinstance(obj, list) else [_json_call(obj)]


def _check_calls(calls: list[Call]) -> list[Call]:
    """``ValueError`` if there are more than :data:`MAX_CALLS` calls or an argument value nests deeper than
    :data:`MAX_NESTING` (the scorers recurse into values)."""
    if len(calls) > MAX_CALLS:
        raise ValueError(f"more than {MAX_CALLS} calls")
    stack: list[tuple[Any, int]] = [(call, 1) for call in calls]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise ValueError(f"argument values nested deeper than {MAX_NESTING}")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend((v, depth + 1) for v in value)
    return calls


_SPAN_START_RE = re.compile(r"\[\s*[A-Za-z_][\w.]*\(")
_SPAN_END_RE = re.compile(r"\)\s*\]")


def _call_list_span(text: str) -> str | None:
    """The span from the first ``[name(`` to the last ``)]`` after it (two linear scans, no backtracking)."""
    end = None
    for end in _SPAN_END_RE.finditer(text):  # noqa: B007 - the last one
        pass
    start = _SPAN_START_RE.search(text, 0, end.start()) if end else None
    return text[start.start() : end.end()] if start and end else None


# What a parser raises on malformed output (MemoryError and RecursionError: Python's and json's nesting limits).
_PARSE_ERRORS = (ValueError, SyntaxError, TypeError, KeyError, RecursionError, MemoryError, ZeroDivisionError,
                 OverflowError, AttributeError, IndexError)  # fmt: skip


def parse_tool_calls(text: str) -> ParsedCalls:
    """Calls in a completion, trying JSON forms, then BFCL's Python-call syntax. Never raises, and bounded: text that
    is not a string, longer than :data:`MAX_OUTPUT_CHARS`, nested deeper than :data:`MAX_NESTING` or with more than
    :data:`MAX_CALLS` calls is no call."""
    if not isinstance(text, str):
        return ParsedCalls(None, None, f"not text: {type(text).__name__}")
    text = text.strip()
    if not text:
        return ParsedCalls(None, None, "empty output")
    if len(text) > MAX_OUTPUT_CHARS:
        return ParsedCalls(None, None, f"output longer than {MAX_OUTPUT_CHARS} characters")
    errors = []
    for syntax, parser in (("json", parse_json_calls), ("python", parse_python_calls)):
        try:
            return ParsedCalls(_check_calls(parser(text)), syntax)
        except _PARSE_ERRORS as e:
            errors.append(f"{syntax}: {str(e)[:200]}")
    # A code fence or a leading sentence around a Python call list: parse the last [...] span.
    span = _call_list_span(text)
    if span and span != text:
        try:
            return ParsedCalls(_check_calls(parse_python_calls(span)), "python")
        except _PARSE_ERRORS as err:
            errors.append(f"python span: {str(err)[:200]}")
    return ParsedCalls(None, None, "; ".join(errors))


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
    from dipo.tasks.assets import package_dir

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
    questions = load_records(folder / where)
    answers: dict[str, Any] = {}
    answer_path = folder / "possible_answer" / where
    if answer_path.exists():
        answers = {r["id"]: r["ground_truth"] for r in load_records(answer_path)}
    elif "relevance" not in category:
        raise FileNotFoundError(f"{answer_path} is missing: BFCL category {category!r} needs possible answers")

    def convert(raw: dict[str, Any], index: int) -> TaskRow:
        tools = validate_tools(get_field(raw, "function", where, index), where, "function")
        turns = get_field(raw, "question", where, index)
        question = normalize_prompt(turns[0] if isinstance(turns[0], list) else turns, where, index, "question")
        gold: list[Any] = []  # irrelevance: no call expected; relevance: any call counts (scored by has_calls)
        if answers and "relevance" not in category:
            if raw.get("id") not in answers:
                raise DataFieldError(where, index, "id", f"{raw.get('id')!r} has no possible answer")
            gold = normalize_ground_truth(answers[raw["id"]], where, "ground_truth")
        return TaskRow(
            prompt=build_toolcall_prompt(question, tools),
            answer=json.dumps(gold),
            id=str(raw["id"]),
            source=f"bfcl_{category}",
            meta={"tools": json.dumps(tools), "category": category},
        )

    return convert_rows(questions[:limit], convert, where, on_error=on_error, max_skip_fraction=0.01)


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
    name = str(source)

    def convert(raw: dict[str, Any], index: int) -> TaskRow:
        prompt = normalize_prompt(get_field(raw, fields.prompt, name, index), name, index, fields.prompt)
        try:
            tools = validate_tools(get_field(raw, tools_field, name, index), name, tools_field)
            gold = normalize_ground_truth(get_field(raw, fields.answer, name, index), name, fields.answer)
        except DataFieldError as err:
            raise DataFieldError(name, index, err.field_name, err.problem) from err
        row_id = str(get_field(raw, fields.id, name, index)) if fields.id else f"{Path(name).stem}-{index}"
        messages = build_toolcall_prompt(prompt, tools) if add_tool_prompt else prompt
        category = "irrelevance" if not gold else ("parallel" if len(gold) > 1 else "simple")
        meta = {"tools": json.dumps(tools), "category": category}
        return TaskRow(prompt=messages, answer=json.dumps(gold), id=row_id, source=Path(name).stem, meta=meta)

    rows = load_records(source, split=split, config_name=config_name, limit=limit)
    return convert_rows(rows, convert, name, on_error=on_error, max_skip_fraction=max_skip_fraction)
