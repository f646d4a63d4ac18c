"""``dipo train`` / ``dipo eval`` reliability (issue 12): resuming, refusing to overwrite results, validating options
before touching files, models without a chat template, and one-line errors for missing or unwritable paths.

Everything runs offline on a tiny local Qwen2 model whose word-level tokenizer has no chat template
(``tests/trl_helpers.py``); a training run is 2 steps of 4 completions of 4 tokens.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("math_verify")

from dipo.cli.main import main

TRAIN_OPTIONS = [
    "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "4",
    "--max_steps", "2", "--save_steps", "1", "--logging_steps", "1", "--report_to", "none", "--use_cpu", "true",
    "--disable_tqdm", "true", "--preset", "dipo", "--mask_truncated_completions", "false",
    "--dipo_queue_batches", "4", "--seed", "0",
]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny model folder without chat template (``tiny``), the same with a chat template (``tiny_chat``) and a
    small math dataset."""
    from dipo.testing import CHAT_TEMPLATE, build_tiny_model_dir

    root = tmp_path_factory.mktemp("reliability")
    build_tiny_model_dir(root / "tiny")
    build_tiny_model_dir(root / "tiny_chat", chat_template=CHAT_TEMPLATE)
    rows = [{"prompt": f"what is {i} plus 0", "answer": str(i)} for i in range(8)]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def train_argv(workspace: Path, output_dir: Path, *extra: str, model: str = "tiny_chat") -> list[str]:
    return ["train", "--model_name_or_path", str(workspace / model), "--dataset", str(workspace / "data.jsonl"),
            "--output_dir", str(output_dir), *TRAIN_OPTIONS, *extra]  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(workspace: Path) -> Path:
    """A finished 2-step run (model with a chat template) with checkpoint-1 and checkpoint-2 (each holding
    dipo_state.pt)."""
    out = workspace / "run"
    assert main(train_argv(workspace, out)) == 0
    return out


def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(trained_run, out)
    return out


