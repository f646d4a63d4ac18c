"""Function calling: output parsing, BFCL AST checker agreement on gold-derived answers, ToolRL-style graded reward,
bad input and the BFCL v3 loaders."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest

from dipo.tasks.data import DataFieldError
from dipo.tasks.toolcall import (
    ParsedCalls,
    ToolRLReward,
    build_toolcall_prompt,
    normalize_ground_truth,
    parse_tool_calls,
    toolrl_correctness,
    toolrl_score,
    validate_tools,
)

needs_bfcl = pytest.mark.skipif(
    importlib.util.find_spec("bfcl") is None or importlib.util.find_spec("bfcl.eval_checker") is None,
    reason="nvidia-bfcl not installed (`dipo assets` / `make assets`; it imports as `bfcl`)",
)

TOOLS = [
    {
        "name": "math.hypot",
        "description": "Euclidean norm.",
        "parameters": {
            "type": "dict",
            "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}, "z": {"type": "integer"}},
            "required": ["x", "y"],
        },
    }
]
GOLD = [{"math.hypot": {"x": [4], "y": [5], "z": ["", 0]}}]


# --- parsing


@pytest.mark.parametrize(
    ("text", "calls", "syntax"),
    [
        ("[math.hypot(x=4, y=5)]", [{"math.hypot": {"x": 4, "y": 5}}], "python"),
        ("math.hypot(x=4, y=-5)", [{"math.hypot": {"x": 4, "y": -5}}], "python"),
        ("```python\n[f(a='s', b=[1, 2], c={'k': True}), g()]\n```", [{"f": {"a": "s", "b": [1, 2], "c": {"k": True}}},
                                                                      {"g": {}}], "python"),
        ("[f(n=2**10, m=3*4)]", [{"f": {"n": 1024, "m": 12}}], "python"),
        ('{"name": "f", "arguments": {"a": 1}}', [{"f": {"a": 1}}], "json"),
        ('[{"name": "f", "arguments": "{\\"a\\": 1}"}, {"name": "g", "parameters": {}}]', [{"f": {"a": 1}}, {"g": {}}],
         "json"),
        ('<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>', [{"f": {"a": 1}}], "json"),
        ('{"tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}', [{"f": {"a": 1}}], "json"),
        ("Sure! Here you go: [f(a=1)]", [{"f": {"a": 1}}], "python"),
        ("[]", [], "json"),
    ],
)  # fmt: skip
def test_parse_tool_calls(text: str, calls: list[dict[str, Any]], syntax: str) -> None:
    parsed = parse_tool_calls(text)
    assert (parsed.calls, parsed.syntax) == (calls, syntax)


@pytest.mark.parametrize(
    "text",
    ["The area is 25.", "", "[f(1, 2)]", "[f(a=__import__('os').system('true'))]", "[f(a=9**9**9)]", "{not json"],
)
def test_parse_tool_calls_rejects(text: str) -> None:
    parsed = parse_tool_calls(text)
    assert parsed.calls is None and not parsed.has_calls and parsed.error


# --- schemas and ground truth


def test_validate_tools_and_bad_json() -> None:
    openai_style = [{"type": "function", "function": {"name": "f", "parameters": {"properties": {}}}}]
    assert validate_tools(json.dumps(openai_style))[0]["parameters"]["required"] == []
    with pytest.raises(DataFieldError, match=r"field 'tools': not valid JSON"):
        validate_tools('[{"name": "f",', where="train.jsonl")
    with pytest.raises(DataFieldError, match=r"tools\[0\].*name"):
        validate_tools([{"description": "no name"}])


def test_normalize_ground_truth_forms() -> None:
    assert normalize_ground_truth([{"name": "f", "arguments": {"a": 1}}]) == [{"f": {"a": [1]}}]
    assert normalize_ground_truth(json.dumps(GOLD)) == GOLD
    assert normalize_ground_truth("[]") == []
    with pytest.raises(DataFieldError, match=r"ground_truth\[0\]"):
        normalize_ground_truth([{"f": 3}])


def test_build_toolcall_prompt_merges_system() -> None:
    messages = build_toolcall_prompt([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "q"}],
                                     TOOLS)  # fmt: skip
    assert [m["role"] for m in messages] == ["system", "user"]
    assert '"math.hypot"' in messages[0]["content"] and messages[0]["content"].endswith("Be terse.")


# --- graded reward


def test_toolrl_correctness_hand_computed() -> None:
    gold = [{"f": {"a": [1], "b": ["x"]}}]
    assert toolrl_correctness([{"f": {"a": 1, "b": "x"}}], gold) == 1.0
    # name 1 + keys 1 + values 1 of 2 -> 3 / (1 + 1 + 2)
    assert toolrl_correctness([{"f": {"a": 1, "b": "y"}}], gold) == pytest.approx(3 / 4)
    # name 1 + keys |{a}|/|{a,b}| = 0.5 + values 1 -> 2.5 / 4
    assert toolrl_correctness([{"f": {"a": 1}}], gold) == pytest.approx(2.5 / 4)
    # wrong name: name Jaccard 0 and the pair scores nothing
    assert toolrl_correctness([{"g": {"a": 1, "b": "x"}}], gold) == 0.0
    # parallel calls in any order: pairing maximises the score
    gold2 = [{"f": {"a": [1]}}, {"f": {"a": [2]}}]
    assert toolrl_correctness([{"f": {"a": 2}}, {"f": {"a": 1}}], gold2) == 1.0
    # optional parameter ("" acceptable) may be omitted
    assert toolrl_correctness([{"math.hypot": {"x": 4, "y": 5}}], GOLD) == 1.0
    assert toolrl_correctness([], []) == 1.0 and toolrl_correctness([{"f": {}}], []) == 0.0


@pytest.mark.parametrize(
    "value",
    ["(" * 65, ")" * 200 + "(" * 200, "[{" * 100, "-" * 80, "- " * 70, "'" + "(" * 100, '\\" (((' * 30],
    ids=["65 (", "unbalanced", "brackets", "dashes", "signs", "quote inside", "escaped quote"],
)
def test_brackets_and_signs_inside_strings_are_not_nesting(value: str) -> None:
    """Regression (issue 16): nesting was counted inside string literals, so a legal call whose string argument holds
    more than 64 "(" (or a run of 64 signs) was no call and scored 0."""
    gold = [{"f": {"text": [value]}}]
    for text in (f"[f(text={value!r})]", f"[f(text={json.dumps(value)})]"):
        assert parse_tool_calls(text).calls == [{"f": {"text": value}}], text
        assert ToolRLReward()(prompts=[""], completions=[text], answer=[json.dumps(gold)], tools=["[]"]) == [1.0]
    for quote in ('"""', "'''") if "\\" not in value else ():  # triple-quoted (escapes aside: Python's own rules)
        assert parse_tool_calls(f"[f(text={quote}a{value}{quote})]").calls == [{"f": {"text": "a" + value}}]
    assert parse_tool_calls("[f(text=g(" + "(" * 65 + "))]").calls is None  # outside a string: still refused
    assert parse_tool_calls('[f(text="' + "(" * 65 + ")]").calls is None  # an unterminated string is no call


