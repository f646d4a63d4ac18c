"""``scripts/gpu_check.py`` on CPU at its tiny size: every part runs, the results file, plots and tables are written.

The GPU figures themselves are produced by running the script on a GPU machine (docs/results/gpu.md); here the
timings are only sanity checks, but the semantic checks (log-probs, greedy equality) must hold exactly in fp32.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from script_helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu_check")
    env = {**os.environ, "DIPO_CACHE": str(out / "cache")}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--device", "cpu", "--size", "tiny", "--cpu-eager-compile"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    return out, proc


@pytest.mark.slow
def test_script_runs_on_cpu_and_writes_everything(cpu_run):
    out, proc = cpu_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["status"] == "done"
    assert data["meta"]["size"] == "tiny" and data["meta"]["device"] == "cpu"
    assert sorted(data["plots"]) == ["fastgen.png", "learning.png", "overhead.png"]
    for name in data["plots"]:
        assert (out / name).stat().st_size > 1000
    table = (out / "gpu_results.md").read_text()
    assert "### Fast rollouts" in table and "### Overhead" in table and "### Learning" in table
    assert "fast rollouts:" in proc.stdout and "overhead:" in proc.stdout  # printed summary


@pytest.mark.slow
def test_fast_generation_part(cpu_run):
    fg = json.loads((cpu_run[0] / "gpu_check.json").read_text())["fastgen"]
    # transformers compiles on CUDA/XPU only; --cpu-eager-compile traces the decoding step on CPU instead: it must be
    # compiled once for the whole run (fast trainer, checks, and the interleaved DAPO/DiPO trainers of the overhead)
    assert fg["compiled"] is True and fg["fast"]["new_compiled_graphs_after_first_step"] == 0
    assert fg["compiled_graphs_total"] == 1
    # compile_config is set by the --cpu-eager-compile test aid only
    assert set(fg["generation_config_diff"]) == {"cache_implementation", "disable_compile", "compile_config"}
    assert fg["fast"]["pad_to_multiple_of"] == 16 and fg["default"]["pad_to_multiple_of"] is None
    assert fg["fast"]["generation_config"]["cache_implementation"] == "static"
    for path in ("fast", "default"):
        assert fg[path]["median_rollout_tokens_per_s"] > 0 and fg[path]["median_step_s"] > 0
        assert fg["logprob_check"][path]["tokens"] > 0
        assert fg["logprob_check"][path]["max_abs_diff"] < 1e-4  # fp32: sampler log-probs = reference forward
    assert fg["logprob_check"]["pass"] is True
    assert fg["greedy_check"]["identical_rows"] == 1.0
    assert math.isfinite(fg["rollout_speedup"]) and math.isfinite(fg["step_speedup"])


@pytest.mark.slow
def test_overhead_and_learning_parts(cpu_run):
    data = json.loads((cpu_run[0] / "gpu_check.json").read_text())
    ov = data["overhead"]
    assert [r["preset"] for r in ov["rounds"]] == ["dapo", "dipo"]
    assert ov["ratio"] > 0 and ov["dipo_work_median_ms"] > 0
    assert ov["compiled_graphs_total"] == 1
    le = data["learning"]
    assert [(r["method"], r["seed"]) for r in le["runs"]] == [("grpo", 0), ("dapo", 0), ("dipo", 0)]
    assert set(le["summary"]) == {"grpo", "dapo", "dipo"} and le["skipped"] == []
    for run in le["runs"]:
        assert len(run["train_reward"]) == data["meta"]["sizes"]["rl_steps"]
        assert 0.0 <= run["final"]["mean_at_k"] <= 1.0


def test_markdown_of_partial_results_and_bad_parts(tmp_path):
    """A run killed after the first measurement still renders; unknown parts are refused."""
    gpu_check = load_script(SCRIPT)
    partial = {
        "meta": {"date": "d", "device_name": "X", "device": "cuda", "size": "full", "command": "c"},
        "status": "running",
        "fastgen": {"weights": "random init", "fast": {"median_step_s": 1.0, "median_rollout_tokens_per_s": 5.0}},
    }
    text = gpu_check.render_markdown(partial)
    assert "fast_generation | 5 |" in text and "status: running" in text
    with pytest.raises(SystemExit, match="unknown part"):
        gpu_check.main(["--out", str(tmp_path), "--parts", "fastgen,bogus"])
