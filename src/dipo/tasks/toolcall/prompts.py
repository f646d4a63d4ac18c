"""Function calling, prompts: tool schemas read and checked, and the BFCL-style system prompt that lists them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from dipo.tasks.data import (
    DataFieldError,
)

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