def error_line(capsys) -> str:
    """The command's error message, checked to be one line on stderr (no traceback; progress bars aside)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dipo ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


# ---------------------------------------------------------------------------------------------------------- train


def test_train_without_chat_template_uses_plain_text(workspace: Path, tmp_path: Path) -> None:
    """The math rows are chat messages; with a tokenizer without template they become plain text (TRL raised)."""
    from dipo.cli.train import build_trainer, load_task_rows, parse

    out = tmp_path / "plain"
    assert main(train_argv(workspace, out, "--max_steps", "1", "--save_strategy", "no", model="tiny")) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1
    task, training, model = parse(train_argv(workspace, tmp_path / "unused", model="tiny")[1:])
    rows = load_task_rows(task)
    assert not isinstance(rows[0].prompt, str)  # chat messages from the loader
    trainer = build_trainer(task, training, model, rows, [lambda completions, **_: [0.0] * len(completions)])
    prompt = trainer.train_dataset[0]["prompt"]
    assert isinstance(prompt, str) and prompt.startswith("what is 0 plus 0") and prompt.endswith("\n\n")


def test_train_resumes_from_checkpoint(trained_run: Path, workspace: Path, tmp_path: Path) -> None:
    import torch

    out = copy_run(trained_run, tmp_path)
    first = out / "checkpoint-1" / "model.safetensors"
    mtime = first.stat().st_mtime_ns
    saved = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"]
    argv = train_argv(workspace, out, "--max_steps", "3")
    assert main([*argv, "--resume_from_checkpoint", str(out / "checkpoint-2")]) == 0
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3]
    assert state["log_history"][:2] == saved  # steps 1 and 2 come from the checkpoint, not from a new run
    assert first.stat().st_mtime_ns == mtime  # checkpoint-1 was not written again
    queue2 = torch.load(out / "checkpoint-2" / "dipo_state.pt", weights_only=True)["queue"]
    queue3 = torch.load(out / "checkpoint-3" / "dipo_state.pt", weights_only=True)["queue"]
    assert len(queue2["log_ppl"]) == 2 and len(queue3["log_ppl"]) == 3  # the PPL queue was restored, then grew
    for old, new in zip(queue2["log_ppl"], queue3["log_ppl"][:2], strict=True):
        assert old.numel() > 0 and torch.equal(old, new)
    # "true": the latest checkpoint in output_dir
    assert main([*train_argv(workspace, out, "--max_steps", "4"), "--resume_from_checkpoint", "true"]) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4


def test_train_resume_errors(workspace: Path, tmp_path: Path, capsys) -> None:
    argv = train_argv(workspace, tmp_path / "empty")
    assert main([*argv, "--resume_from_checkpoint", "true"]) == 2
    assert "no checkpoint-N folder in output_dir" in error_line(capsys)
    assert main([*argv, "--resume_from_checkpoint", str(tmp_path / "checkpoint-7")]) == 2
    assert "checkpoint-7' does not exist" in error_line(capsys)


def test_train_refuses_an_output_dir_with_a_run(trained_run: Path, workspace: Path, tmp_path: Path, capsys) -> None:
    out = copy_run(trained_run, tmp_path)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert main(train_argv(workspace, out)) == 2
    err = error_line(capsys)
    assert "already holds a training run (checkpoint-1, checkpoint-2" in err and "--overwrite_output_dir" in err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    other = copy_run(trained_run, tmp_path / "other")  # resuming another run's checkpoint into `out`: refused too
    assert main([*train_argv(workspace, out), "--resume_from_checkpoint", str(other / "checkpoint-1")]) == 2
    assert "already holds a training run" in error_line(capsys)
    # --overwrite: the alias of --overwrite_output_dir
    assert main(train_argv(workspace, out, "--max_steps", "1", "--overwrite")) == 0
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 1


@pytest.mark.parametrize("limit", ["0", "-1"])
def test_train_dataset_limit_must_be_positive(workspace: Path, tmp_path: Path, capsys, limit: str) -> None:
    assert main(train_argv(workspace, tmp_path / "out", "--dataset_limit", limit)) == 2
    assert f"dataset_limit must be >= 1 (leave it unset for all rows), got {limit}" in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_train_one_line_errors_for_paths(workspace: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    argv = train_argv(workspace, out)
    model = argv.index("--model_name_or_path") + 1
    assert main([*argv[:model], "./no/such/dir", *argv[model + 1 :]]) == 2
    assert "model folder './no/such/dir' does not exist" in error_line(capsys)
    assert main(["train", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml' does not exist" in error_line(capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text("learning_rate: [1e-6\n")
    assert main(["train", "--config", str(broken)]) == 2
    assert "broken.yaml" in error_line(capsys)
    dataset = argv.index("--dataset") + 1
    assert main([*argv[:dataset], str(tmp_path / "missing.jsonl"), *argv[dataset + 1 :]]) == 2
    assert "missing.jsonl' is neither a file" in error_line(capsys)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(train_argv(workspace, blocker / "sub")) == 2
    assert "a_file/sub' is not writable" in error_line(capsys)
    assert not out.exists()


def test_train_read_only_output_dir(workspace: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import tempfile

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / "tmpXYZ"))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # tests run as root: chmod would not stop a write
    assert main(train_argv(workspace, tmp_path / "ro")) == 2
    err = error_line(capsys)
    assert "output_dir" in err and "ro' is not writable (permission denied:" in err


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--per_device_train_batch_size", "0", "per_device_train_batch_size must be >= 1, got 0"),
        ("--learning_rate", "-1", "learning_rate must be >= 0, got -1.0"),
        ("--learning_rate", "nan", "learning_rate must be a finite number, got nan"),
        ("--temperature", "0", "temperature must be > 0, got 0.0"),
        ("--top_p", "1.5", "top_p must be in (0, 1], got 1.5"),
        ("--max_completion_length", "0", "max_completion_length must be >= 1, got 0"),
        ("--max_steps", "0", "max_steps must be -1 or >= 1, got 0"),
        ("--num_train_epochs", "0", "num_train_epochs must be > 0, got 0.0 (with max_steps unset"),
    ],
)
def test_train_refuses_bad_numbers_before_loading(
    workspace: Path, tmp_path: Path, capsys, monkeypatch, option: str, value: str, message: str
) -> None:
    """Regression (issue 16): these failed after the model loaded, with a traceback, or trained nothing with exit 0."""
    import dipo.cli.train as train

    def build_trainer(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(train, "build_trainer", build_trainer)
    extra = ("--max_steps", "-1") if option == "--num_train_epochs" else ()  # epochs count only without max_steps
    assert main(train_argv(workspace, tmp_path / "out", *extra, option, value)) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_train_config_errors_name_file_and_line(workspace: Path, tmp_path: Path, capsys) -> None:
    """Regression (issue 16): a non-UTF-8 YAML gave a decode error without the file name, a deeply nested one a
    RecursionError traceback."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"learning_rate: 1e-6\n# r\xe9sum\xe9\n")
    assert main(["train", "--config", str(latin)]) == 2
    assert f"{latin}: line 2: byte 0xe9 at column 4 is not UTF-8 text" in error_line(capsys)
    deep = tmp_path / "deep.yaml"
    deep.write_text("learning_rate: " + "[" * 100_000 + "]" * 100_000 + "\n")
    assert main(["train", "--config", str(deep)]) == 2
    assert f"{deep}: a value nested too deeply to be read" in error_line(capsys)
    listed = tmp_path / "list.yaml"
    listed.write_text("- learning_rate\n")
    assert main(["train", "--config", str(listed)]) == 2
    assert "holds a YAML list; it must map option names to values" in error_line(capsys)


