"""Crash-consistent ``dipo train`` checkpoints (issue 16, item 1).

A job stopped at any moment of a save must resume (``--resume_from_checkpoint true``: the newest *complete*
checkpoint) and end exactly as the uninterrupted run (final weights, logged history, PPL queue), or stop with a
one-line error. Two kinds of tests, on a 3-step run of a tiny local model that saves every step and keeps one
checkpoint (``save_total_limit 1``, so rotation is exercised):

* a crash injected in-process at each boundary between the files of ``checkpoint-2`` (deterministic "mid-save");
* real ``SIGKILL``s of a ``dipo train`` job (a forked child) at random moments (and right after a checkpoint
  folder appears), resumed each time. ``DIPO_KILL_TEST_KILLS`` sets the number of kills (default 3, about 20 s on 2
  CPU cores; the long version: e.g. ``DIPO_KILL_TEST_KILLS=30``); ``DIPO_KILL_TEST_SEED`` (default 0) the moments.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("math_verify")

import transformers.trainer as hf_trainer
from safetensors.torch import load_file
from transformers import Trainer, TrainerState

import dipo.integrations.trl.trainer as dipo_trainer
from dipo.cli.main import main
from dipo.integrations.trl import DIPO_STATE_NAME, DiPOTrainer

pytestmark = pytest.mark.slow

TRAIN_OPTIONS = [
    "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "6",
    "--max_steps", "3", "--save_steps", "1", "--save_total_limit", "1", "--logging_steps", "1",
    "--learning_rate", "0.05", "--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true",
    "--preset", "dipo", "--mask_truncated_completions", "false", "--dipo_queue_batches", "2", "--seed", "0",
]  # fmt: skip
SRC = Path(__file__).resolve().parents[1] / "src"


class Crash(BaseException):
    """Stands for the job being killed: nothing in the training loop catches it."""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A tiny model with a chat template and 8 math rows (the tiny model gets some of them right)."""
    from dipo.testing import CHAT_TEMPLATE, build_tiny_model_dir

    root = tmp_path_factory.mktemp("crash")
    build_tiny_model_dir(root / "tiny", chat_template=CHAT_TEMPLATE)
    rows = [{"prompt": f"what is {i} plus 0", "answer": str(i)} for i in range(8)]
    (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def train_argv(workspace: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--model_name_or_path", str(workspace / "tiny"), "--dataset", str(workspace / "data.jsonl"),
            "--output_dir", str(out), *TRAIN_OPTIONS, *extra]  # fmt: skip


def outcome(out: Path) -> dict:
    """What must not depend on interruptions: final weights, per-step logs (timings aside), the final PPL queue."""
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [{k: v for k, v in entry.items() if k != "step_time"} for entry in history if "loss" in entry]
    queue = torch.load(out / "checkpoint-3" / DIPO_STATE_NAME, weights_only=True)["queue"]
    return {"weights": load_file(out / "model.safetensors"), "steps": steps, "queue": queue}


def assert_same_outcome(got: dict, want: dict) -> None:
    assert got["weights"].keys() == want["weights"].keys()
    for name, tensor in want["weights"].items():
        assert torch.equal(got["weights"][name], tensor), name
    assert got["steps"] == want["steps"]
    assert [e["step"] for e in got["steps"]] == [1, 2, 3]
    for key in ("log_ppl", "correct"):
        assert len(got["queue"][key]) == len(want["queue"][key]) == 2
        for a, b in zip(got["queue"][key], want["queue"][key], strict=True):
            assert torch.equal(a, b), key


@pytest.fixture(scope="module")
def reference(workspace: Path) -> dict:
    """The uninterrupted run; it must change the weights (else equal weights would prove nothing)."""
    out = workspace / "reference"
    started = time.monotonic()
    assert main(train_argv(workspace, out)) == 0
    result = outcome(out)
    result["seconds"] = time.monotonic() - started
    initial = load_file(workspace / "tiny" / "model.safetensors")
    assert any(not torch.equal(initial[k], v) for k, v in result["weights"].items() if k in initial)
    return result


# ------------------------------------------------------------------------------- crashes at each file boundary
def _truncate_model(original, args, kwargs):
    original(*args, **kwargs)  # Trainer._save(self, output_dir): model, config, tokenizer files
    weights = Path(args[1]) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _half_json(original, args, kwargs):
    state, path = args[0], args[1]  # TrainerState.save_to_json(self, json_path)
    text = json.dumps(__import__("dataclasses").asdict(state), indent=2, sort_keys=True)
    Path(path).write_text(text[: len(text) // 2])


def _partial_torch_save(original, args, kwargs):
    target = args[1]  # the first torch.save of the save: dipo_state.pt's temporary file
    if isinstance(target, (str, os.PathLike)):
        Path(target).write_bytes(b"\x80\x02partial")
    else:
        target.write(b"\x80\x02partial")


#: Where a save of checkpoint-N is interrupted, in the order of the save: (object, attribute, what it does first).
BOUNDARIES = {
    "before dipo_state.pt": (dipo_trainer, "save_state_file", None),
    "while writing dipo_state.pt": (torch, "save", _partial_torch_save),
    "before the model files": (Trainer, "save_model", None),
    "while writing model.safetensors": (Trainer, "_save", _truncate_model),
    "before optimizer and scheduler": (Trainer, "_save_optimizer_and_scheduler", None),
    "before the RNG states": (Trainer, "_save_rng_state", None),
    "before trainer_state.json": (TrainerState, "save_to_json", None),
    "while writing trainer_state.json": (TrainerState, "save_to_json", _half_json),
    "before the rotation": (hf_trainer, "rotate_checkpoints", None),
}


def inject_crash(monkeypatch, boundary: str, step: int) -> None:
    """Raise :class:`Crash` at ``boundary`` of the save of ``checkpoint-<step>`` (after doing its partial write)."""
    armed = {"on": False}
    save_checkpoint = DiPOTrainer._save_checkpoint

    def arming(self, model, trial):
        armed["on"] = self.state.global_step == step
        return save_checkpoint(self, model, trial)

    monkeypatch.setattr(DiPOTrainer, "_save_checkpoint", arming)
    owner, name, partial = BOUNDARIES[boundary]
    original = getattr(owner, name)

    def crashing(*args, **kwargs):
        if not armed["on"]:
            return original(*args, **kwargs)
        if partial is not None:
            partial(original, args, kwargs)
        raise Crash(boundary)

    monkeypatch.setattr(owner, name, crashing)


@pytest.mark.parametrize("boundary", list(BOUNDARIES))
def test_a_crash_at_any_file_boundary_resumes_to_the_same_run(boundary, workspace, reference, tmp_path, caplog):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        inject_crash(patch, boundary, step=2)
        with pytest.raises(Crash):
            main(train_argv(workspace, out))
    complete = boundary == "before the rotation"  # trainer_state.json, written last, is there
    assert (out / "checkpoint-1" / "trainer_state.json").exists()  # rotation runs only after checkpoint-2 is complete
    partial = (out / "checkpoint-2").is_dir() and not complete
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dipo.train"):
        assert main(train_argv(workspace, out, "--resume_from_checkpoint", "true")) == 0
    skipped = [r.getMessage() for r in caplog.records if "skipping incomplete checkpoint" in r.getMessage()]
    if partial:
        assert len(skipped) == 1 and str(out / "checkpoint-2") in skipped[0]
    else:
        assert not skipped
    assert_same_outcome(outcome(out), reference)


def test_a_crash_in_the_first_save_is_a_one_line_error(workspace, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        inject_crash(patch, "before trainer_state.json", step=1)
        with pytest.raises(Crash):
            main(train_argv(workspace, out))
    capsys.readouterr()
    assert main(train_argv(workspace, out, "--resume_from_checkpoint", "true")) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dipo ")]
    assert "Traceback" not in err and len(lines) == 1, err
    assert "no complete checkpoint-N folder" in lines[0] and "checkpoint-1 has no trainer_state.json" in lines[0]
    # the way out it names: start anew over the incomplete folder
    assert main(train_argv(workspace, out, "--overwrite_output_dir", "true")) == 0


def test_resuming_a_finished_run_trains_no_extra_step(workspace, reference, tmp_path):
    """Killed after its last checkpoint, before the final save: resuming must not train a step past max_steps
    (transformers 5.10 did: its loop checks max_steps only after a step)."""
    out = tmp_path / "run"
    shutil.copytree(workspace / "reference", out)
    for name in ("model.safetensors", "trainer_state.json"):
        (out / name).unlink()  # as if killed before the final save
    assert main(train_argv(workspace, out, "--resume_from_checkpoint", "true")) == 0
    assert not (out / "checkpoint-4").exists()
    assert_same_outcome(outcome(out), reference)


def test_trainer_api_resumes_from_the_newest_complete_checkpoint(workspace, reference, tmp_path):
    """``DiPOTrainer.train(resume_from_checkpoint=True)``: skips an incomplete newer checkpoint with a warning
    naming it; with no complete checkpoint, a ValueError naming each folder and why."""
    from dipo.cli.train import build_rewards, build_trainer, load_task_rows, parse

    out = tmp_path / "run"
    shutil.copytree(workspace / "reference" / "checkpoint-3", out / "checkpoint-3")
    (out / "checkpoint-4").mkdir()  # a save killed right after mkdir
    (out / "checkpoint-4" / DIPO_STATE_NAME).write_bytes((out / "checkpoint-3" / DIPO_STATE_NAME).read_bytes())

    def trainer():
        task, training, model = parse(train_argv(workspace, out, "--max_steps", "4")[1:])
        rows = load_task_rows(task)
        training.reward_weights = build_rewards(task, training)[1]
        return build_trainer(task, training, model, rows, build_rewards(task, training)[0])

    with pytest.warns(UserWarning, match=r"skipping incomplete checkpoint .*checkpoint-4: it has no trainer_state"):
        assert trainer().train(resume_from_checkpoint=True).global_step == 4
    assert [p.name for p in out.glob("checkpoint-*")] == ["checkpoint-4"]  # saved, then checkpoint-3 rotated away
    (out / "checkpoint-4" / DIPO_STATE_NAME).unlink()  # an interrupted save of an older version (state written last)
    with pytest.raises(ValueError, match=r"no complete checkpoint-N folder .*checkpoint-4 has no dipo_state.pt"):
        trainer().train(resume_from_checkpoint=True)


# ------------------------------------------------------------------------------------------ real SIGKILLs
class Child:
    """``dipo train`` in a forked child (no second import of torch and TRL), its output in ``log``."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log, self.returncode = log, None
        self.pid = os.fork()
        if self.pid == 0:
            self._run(argv)

    def _run(self, argv: list[str]) -> None:
        code = 1
        try:
            stream = open(self.log, "w", buffering=1)  # noqa: SIM115 - the child ends with os._exit
            os.dup2(stream.fileno(), 1)
            os.dup2(stream.fileno(), 2)
            sys.stdout = sys.stderr = stream
            logging.basicConfig(
                level=logging.INFO, stream=stream, force=True, format="%(levelname)s %(name)s: %(message)s"
            )
            torch.set_num_threads(1)
            code = main(argv)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)

    def poll(self) -> int | None:
        if self.returncode is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait_for(self, predicate, timeout: float) -> bool:
        """Poll ``predicate`` every 2 ms until it holds, the child ends, or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.poll() is None:
            if predicate():
                return True
            time.sleep(0.002)
        return predicate()

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int:
        if not self.wait_for(lambda: False, timeout) and self.poll() is None:
            self.kill()
            os.waitpid(self.pid, 0)
            raise AssertionError(f"dipo train did not end within {timeout} s:\n{self.output()[-3000:]}")
        return self.returncode

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""


def _new_partial_checkpoint(out: Path, before: set[str]):
    def found() -> bool:
        return out.is_dir() and any(
            p.name not in before and not (p / "trainer_state.json").exists() for p in out.glob("checkpoint-*")
        )

    return found


def _next_argv(workspace: Path, out: Path, previous: Child | None) -> list[str]:
    """Resume the newest complete checkpoint; start anew only after the one-line "no complete checkpoint" error."""
    if previous is not None and "no complete checkpoint-N folder" in previous.output():
        return train_argv(workspace, out, "--overwrite_output_dir", "true")
    if any(out.glob("checkpoint-*")):
        return train_argv(workspace, out, "--resume_from_checkpoint", "true")
    return train_argv(workspace, out, "--overwrite_output_dir", "true")


def _kill_at_a_random_moment(child: Child, out: Path, rng: random.Random, seconds: float) -> str | None:
    """SIGKILL ``child`` during training: at a random moment, or (half of the time) as soon as a new checkpoint
    folder appears (mid-save). Returns the moment, or None if the child ended first."""
    started = child.wait_for(lambda: "dipo.train: training" in child.output(), 300)
    assert started or child.poll() is not None, child.output()  # a refusal ends before training
    if rng.random() < 0.5:
        before = {p.name for p in out.glob("checkpoint-*")}
        child.wait_for(_new_partial_checkpoint(out, before), 120)
        moment = "mid-save"
    else:
        delay = rng.uniform(0, seconds)
        child.wait_for(lambda: False, delay)
        moment = f"{delay:.2f} s into training"
    if child.poll() is not None:
        return None
    child.kill()
    return moment


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the kill test forks the training job (POSIX only)")
def test_sigkill_at_random_moments_resumes_to_the_same_run(workspace, reference, tmp_path):
    """Kill, resume with `true`, repeat; every run that finishes equals the uninterrupted one (then a new run
    starts, until DIPO_KILL_TEST_KILLS kills have hit a running job)."""
    kills = int(os.environ.get("DIPO_KILL_TEST_KILLS", "3"))
    rng = random.Random(int(os.environ.get("DIPO_KILL_TEST_SEED", "0")))
    out, child, moments, finished = tmp_path / "run", None, [], 0
    for attempt in range(4 * kills + 4):
        child = Child(_next_argv(workspace, out, child), tmp_path / f"attempt{attempt}.log")
        if len(moments) < kills:
            moment = _kill_at_a_random_moment(child, out, rng, 1.2 * reference["seconds"])
            moments += [moment] if moment else []
        code, text = child.wait(300), child.output()
        assert "Traceback" not in text, (moments, text[-3000:])
        if code == 2:  # the only accepted failure: a one-line error, nothing complete to resume
            lines = [line for line in text.splitlines() if line.startswith("dipo ")]
            assert len(lines) == 1 and "no complete checkpoint" in lines[0], text
        elif code == 0:
            assert_same_outcome(outcome(out), reference)
            finished += 1
            if len(moments) >= kills:
                break
            shutil.rmtree(out)
            child = None
    assert len(moments) == kills and finished >= 1, (moments, finished)
    shutil.rmtree(out)
