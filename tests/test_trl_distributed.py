"""Two CPU processes (accelerate + torchrun, gloo) take the same DiPO decisions as one process on the same batch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

from dipo.core import DiPO
from dipo.integrations.trl import DiPOConfig
from trl_helpers import build_tiny_model_dir

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

SCRIPT = Path(__file__).parent / "scripts" / "trl_dipo_ddp.py"


def launch(model_dir: Path, out_dir: Path) -> None:
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate launcher is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    # accelerate 1.15 runs `--cpu` jobs through its single-process launcher (several CPU processes need mpirun), so
    # use its torchrun launcher; the script's `use_cpu=True` makes accelerate set up gloo on CPU.
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision",
           "no", "--dynamo_backend", "no", str(SCRIPT), str(model_dir), str(out_dir)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def test_two_processes_take_the_same_decisions_as_one(tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "tiny", seed=0)
    launch(model_dir, tmp_path / "out")
    ranks = [torch.load(tmp_path / "out" / f"rank{i}.pt", weights_only=False) for i in range(2)]
    assert all(r["world_size"] == 2 for r in ranks)
    rank0, rank1 = ranks[0]["records"], ranks[1]["records"]
    assert len(rank0) == len(rank1) == 3

    # the core config of the run, rebuilt in this (single) process
    config = DiPOConfig(
        output_dir=str(tmp_path / "cfg"), per_device_train_batch_size=12, num_generations=4, preset="dipo",
        dipo_judgment=False, use_cpu=True, bf16=False, report_to="none",
    )  # fmt: skip
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
