"""Task registry: built-in lookups, registration, duplicate and unknown-name errors."""

from __future__ import annotations

import pytest

from dipo.tasks import registry
from dipo.tasks.data import TaskRow
from dipo.tasks.registry import TaskDefaults, get_task, list_tasks, register_task


def test_builtin_tasks_are_registered():
    assert {"math", "toolcall", "arithmetic", "nl_arithmetic"} <= set(list_tasks())
    spec = get_task("nl_arithmetic")
    assert spec.binary and spec.defaults.max_new_tokens == 16 and spec.defaults.dataset == "add1"


def test_nl_arithmetic_loader_and_reward():
    spec = get_task("nl_arithmetic")
    rows = spec.load(dataset="add1,mul1", split="heldout", limit=5, seed=1)
    assert len(rows) == 5 and all(isinstance(r, TaskRow) for r in rows)
    assert {r.meta["level"] for r in rows} <= {"add1", "mul1"}
    shifted = spec.load(dataset="add1,mul1", split="heldout", limit=3, offset=2, seed=1)
    assert [r.id for r in shifted] == [r.id for r in rows[2:5]]
    reward = spec.make_reward()
    assert reward(prompts=None, completions=[rows[0].answer, "x"], answer=[rows[0].answer] * 2) == [1.0, 0.0]
    with pytest.raises(ValueError, match="unknown options"):
        spec.load(dataset="add1", limit=1, colour="red")


def test_arithmetic_loader_matches_the_demo_task_and_reward():
    from dipo.tasks.arithmetic import ArithmeticTask

    spec = get_task("arithmetic")
    rows = spec.load(dataset="1,2", limit=4, seed=0)
    items = ArithmeticTask(levels=(1, 2), ops=("+",)).sample(4, seed=0, split="heldout")
    assert [(r.prompt, r.answer) for r in rows] == [(it.prompt, it.answer) for it in items]
    assert spec.defaults.chat_template is False
    reward = spec.make_reward()
    assert reward(prompts=None, completions=[rows[0].answer, "x"], answer=[rows[0].answer] * 2) == [1.0, 0.0]
    with pytest.raises(ValueError, match="comma list of levels"):
        spec.load(dataset="one", limit=1)


def test_unknown_task_lists_the_registered_ones():
    registered = "arithmetic, decimal_compare, letter_count, math"
    with pytest.raises(KeyError, match=f"unknown task 'nope'; registered tasks: {registered}"):
        get_task("nope")


def test_register_and_duplicate(monkeypatch):
    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))

    @register_task("unit_test_task", reward=lambda: lambda **kw: [], defaults=TaskDefaults(k=4))
    def load(*, dataset=None, split="train", limit=None, offset=0, seed=0, **options):
        return [TaskRow("p", "1", "id-0", "unit")]

    assert get_task("unit_test_task").defaults.k == 4
    assert get_task("unit_test_task").load()[0].id == "id-0"
    with pytest.raises(ValueError, match="already registered"):
        register_task("unit_test_task", reward=lambda: None)(load)
    register_task("unit_test_task", reward=lambda: None, overwrite=True)(load)
    with pytest.raises(ValueError, match="non-empty string"):
        register_task("", reward=lambda: None)
    with pytest.raises(TypeError, match="reward must be a callable"):
        register_task("x", reward=None)  # type: ignore[arg-type]


def test_real_tasks_carry_their_rewards_and_evaluation():
    math_spec, toolcall = get_task("math"), get_task("toolcall")
    assert math_spec.reward("auto").binary and math_spec.reward("accuracy").binary
    assert math_spec.format_reward is not None and toolcall.format_reward is None
    assert toolcall.reward("bfcl").binary and not toolcall.reward("toolrl").binary
    with pytest.raises(ValueError, match="math reward must be 'accuracy' \\(or 'auto'\\), got 'bfcl'"):
        math_spec.reward("bfcl")
    from dipo.evaluation.harness import BFCL_SCORING, MATH_SCORING

    assert math_spec.evaluation.scorer() is MATH_SCORING and toolcall.evaluation.scorer() is BFCL_SCORING
    assert (math_spec.evaluation.defaults.k, toolcall.evaluation.defaults.k) == (8, 1)
    assert (math_spec.evaluation.defaults.temperature, toolcall.evaluation.defaults.temperature) == (0.6, 0.0)
    assert list_tasks(evaluable=True) == ["math", "toolcall"]
    from dipo.tasks.toolcall import BFCL_EVAL_CATEGORIES, BFCL_SIZES

    assert toolcall.evaluation.benchmarks == BFCL_EVAL_CATEGORIES
    assert toolcall.evaluation.benchmark_names == tuple(BFCL_SIZES)  # dipo eval --benchmarks: BFCL categories only