# ---------------------------------------------------------------------------------------------------------- eval


def eval_argv(workspace: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["eval", "--model", str(workspace / "tiny"), "--task", "math", "--dataset", str(workspace / "data.jsonl"),
            "--limit", "2", "-k", "2", "--max-new-tokens", "3", "--output-dir", str(output_dir), *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--limit", "0", "must be >= 1, got 0"),
        ("--limit", "-5", "must be >= 1, got -5"),
        ("-k", "0", "must be >= 1, got 0"),
        ("--max-new-tokens", "0", "must be >= 1, got 0"),
        ("--batch-size", "0", "must be >= 1, got 0"),
        ("--offset", "-1", "must be >= 0, got -1"),
    ],
)
def test_eval_rejects_nonsense_before_touching_files(
    workspace: Path, tmp_path: Path, capsys, option: str, value: str, message: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "samples.jsonl").write_text('{"kept": true}\n')
    with pytest.raises(SystemExit) as exc:
        main([*eval_argv(workspace, out), option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument" in err and option in err and message in err
    assert (out / "samples.jsonl").read_text() == '{"kept": true}\n'


def test_eval_runs_and_refuses_to_overwrite(workspace: Path, tmp_path: Path, capsys) -> None:
    """A model without a chat template gets plain-text prompts; a second run into the same folder needs --overwrite."""
    out = tmp_path / "out"
    assert main(eval_argv(workspace, out)) == 0
    samples = (out / "samples.jsonl").read_text()
    assert len(samples.splitlines()) == 4 and not (out / "samples.jsonl.partial").exists()
    capsys.readouterr()
    assert main(eval_argv(workspace, out, "--offset", "2")) == 2
    err = error_line(capsys)
    assert "already holds results (results.json, results.md, samples.jsonl)" in err and "--overwrite" in err
    assert (out / "samples.jsonl").read_text() == samples
    assert main(eval_argv(workspace, out, "--offset", "2", "--overwrite")) == 0
    assert [json.loads(line)["id"] for line in (out / "samples.jsonl").read_text().splitlines()] == [
        "data-2", "data-2", "data-3", "data-3"
    ]  # fmt: skip
    capsys.readouterr()
    assert main(eval_argv(workspace, tmp_path / "yes", "--chat-template", "yes")) == 2
    assert "has no chat template" in error_line(capsys)
    assert not (tmp_path / "yes" / "samples.jsonl").exists()


def test_eval_one_line_errors_for_paths(workspace: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    out = tmp_path / "out"
    argv = eval_argv(workspace, out)
    model = argv.index("--model") + 1
    assert main([*argv[:model], "./no/such/dir", *argv[model + 1 :]]) == 2
    assert "model folder './no/such/dir' does not exist" in error_line(capsys)
    dataset = argv.index("--dataset") + 1
    assert main([*argv[:dataset], str(tmp_path / "missing.jsonl"), *argv[dataset + 1 :]]) == 2
    assert "missing.jsonl' is neither a file" in error_line(capsys)
    assert main(eval_argv(workspace, out, "--offset", "8")) == 2
    assert "has no rows from --offset 8 on" in error_line(capsys)
    assert not out.exists()
    import tempfile

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / "tmpXYZ"))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(eval_argv(workspace, out)) == 2
    assert "out' is not writable (permission denied:" in error_line(capsys)


def test_data_file_errors_name_file_and_line(workspace: Path, tmp_path: Path, capsys) -> None:
    """Regression (issue 16): a non-UTF-8 JSONL gave a decode error without file or line, a row nested 100,000 deep a
    RecursionError traceback; the same in a shard's samples.jsonl on --merge."""
    good = (workspace / "data.jsonl").read_bytes()
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(good + b'{"prompt": "caf\xe9", "answer": "1"}\n')
    argv = eval_argv(workspace, tmp_path / "out")
    dataset = argv.index("--dataset") + 1
    assert main([*argv[:dataset], str(latin), *argv[dataset + 1 :]]) == 2
    assert f"{latin}: row line 9, field '<json>': byte 0xe9 at column 16 is not UTF-8 text" in error_line(capsys)
    deep = tmp_path / "deep.jsonl"
    deep.write_bytes(good + b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b', "answer": "1"}\n')
    assert main([*argv[:dataset], str(deep), *argv[dataset + 1 :]]) == 2
    assert f"{deep}: row line 9, field '<json>': a value nested too deeply to be read" in error_line(capsys)
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 100_000 + "]" * 100_000)
    assert main([*argv[:dataset], str(deep_json), *argv[dataset + 1 :]]) == 2
    assert f"{deep_json}: row line 1, field '<json>': a value nested too deeply" in error_line(capsys)
    assert not (tmp_path / "out").exists()
    shard = tmp_path / "shard"
    assert main(eval_argv(workspace, shard)) == 0
    capsys.readouterr()
    (shard / "samples.jsonl").write_bytes(b'{"benchmark": "data", "x": "\xff"}\n')
    assert main(["eval", "--merge", str(shard), "--output-dir", str(tmp_path / "merged")]) == 2
    assert f"{shard / 'samples.jsonl'}: line 1: byte 0xff" in error_line(capsys)


