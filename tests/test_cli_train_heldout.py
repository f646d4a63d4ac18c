"""``dipo train``'s held-out evaluation and run summary (what ``scripts/real_rl_arith.py`` did, issue 17 item 5).

Runs are 2 steps of 4 completions of 4 tokens of a tiny local Qwen2 (word-level tokenizer with a chat template) on
the generated ``nl_arithmetic`` task; the held-out set is 3 prompts x 2 samples.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from dipo.cli.main import main
from dipo.cli.train import load_task_rows, parse

TRAIN_OPTIONS = [
    "--task", "nl_arithmetic", "--dataset", "add1,mul1", "--dataset_limit", "8",
    "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "4",
    "--max_steps", "2", "--logging_steps", "1", "--save_strategy", "no", "--report_to", "none", "--use_cpu", "true",
    "--disable_tqdm", "true", "--preset", "dipo", "--dipo_log_diagnostics", "true", "--seed", "0",
    "--mask_truncated_completions", "false",
    "--heldout_prompts", "3", "--heldout_k", "2", "--heldout_batch_size", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_chat(tmp_path_factory) -> Path:
    """A tiny model folder whose tokenizer has a chat template."""
    from dipo.testing import CHAT_TEMPLATE, build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("heldout") / "tiny", chat_template=CHAT_TEMPLATE)


def train(model: Path, out: Path, *extra: str) -> dict:
    assert main(["train", "--model_name_or_path", str(model), "--output_dir", str(out), *TRAIN_OPTIONS, *extra]) == 0
    return json.loads((out / "train_summary.json").read_text())


@pytest.fixture(scope="module")
def summary(tiny_chat: Path, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "run"
    return out, train(tiny_chat, out)


def steps(summary: dict) -> list[dict]:
    return [row for row in summary["log_history"] if "reward" in row]


def test_summary_holds_heldout_before_and_after(summary) -> None:
    _, run = summary
    for when in ("before", "after"):
        metrics = run[f"heldout_{when}"]
        assert set(metrics) >= {"mean@2", "pass@1", "pass@2", "truncated", "seconds", "examples"}
        assert 0.0 <= metrics["mean@2"] <= metrics["pass@2"] <= 100.0
    assert run["task"]["heldout_prompts"] == 3 and run["preset"] == "dipo" and run["settings"]["seed"] == 0
    assert run["train_seconds"] > 0 and run["total_seconds"] >= run["train_seconds"]
    assert [row["step"] for row in steps(run)] == [1, 2]
    assert all("dipo/frac_hard" in row for row in steps(run))


def test_same_seed_same_numbers_and_heldout_before_keeps_the_training_stream(summary, tiny_chat, tmp_path) -> None:
    """The same seed gives the same held-out numbers and training; measuring "before" (which seeds its own sampling)
    leaves the training's random stream as it is (fork_rng): the run without it trains identically."""
    _, first = summary
    again = train(tiny_chat, tmp_path / "again")
    assert again["heldout_before"] == first["heldout_before"] | {"seconds": again["heldout_before"]["seconds"]}
    assert again["heldout_after"]["mean@2"] == first["heldout_after"]["mean@2"]
    assert again["heldout_after"]["examples"] == first["heldout_after"]["examples"]
    no_before = train(tiny_chat, tmp_path / "no_before", "--no_heldout_before")
    assert "heldout_before" not in no_before
    keys = ("reward", "loss", "grad_norm", "entropy", "dipo/threshold_ppl")
    for row_a, row_b in zip(steps(first), steps(no_before), strict=True):
        assert {k: row_a.get(k) for k in keys} == {k: row_b.get(k) for k in keys}
    assert no_before["heldout_after"]["examples"] == first["heldout_after"]["examples"]


def test_summarize_prints_the_tables(summary, tmp_path, capsys) -> None:
    out, run = summary
    legacy = tmp_path / "legacy"  # a run of the removed scripts/real_rl_arith.py: real_rl.json, k in task.eval_k
    legacy.mkdir()
    old = dict(run, task={"eval_k": 2})
    (legacy / "real_rl.json").write_text(json.dumps(old))
    assert main(["train", "--summarize", str(out), str(legacy)]) == 0
    text = capsys.readouterr().out
    assert "| run | preset | held-out mean@2 before | after | pass@2 before | after | train s | total s |" in text
    row = f"| {out} | dipo | {run['heldout_before']['mean@2']:.3g} | {run['heldout_after']['mean@2']:.3g} |"
    assert row in text and f"| {legacy} | dipo |" in text
    assert sum(line.startswith("| 2 | ") for line in text.splitlines()) == 2  # step 2 of each run's per-step table


def test_summarize_without_summary_is_one_line(tmp_path, capsys) -> None:
    assert main(["train", "--summarize", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dipo train: --summarize:") and "train_summary.json" in err and "\n" not in err


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--heldout_k", "0"], "heldout_k must be >= 1, got 0"),
        (["--heldout_prompts", "-1"], "heldout_prompts must be >= 0"),
        (["--heldout_batch_size", "0"], "heldout_batch_size must be >= 1, got 0"),
        (["--threads", "0"], "threads must be >= 1, got 0"),
        (["--heldout_split", "test"], "split='test'"),
        (["--heldout_prompts", "100000"], "could not draw 100000 distinct heldout questions"),
    ],
)
def test_bad_heldout_options_fail_before_the_model_loads(option, message, tiny_chat, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr("dipo.cli.train.build_trainer", no_model)
    out = tmp_path / "out"
    argv = ["train", "--model_name_or_path", str(tiny_chat), "--output_dir", str(out), *TRAIN_OPTIONS, *option]
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("dipo ")]
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_heldout_rows_are_the_heldout_side(tmp_path) -> None:
    task, _, _ = parse(["--model_name_or_path", "m", "--output_dir", str(tmp_path), *TRAIN_OPTIONS])
    train_prompts = {str(r.prompt) for r in load_task_rows(task)}
    heldout = load_task_rows(task, heldout=True)
    assert len(heldout) == 3 and not train_prompts & {str(r.prompt) for r in heldout}


def test_every_registered_task_is_trainable(tmp_path) -> None:
    """`dipo train --task NAME --dataset D` loads rows and rewards of every task of the registry (D: the task's
    default dataset); tasks whose data or packages are not installed here are skipped."""
    from dipo.cli.train import build_rewards
    from dipo.tasks.registry import get_task, list_tasks

    loaded = []
    for name in list_tasks():
        dataset = get_task(name).defaults.dataset
        task, training, _ = parse(["--model_name_or_path", "m", "--task", name, "--dataset", dataset,
                                   "--dataset_limit", "3", "--output_dir", str(tmp_path)])  # fmt: skip
        try:
            rows = load_task_rows(task)
            funcs, _ = build_rewards(task, training)
        except (ImportError, FileNotFoundError):  # MissingReasoningGymError is an ImportError
            continue  # an optional package or asset that this machine lacks
        assert len(rows) == 3 and callable(funcs[0])
        loaded.append(name)
    assert {"nl_arithmetic", "arithmetic", "decimal_compare", "letter_count"} <= set(loaded)


def test_no_training_script_left() -> None:
    """One training entry point: the script that copied `dipo train`'s trainer builder is gone."""
    root = Path(__file__).resolve().parents[1]
    assert not (root / "scripts" / "real_rl_arith.py").exists() and not (root / "recipes" / "scripts").exists()
