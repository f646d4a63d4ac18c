"""The probe reports τ* and BRR's reach under the class-balanced rule beside the paper's (issue 19, item 3)."""

from __future__ import annotations

import math

import torch

from dipo.core import find_threshold, judge, reallocate
from dipo.probe.analysis import AnalysisConfig, analyse, build_tensors
from dipo.probe.report import markdown

# 4 prompts × 4 samples, log-PPL = -token log-prob (one token each). Few correct answers and weak separation: the
# paper's τ* cuts below all, the balanced one inside. Group 0 is hard with low PPL (BRR's target under "balanced").
LOG_PPL = [0.1, 0.2, 0.3, 0.4, 1.0, 2.0, 3.0, 4.0, 1.5, 2.5, 3.5, 4.5, 5.0, 5.1, 5.2, 5.3]
REWARD = [0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]


def records() -> list[dict]:
    return [
        {
            "id": f"p{i // 4}",
            "sample": i % 4,
            "reward": float(r),
            "token_logps": [-s],
            "truncated": False,
            "num_tokens": 1,
        }
        for i, (s, r) in enumerate(zip(LOG_PPL, REWARD, strict=True))
    ]


def test_balanced_block_equals_a_direct_core_computation():
    result = analyse(records(), AnalysisConfig(judgment_confidence=None, batch_prompts=2))
    t = build_tensors(records())
    correct = t.rewards >= 0.5
    assert result["threshold_at_edge"] == "below_all"  # the paper's rule: "everything wrong"
    tau = find_threshold(t.log_ppl, correct, "balanced")
    block = result["balanced"]
    assert math.isfinite(tau) and block["threshold_log_ppl"] == tau and block["threshold_at_edge"] is None
    assert block["judgment"]["passed"] == judge(t.log_ppl, correct, tau, None).passed
    for membership in ("selected", "all", "mean"):
        realloc = reallocate(t.rewards, t.log_ppl, 4, tau, membership)
        assert block["reallocation"][membership]["hard"] == int(realloc.hard.sum())
        assert block["reallocation"][membership]["easy"] == int(realloc.easy.sum())
    assert block["reallocation"]["selected"]["hard"] >= 1  # the low-PPL hard group lies below the balanced τ*
    assert result["reallocation"]["selected"]["hard"] == 0  # ... and never below -inf
    assert set(block["batches"]) >= {"selected", "all", "mean"} and block["batches"]["num_steps"] == 2
    page = markdown(result, {"model": "m", "task": "t", "dataset": "d"})
    assert "At the class-balanced τ*" in page and "not the paper's rule" in page


def test_balanced_block_is_computed_without_a_replay():
    block = analyse(records(), AnalysisConfig(batch_prompts=0))["balanced"]
    assert "batches" not in block and block["rule"] == "balanced"
    assert torch.isfinite(torch.tensor(block["balanced_error"]))