def test_toolcall_loader_reads_bfcl_names_and_user_files(tmp_path, monkeypatch):
    import json

    from dipo.tasks import toolcall as toolcall_module
    from dipo.tasks.data import FieldMap
    from dipo.tasks.registry import DataOptions

    calls = []

    def fake_bfcl(category, limit=None):
        calls.append((category, limit))
        return []

    monkeypatch.setattr(toolcall_module, "load_bfcl", fake_bfcl)
    spec = get_task("toolcall")
    spec.load(dataset="simple", limit=2)
    spec.load(dataset="bfcl:live_simple", limit=3, offset=1)
    spec.load(dataset="bfcl_train")
    assert calls[:2] == [("simple", 2), ("live_simple", 4)]
    assert [c for c, _ in calls[2:]] == list(toolcall_module.BFCL_TRAIN_CATEGORIES)
    data = tmp_path / "calls.jsonl"
    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]
    data.write_text(json.dumps({"q": "call f", "gold": [{"name": "f", "arguments": {}}], "tools": tools}) + "\n")
    rows = spec.load(dataset=str(data), data=DataOptions(fields=FieldMap(prompt="q", answer="gold")))
    assert len(rows) == 1 and json.loads(rows[0].answer) == [{"f": {}}]


def test_harness_scoring_comes_from_the_registry():
    from dipo.evaluation.harness import SCORINGS, scoring_for

    assert scoring_for("math") is SCORINGS["math"] and scoring_for("toolcall") is SCORINGS["bfcl"]
    with pytest.raises(ValueError, match="has no evaluation; dipo eval evaluates math, toolcall"):
        scoring_for("nl_arithmetic")


def test_each_builtin_module_declares_its_task():
    import importlib

    for module in registry.BUILTIN_TASK_MODULES:
        spec = importlib.import_module(module).TASK
        assert get_task(spec.name) is spec, module  # the registry holds the module's own spec
    assert set(list_tasks()) >= {importlib.import_module(m).TASK.name for m in registry.BUILTIN_TASK_MODULES}


def test_listing_tasks_imports_no_optional_dependency():
    """Listing (CLI help) imports every task module but none of the heavy optional packages, nor torch."""
    import subprocess
    import sys

    code = (
        "import sys; from dipo.tasks.registry import list_tasks; list_tasks(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & "
        "{'reasoning_gym', 'math_verify', 'bfcl_eval', 'torch', 'transformers', 'datasets'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_register_a_spec_and_the_deprecated_scoring_name(monkeypatch):
    from dipo.evaluation.harness import MATH_SCORING, scoring_for
    from dipo.tasks import spec as spec_module

    monkeypatch.setattr(registry, "_TASKS", dict(registry._TASKS))
    monkeypatch.setattr(spec_module, "_WARNED", set())
    math_spec = get_task("math")
    old_style = registry.TaskEvaluation(math_spec.evaluation.defaults, ("gsm8k",), "math")
    registry.register(registry.TaskSpec("old_style", math_spec.load, math_spec.make_reward, evaluation=old_style))
    with pytest.warns(FutureWarning, match="scoring='math'\\) is deprecated"):
        assert scoring_for("old_style") is MATH_SCORING
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert scoring_for("old_style") is MATH_SCORING  # warns once per process
    with pytest.raises(ValueError, match=r"already registered \(by dipo\.tasks\.math\)"):
        registry.register(registry.TaskSpec("old_style", math_spec.load, math_spec.make_reward))


def test_cli_help_lists_the_registered_tasks(capsys):
    from dipo.cli.main import main
    from dipo.cli.train import TaskArguments

    with pytest.raises(SystemExit):
        main(["probe", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert f"a registered task: {', '.join(list_tasks())}" in help_text
    train_help = TaskArguments.__dataclass_fields__["task"].metadata["help"]
    assert all(repr(name) in train_help for name in list_tasks())


def test_data_options_reach_both_user_dataset_loaders(tmp_path):
    """``DataOptions.dataset_kwargs`` holds exactly the reading options the math and function-calling loaders share,
    and ``load_task`` hands every one of them on (field names, skip broken rows, the skip ceiling)."""
    import inspect
    import json

    from dipo.tasks.data import FieldMap
    from dipo.tasks.math import load_math_dataset
    from dipo.tasks.registry import DataOptions
    from dipo.tasks.toolcall import load_toolcall_dataset

    shared = set(inspect.signature(load_math_dataset).parameters) & set(
        inspect.signature(load_toolcall_dataset).parameters
    )
    assert set(DataOptions().dataset_kwargs()) == shared - {"source", "split", "limit"}

    tools = [{"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}}]
    rows = [{"q": "1+1?", "a": "2", "t": tools, "c": [{"name": "f", "arguments": {}}]}, {"q": "broken"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    strict = DataOptions(fields=FieldMap(prompt="q", answer="a"))
    with pytest.raises(ValueError, match=r"row 1, field 'a': missing"):
        get_task("math").load(dataset=str(path), data=strict)
    lenient = DataOptions(fields=FieldMap(prompt="q", answer="a"), on_error="skip", max_skip_fraction=0.5)
    assert [r.answer for r in get_task("math").load(dataset=str(path), data=lenient)] == ["2"]
    calls = DataOptions(
        fields=FieldMap(prompt="q", answer="c"), tools_field="t", on_error="skip", max_skip_fraction=0.5
    )
    assert [json.loads(r.answer) for r in get_task("toolcall").load(dataset=str(path), data=calls)] == [[{"f": {}}]]
