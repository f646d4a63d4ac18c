"""Function calling, parsing: model output into calls, bounded so that it never hangs or raises.

``Call`` is the one shape of a call everywhere in :mod:`dipo.tasks.toolcall`: ``{function_name: {param: value}}``
(BFCL's decoded form; a parsed call holds one value per parameter). Gold answers use the same outer shape with a
list of acceptable values per parameter (BFCL's possible-answer form, see
:func:`dipo.tasks.toolcall.score.normalize_ground_truth`)."""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass
from typing import Any

#: One call: ``{function_name: {param: value}}`` (gold answers: ``{function_name: {param: [acceptable values]}}``).
Call = dict[str, dict[str, Any]]


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
_QUOTE_RE = re.compile(r"['\"]")
#: What can end or escape a string literal, by its opening quote (a one-line string also ends, unterminated, at a
#: line end).
_STRING_STOP_RE = {
    "'": re.compile(r"['\\\n]"),
    '"': re.compile(r'["\\\n]'),
    "'''": re.compile(r"['\\]"),
    '"""': re.compile(r'["\\]'),
}


def _string_end(text: str, pos: int, quote: str) -> int | None:
    """Index just after the string literal whose body starts at ``pos`` (opened by ``quote``); None if it is not
    terminated. Linear: every step moves past the character found."""
    stop = _STRING_STOP_RE[quote]
    while (hit := stop.search(text, pos)) is not None:
        char, at = hit.group(), hit.start()
        if char == "\\":
            pos = at + 2  # an escaped character
        elif char == "\n":
            return None
        elif text.startswith(quote, at):
            return at + len(quote)
        else:
            pos = at + 1  # a lone quote inside a triple-quoted string
    return None


def _code_outside_strings(text: str) -> str:
    """``text`` with every string literal emptied (``f(a="((")`` → ``f(a="")``): brackets and signs inside a string
    are characters of a value, not nesting. An unterminated string runs to the end (Python's parser refuses it).
    One linear pass (string prefixes such as ``r`` stay as code)."""
    out, pos = [], 0
    while (match := _QUOTE_RE.search(text, pos)) is not None:
        start = match.start()
        quote = text[start] * 3 if text.startswith(text[start] * 3, start) else text[start]
        out.append(text[pos:start] + '""')
        end = _string_end(text, start + len(quote), quote)
        if end is None:
            return "".join(out)
        pos = end
    out.append(text[pos:])
    return "".join(out)


def _check_nesting(text: str) -> None:
    """``ValueError`` if ``text`` nests brackets, or chains signs (``- - -1``), deeper than :data:`MAX_NESTING`
    outside its string literals: checked in one pass before Python's parser, which fails on those with MemoryError
    or RecursionError."""
    text = _code_outside_strings(text)
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
