"""The one output-folder guard (``dipo.fileio.check_output_dir``), checked through every command that writes results:
``dipo train``, ``dipo eval``, ``dipo probe`` and ``dipo demo`` refuse a folder holding an earlier run (unless
``--overwrite`` / ``--resume``), a file given as the folder, an unwritable folder and ``--overwrite`` with
``--resume`` — each as one line, exit code 2, before a model is loaded and without changing what is there."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from dipo.cli.main import main

pytest.importorskip("trl")


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not be loaded")


#: command → (argv before the folder option, folder option, a file an earlier run leaves, overwrite flag, resume
#: flag or None, what to patch so that loading a model or running fails the test)
COMMANDS = {
    "train": (["train", "--task", "nl_arithmetic", "--dataset", "add1", "--dataset_limit", "2", "--report_to", "none",
               "--model_name_or_path", "{model}"], "--output_dir", "trainer_state.json", "--overwrite_output_dir",
              None, "dipo.cli.train.build_trainer"),
    "eval": (["eval", "--task", "math", "--dataset", "{data}", "--model", "{model}"], "--output_dir", "results.json",
             "--overwrite", None, "dipo.cli.eval._load"),
    "probe": (["probe", "--task", "nl_arithmetic", "--dataset", "add1", "--limit", "2", "--model", "{model}"],
              "--output_dir", "samples.jsonl", "--overwrite", "--resume", "dipo.probe._prepare_model"),
    "demo": (["demo", "--quick", "--no_progress"], "--out", "results.json", "--overwrite", "--resume",
             "dipo.demo.app.run_demo"),
}  # fmt: skip


@pytest.fixture
def command(request, tmp_path, monkeypatch):
    """``argv(out, *extra)`` of the command and what it leaves, with model loading / running patched to fail."""
    before, option, leftover, overwrite, resume, patched = COMMANDS[request.param]
    if request.param == "eval":
        pytest.importorskip("math_verify")
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")  # a model folder as far as the checks before loading can tell
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "1 + 1?", "answer": "2"}) + "\n")
    monkeypatch.setattr(patched, _no_model)
    head = [arg.format(model=model, data=data) for arg in before]

    def argv(out: Path, *extra: str) -> list[str]:
        return [*head, option, str(out), *extra]

    return argv, option, leftover, overwrite, resume


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dipo ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


ALL = pytest.mark.parametrize("command", sorted(COMMANDS), indirect=True)


@ALL
def test_refuses_a_folder_holding_an_earlier_run(command, tmp_path, capsys) -> None:
    argv, option, leftover, overwrite, resume = command
    out = tmp_path / "out"
    out.mkdir()
    (out / leftover).write_text("kept")
    assert main(argv(out)) == 2
    line = _one_line(capsys)
    assert f"{option} {str(out)!r} already holds" in line and leftover in line and overwrite in line
    assert f"choose another {option}" in line and (resume is None or resume in line)
    assert (out / leftover).read_text() == "kept"


@ALL
def test_refuses_a_file_and_an_unwritable_folder(command, tmp_path, capsys, monkeypatch) -> None:
    argv, option, *_ = command
    (tmp_path / "a_file").write_text("kept")
    assert main(argv(tmp_path / "a_file")) == 2
    assert f"{option} {str(tmp_path / 'a_file')!r} is a file, not a folder" in _one_line(capsys)
    assert (tmp_path / "a_file").read_text() == "kept"

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / "tmpXYZ"))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # tests run as root: chmod would not stop a write
    assert main(argv(tmp_path / "ro")) == 2
    assert f"{option} {str(tmp_path / 'ro')!r} is not writable (permission denied:" in _one_line(capsys)


@pytest.mark.parametrize("command", [name for name, spec in COMMANDS.items() if spec[4]], indirect=True)
def test_overwrite_and_resume_exclude_each_other(command, tmp_path, capsys) -> None:
    argv, _, _, overwrite, resume = command
    assert main(argv(tmp_path / "out", overwrite, resume)) == 2
    assert f"choose either {overwrite} (start again) or {resume} (continue), not both" in _one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_overwrite_or_resume_lets_the_guard_pass(tmp_path) -> None:
    """What the guard lets through, and what it reports as left by the earlier run (glob patterns, in order)."""
    from dipo.fileio import check_output_dir

    out = tmp_path / "out"
    (out / "runs" / "a").mkdir(parents=True)
    (out / "runs" / "a" / "record.json").write_text("{}")
    (out / "results.json").write_text("{}")
    earlier = ("results.json", "runs/*/record.json")
    with pytest.raises(ValueError, match=r"already holds demo results \(results.json, runs/a/record.json\)"):
        check_output_dir(out, earlier, what="demo results")
    assert check_output_dir(out, earlier, what="x", overwrite=True) == ["results.json", "runs/a/record.json"]
    assert check_output_dir(out, earlier, what="x", resume=True, resume_flag="--resume") == [
        "results.json",
        "runs/a/record.json",
    ]
    assert check_output_dir(tmp_path / "new" / "sub", earlier, what="x") == []
    assert (tmp_path / "new" / "sub").is_dir()  # created (and checked writable)