def test_toolrl_reward_scales() -> None:
    completions = ["[math.hypot(x=4, y=5)]", "[math.hypot(x=4, y=6)]", "no call", "[other(x=1)]"]
    kwargs = {"answer": [json.dumps(GOLD)] * 4, "tools": [json.dumps(TOOLS)] * 4}
    unit = ToolRLReward()(prompts=[""] * 4, completions=completions, **kwargs)
    toolrl = ToolRLReward(scale="toolrl")(prompts=[""] * 4, completions=completions, **kwargs)
    assert unit[0] == 1.0 and toolrl[0] == 4.0
    assert 0.0 < unit[3] < unit[1] < unit[0]  # graded: right name + keys beat a wrong name
    assert unit[2] == 0.0 and toolrl[2] == -3.0  # unparseable: no format, no correctness
    assert toolrl == pytest.approx([7 * u - 3 for u in unit])
    assert toolrl_score(ParsedCalls(None, None), []) == (1.0, 1.0)  # irrelevance: plain text is right


def test_tool_reward_missing_column_is_loud() -> None:
    with pytest.raises(ValueError, match="no column 'answer'"):
        ToolRLReward()(prompts=[""], completions=["[f()]"], tools=["[]"])
    with pytest.raises(DataFieldError, match="not valid JSON"):
        ToolRLReward()(prompts=[""], completions=["[f()]"], answer=["[{"], tools=["[]"])


