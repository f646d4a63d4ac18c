"""Two CPU processes (accelerate + torchrun, gloo, DDP) take the same DiPO decisions as one process on the same data.

FSDP is not tested: accelerate 1.16 turns FSDP on only for multi-accelerator runs (``AcceleratorState`` sets
``DistributedType.FSDP`` only from MULTI_GPU/NPU/XPU/...); with ``use_cpu`` the processes run plain data parallel.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from dipo.core import DiPO
from dipo.integrations.trl._dynamic_sampling import select_groups
from trl_helpers import build_tiny_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

SCRIPT = Path(__file__).parent / "scripts" / "trl_dipo_ddp.py"


def script_module():
    spec = importlib.util.spec_from_file_location("trl_dipo_ddp", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def launch(model_dir: Path, out_dir: Path, *extra: str) -> None:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "TRL_EXPERIMENTAL_SILENCE": "1"}  # fmt: skip
    # accelerate 1.15 runs `--cpu` jobs through its single-process launcher (several CPU processes need mpirun), so
    # use its torchrun launcher; the script's `use_cpu=True` makes accelerate set up gloo on CPU.
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", str(SCRIPT), str(model_dir), str(out_dir), "6", *extra]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The tiny model and what each of the 2 processes (6 rows each) recorded."""
    root = tmp_path_factory.mktemp("ddp")
    model_dir = build_tiny_model_dir(root / "tiny", seed=0)
    launch(model_dir, root / "out")
    return model_dir, [torch.load(root / "out" / f"rank{i}.pt", weights_only=False) for i in range(2)]


def test_two_processes_take_the_same_decisions_as_one(tmp_path, two_process_run):
    ranks = two_process_run[1]
    assert all(r["world_size"] == 2 for r in ranks)
    rank0, rank1 = ranks[0]["records"], ranks[1]["records"]
    assert len(rank0) == len(rank1) == 3

    # the core config of the run, rebuilt in this (single) process
    config = script_module().dipo_config(str(tmp_path / "cfg"), per_device=12)
    single = DiPO(config.dipo_core_config())
    extreme_groups = reallocated = 0
    for a, b in zip(rank0, rank1, strict=True):
        for key in ("rewards", "log_ppl", "valid", "token_counts", "advantage_delta", "realloc_mask", "group_types"):
            assert torch.equal(a[key], b[key]), key  # every rank decided the same
        assert a["threshold"] == b["threshold"]
        assert a["rewards"].numel() == 12 and a["slice"] == (0, 6) and b["slice"] == (6, 12)

        out = single.step(a["rewards"], a["log_ppl"], 4, valid=a["valid"], token_counts=a["token_counts"])
        assert torch.equal(out.advantage_delta, a["advantage_delta"])
        assert torch.equal(out.realloc_mask, a["realloc_mask"])
        assert out.threshold == a["threshold"]

        trl = torch.cat([a["trl_advantages"], b["trl_advantages"]])
        final = torch.cat([a["advantages"], b["advantages"]])
        assert torch.equal(final, trl + out.advantage_delta)
        extreme_groups += int((out.group_types != 0).sum())
        reallocated += int(out.realloc_mask.any())
    assert extreme_groups > 0 and reallocated > 0, "no extreme group was reallocated: the test would be vacuous"
    for x, y in zip(ranks[0]["queue"]["queue"]["log_ppl"], ranks[1]["queue"]["queue"]["log_ppl"], strict=True):
        assert torch.equal(x, y)  # identical PPL queue on both ranks