def test_merge_of_an_emptied_shard_is_a_clear_error(workspace: Path, tmp_path: Path, capsys) -> None:
    shard = tmp_path / "shard"
    assert main(eval_argv(workspace, shard)) == 0
    (shard / "samples.jsonl").write_text("")  # what `--limit 0` used to leave behind
    capsys.readouterr()
    assert main(["eval", "--merge", str(shard), "--output-dir", str(tmp_path / "merged")]) == 2
    assert "no samples of benchmark(s) ['data']" in error_line(capsys)
    assert main(["eval", "--merge", str(shard), "--output-dir", str(shard)]) == 2
    assert "is one of the shards" in error_line(capsys)


def test_model_path_or_hub_id(tmp_path: Path) -> None:
    from dipo.cli.errors import check_model_source, looks_like_path, model_load_error

    assert [looks_like_path(v) for v in ("Qwen/Qwen3-8B", "smollm2-135m-instruct", "mymodel")] == [False] * 3
    assert all(looks_like_path(v) for v in ("./m", "../m", "~/m", "/m", "runs/a/checkpoint-2"))
    check_model_source("Qwen/Qwen3-8B")  # a Hub id is left to transformers
    with pytest.raises(FileNotFoundError, match="model folder '~/no/such' does not exist"):
        check_model_source("~/no/such")
    hub_error = OSError("We couldn't connect to 'https://huggingface.co'")
    assert "'runs/mine' is not a local folder, and loading it as a Hub id failed: We couldn't" in str(
        model_load_error("runs/mine", "--model", hub_error)
    )
    assert model_load_error(str(tmp_path), "--model", hub_error) is hub_error  # a local folder: the error as it is


# ---------------------------------------------------------------------------------------------------------- assets


def test_assets_read_only_cache_is_one_line(monkeypatch, capsys) -> None:
    import dipo.tasks.assets as assets

    def read_only(force: bool = False) -> Path:
        raise PermissionError(13, "Permission denied", "/ro/cache/dipo/models")

    monkeypatch.setattr(assets, "smollm2_model_dir", read_only)
    assert main(["assets", "--no-install"]) == 1
    err = error_line(capsys)
    assert "permission denied: '/ro/cache/dipo/models'" in err and "DIPO_CACHE" in err