# --- BFCL checker and loaders


def _gold_value(value: Any) -> Any:
    """First acceptable value, recursing into nested dicts of acceptable-value lists."""
    if isinstance(value, dict):
        picked = {k: (v[0] if isinstance(v, list) and v else v) for k, v in value.items()}
        return {k: _gold_value(v) for k, v in picked.items() if v != ""}
    return value


def gold_derived_output(gold: list[dict[str, Any]]) -> str:
    """Python-call text built from the first acceptable value of every non-optional gold parameter."""
    calls = []
    for call in gold:
        (name, params), = call.items()  # fmt: skip
        args = {k: _gold_value(v[0]) for k, v in params.items() if v and v[0] != ""}
        calls.append(f"{name}(" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + ")")
    return "[" + ", ".join(calls) + "]"


@needs_bfcl
@pytest.mark.parametrize("category", ["simple", "multiple", "parallel", "parallel_multiple"])
def test_bfcl_checker_agrees_with_gold(category: str) -> None:
    from dipo.tasks.toolcall import BFCLAccuracyReward, bfcl_check, load_bfcl

    rows = load_bfcl(category)
    passed = 0
    for row in rows:
        gold, tools = json.loads(row.answer), json.loads(row.meta["tools"])
        ok, _ = bfcl_check(tools, parse_tool_calls(gold_derived_output(gold)), gold, category)
        passed += ok
    # Gold-derived outputs pass 99-100 % of rows (measured: simple 397/400, multiple 199/200, parallel 200/200,
    # parallel_multiple 199/200); the misses come from taking the first acceptable value of nested gold answers.
    assert passed / len(rows) >= 0.98, (category, passed, len(rows))
    # Wrong answers fail: drop the last call, or change the function name.
    row = rows[0]
    gold, tools = json.loads(row.answer), json.loads(row.meta["tools"])
    assert not bfcl_check(tools, parse_tool_calls(gold_derived_output(gold[:-1]) or "[]"), gold, category)[0]
    renamed = [{"not_" + next(iter(c)): next(iter(c.values()))} for c in gold]
    assert not bfcl_check(tools, parse_tool_calls(gold_derived_output(renamed)), gold, category)[0]
    # The TRL reward returns the same verdicts.
    reward = BFCLAccuracyReward()
    out = reward(prompts=[""] * 2, completions=[gold_derived_output(gold), "no call"], answer=[row.answer] * 2,
                 tools=[row.meta["tools"]] * 2, category=[category] * 2)  # fmt: skip
    assert out == [1.0, 0.0]


@needs_bfcl
def test_bfcl_irrelevance_and_json_syntax() -> None:
    from dipo.tasks.toolcall import bfcl_check, load_bfcl

    row = load_bfcl("irrelevance", limit=1)[0]
    tools = json.loads(row.meta["tools"])
    assert bfcl_check(tools, parse_tool_calls("None of the functions can be used."), [], "irrelevance")[0]
    name = tools[0]["name"]
    assert not bfcl_check(tools, parse_tool_calls(f"[{name}(weight=1.0, height=2.0)]"), [], "irrelevance")[0]
    json_call = json.dumps({"name": "math.hypot", "arguments": {"x": 4, "y": 5}})
    assert bfcl_check(TOOLS, parse_tool_calls(json_call), GOLD, "simple")[0]