def test_two_processes_keep_the_same_groups_under_dynamic_sampling(tmp_path):
    """Dynamic sampling with a group spanning both processes: every rank takes the same keep decisions and rounds,
    and the two local batches together are the first kept groups of the gathered rounds, in order."""
    model_dir = build_tiny_model_dir(tmp_path / "tiny", seed=0)
    launch(model_dir, tmp_path / "out", "ds")
    ranks = [torch.load(tmp_path / "out" / f"rank{i}.pt", weights_only=False) for i in range(2)]
    steps0, steps1 = ranks[0]["ds_steps"], ranks[1]["ds_steps"]
    assert len(steps0) == len(steps1) == 3
    refilled = 0
    for a, b in zip(steps0, steps1, strict=True):
        assert len(a["rounds"]) == len(b["rounds"])
        for ra, rb in zip(a["rounds"], b["rounds"], strict=True):
            assert torch.equal(ra["keep"], rb["keep"]) and torch.equal(ra["kept_by_brr"], rb["kept_by_brr"])
            for key in ra["rows"]:
                assert torch.equal(ra["rows"][key], rb["rows"][key]), key  # the same gathered round everywhere
            # independent check: a group is kept iff it carries a learning signal (a non-zero final advantage)
            signal = ra["rows"]["advantages"].view(-1, 4).ne(0).any(dim=1)
            assert torch.equal(ra["keep"], signal)
        refilled += len(a["rounds"]) > 1
        selection = select_groups([r["keep"] for r in a["rounds"]], 3)
        final = {k: torch.cat([a["output"][k], b["output"][k]]) for k in ("completion_ids", "advantages")}
        assert final["completion_ids"].size(0) == 12  # 3 groups of 4, TRL's shape
        for slot, (r, g) in enumerate(selection.kept):
            source = a["rounds"][r]["rows"]
            expected = source["completion_ids"][g * 4 : (g + 1) * 4]
            assert torch.equal(final["completion_ids"][slot * 4 : (slot + 1) * 4, : expected.size(1)], expected)
            assert torch.equal(
                final["advantages"][slot * 4 : (slot + 1) * 4], source["advantages"][g * 4 : (g + 1) * 4]
            )
        assert torch.equal(a["output"]["num_items_in_batch"], b["output"]["num_items_in_batch"])
    assert refilled > 0, "no refill round: the test would be vacuous"


def assert_same_metrics(a: dict, b: dict, where: str) -> None:
    assert a.keys() == b.keys(), where
    for key, x in a.items():
        y = b[key]
        assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=1e-6, abs=1e-6), (where, key, x, y)


def test_one_and_two_process_runs_log_the_same_decisions(tmp_path, monkeypatch, two_process_run):
    """Issue 16 item 8: the same data (deterministic completions, learning rate 0) through 1 process x 12 rows and
    2 processes x 6 rows gives the same rewards, τ*, judgment, reallocated groups and logged dipo/* metrics."""
    model_dir, two = two_process_run
    monkeypatch.setenv("TRL_EXPERIMENTAL_SILENCE", "1")
    script_module().main(str(model_dir), str(tmp_path / "one"), "12")
    one = torch.load(tmp_path / "one" / "rank0.pt", weights_only=False)
    assert one["world_size"] == 1 and len(one["records"]) == len(two[0]["records"]) == 3

    passed = reallocated = 0
    for step, (a, b0, b1) in enumerate(zip(one["records"], two[0]["records"], two[1]["records"], strict=True)):
        for key in ("rewards", "valid", "token_counts", "group_types", "realloc_mask"):
            assert torch.equal(a[key], b0[key]), (step, key)
        torch.testing.assert_close(a["log_ppl"], b0["log_ppl"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a["advantage_delta"], b0["advantage_delta"], rtol=1e-6, atol=1e-6)
        assert a["threshold"] == pytest.approx(b0["threshold"], rel=1e-6)
        assert a["judgment_passed"] == b0["judgment_passed"] == b1["judgment_passed"]
        assert_same_metrics(a["metrics"], b0["metrics"], f"step {step + 1}")
        both = torch.cat([b0["advantages"], b1["advantages"]])
        torch.testing.assert_close(a["advantages"], both, rtol=1e-6, atol=1e-6)
        passed += a["judgment_passed"]
        reallocated += int(a["realloc_mask"].any())
    assert 0 < passed < 3 and reallocated > 0, "the judgment must both pass and fail, and BRR must act"

    def dipo_logs(history):
        return [{k: float("nan") if v is None else v for k, v in e.items() if k.startswith("dipo/")} for e in history
                if "loss" in e]  # fmt: skip

    logged_one, logged_two = dipo_logs(one["log_history"]), dipo_logs(two[0]["log_history"])
    assert len(logged_one) == len(logged_two) == 3
    for step, (a, b) in enumerate(zip(logged_one, logged_two, strict=True)):
        assert_same_metrics(a, b, f"logged step {step + 1}")