@needs_bfcl
def test_bfcl_loader_row_counts() -> None:
    from dipo.tasks.toolcall import BFCL_EVAL_CATEGORIES, BFCL_SIZES, BFCL_TRAIN_CATEGORIES, load_bfcl

    for category in (*BFCL_EVAL_CATEGORIES, *BFCL_TRAIN_CATEGORIES):
        rows = load_bfcl(category)
        assert len(rows) == BFCL_SIZES[category], category
        assert all(r.meta["category"] == category for r in rows)
    assert BFCL_SIZES["simple"] == 400 and BFCL_SIZES["irrelevance"] == 240 and BFCL_SIZES["live_multiple"] == 1052
    train_ids = {r.id for c in BFCL_TRAIN_CATEGORIES for r in load_bfcl(c)}
    eval_ids = {r.id for c in BFCL_EVAL_CATEGORIES for r in load_bfcl(c)}
    assert not train_ids & eval_ids
    with pytest.raises(ValueError, match="unsupported BFCL category"):
        load_bfcl("java")


def test_user_toolcall_dataset(tmp_path) -> None:
    from dipo.tasks.toolcall import load_toolcall_dataset

    rows = [
        {"question": "hypot of 4 and 5", "tools": json.dumps(TOOLS),
         "calls": [{"name": "math.hypot", "arguments": {"x": 4, "y": 5}}]},
        {"question": "weather?", "tools": TOOLS, "calls": []},
        {"question": "broken", "tools": '[{"name": "f", ', "calls": []},
    ]  # fmt: skip
    path = tmp_path / "tools.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    from dipo.tasks.data import FieldMap

    fields = FieldMap(prompt="question", answer="calls")
    with pytest.raises(DataFieldError, match=r"row 2, field 'tools': not valid JSON"):
        load_toolcall_dataset(str(path), fields)
    ok = load_toolcall_dataset(str(path), fields, on_error="skip", max_skip_fraction=0.5)
    assert [r.meta["category"] for r in ok] == ["simple", "irrelevance"]
    assert json.loads(ok[0].answer) == [{"math.hypot": {"x": [4], "y": [5]}}]


def test_toolrl_rewards_drive_dipo_graded_mode() -> None:
    """ToolRL rewards through dipo.core's graded path (spec §6, graded rule): a group whose completions all get the
    same partial score is hard (below the 1.0 threshold), an all-exact group is easy, a mixed group is normal; BRR
    moves the maximum-PPL response of the hard group up and never touches the verifier rewards."""
    torch = pytest.importorskip("torch")
    from dipo.core import DiPO, DiPOCoreConfig

    partial, exact = "[math.hypot(x=4, y=6)]", "[math.hypot(x=4, y=5)]"
    completions = [partial] * 4 + [exact] * 4 + [exact, partial, exact, partial]
    kwargs = {"answer": [json.dumps(GOLD)] * 12, "tools": [json.dumps(TOOLS)] * 12}
    rewards = torch.tensor(ToolRLReward()(prompts=[""] * 12, completions=completions, **kwargs))
    assert 0.0 < rewards[0] < 1.0 and rewards[4] == 1.0
    # Hard group: over-confident partial answers (low log-PPL, EL); easy group: one lucky exact answer with high
    # log-PPL (CH). PSD's threshold falls between 0.07 and 0.80; the point-estimate judgment passes (5/9 correct
    # below, 2/3 wrong above), so BRR rewards the hard group's max-PPL response and penalises the easy group's.
    log_ppl = torch.tensor([0.02, 0.03, 0.025, 0.035, 0.05, 0.06, 0.07, 0.90, 0.04, 0.80, 0.05, 0.85])
    config = DiPOCoreConfig(reward_mode="graded", correct_threshold=1.0, judgment_confidence=None)
    out = DiPO(config).step(rewards, log_ppl, group_size=4)
    assert out.group_types.tolist() == [1, 2, 0]  # hard, easy, normal
    assert torch.equal(out.base_advantages[:8], torch.zeros(8))  # extreme groups: no base signal
    assert out.judgment.passed and 0.07 < out.threshold < 0.80
    assert out.realloc_mask.tolist() == [True] * 8 + [False] * 4
    assert out.realloc_rewards[3] > rewards[3] and torch.equal(out.realloc_rewards[:3], rewards[:3])
    assert out.realloc_rewards[7] < rewards[7] and torch.equal(out.realloc_rewards[4:7], rewards[4:7])
    assert torch.equal(out.realloc_rewards[8:], rewards[8:])  # the normal group is never touched
    assert out.advantages[3] > 0 > out.advantages[7]
