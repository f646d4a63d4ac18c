"""Analysis of probe samples: is DiPO's premise true for this model and task? Every quantity comes from ``dipo.core``.

From ``k`` sampled responses per prompt (groups of k contiguous rows) with their verifier rewards and per-token
log-probs under the sampling policy (:mod:`dipo.probe.sampling`):

* log-PPL per response: :func:`dipo.core.sequence_log_ppl` (NaN for a response without counted tokens and, with
  ``truncated="exclude"``, for truncated responses, as DAPO's overlong filtering masks them);
* correctness :func:`dipo.core.correctness`; τ* :func:`dipo.core.find_threshold` on *all* probe samples (the queue
  of a training step holds only two batches, see ``batches`` below); its error :func:`dipo.core.threshold_error`;
* the advantage judgment :func:`dipo.core.judge` (Δ_EiS, Δ_ErS, Wilson intervals);
* quadrants :func:`dipo.core.quadrant_labels`; group types :func:`dipo.core.classify_groups`;
* extreme groups BRR would reallocate at τ*, for each membership rule: :func:`dipo.core.reallocate`;
* AUROC of −log-PPL for correctness: :func:`dipo.evaluation.metrics.auroc` (1 = PPL separates perfectly, 0.5 = not
  at all);
* ``batches``: the same data replayed through :class:`dipo.core.DiPO` in training-sized batches (``batch_prompts``
  prompts per step, the spec's two-batch queue), i.e. what DiPO would have done step by step;
* ``balanced``: τ*, judgment, BRR's reach and the replay again at the class-balanced τ* (``threshold_rule=
  "balanced"``, not the paper's rule), beside the paper's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from dipo.core import (
    MEMBERSHIP_RULES,
    DiPO,
    DiPOCoreConfig,
    GroupType,
    Judgment,
    Quadrant,
    classify_groups,
    correctness,
    find_threshold,
    judge,
    quadrant_labels,
    reallocate,
    sequence_log_ppl,
    threshold_error,
)
from dipo.core.config import CORE_OPTIONS
from dipo.evaluation.metrics import auroc

TRUNCATED_CHOICES = ("exclude", "include")


@dataclass(frozen=True)
class AnalysisConfig:
    """How samples are turned into DiPO's inputs.

    Args:
        truncated: "exclude" (default, as the dapo/dipo presets: a truncated response gets no PPL) or "include".
        judgment_confidence: Wilson confidence of the judgment (spec §5); None = point estimates.
        batch_prompts: prompts per simulated training step for the step-by-step replay (0 = skip it).
        length_bins: number of response-length bins (quantiles of the counted token number) for the split by length.
    """

    truncated: str = "exclude"
    judgment_confidence: float | None = CORE_OPTIONS["judgment_confidence"].default
    batch_prompts: int = 8
    length_bins: int = 3

    def __post_init__(self) -> None:
        if self.truncated not in TRUNCATED_CHOICES:
            raise ValueError(f"truncated={self.truncated!r}: use one of {TRUNCATED_CHOICES}")
        CORE_OPTIONS["judgment_confidence"].check(self.judgment_confidence, "judgment_confidence")
        if self.batch_prompts < 0 or self.length_bins < 1:
            raise ValueError("batch_prompts must be >= 0 and length_bins >= 1")


@dataclass
class ProbeTensors:
    """DiPO's inputs built from the samples: ``[N]`` rewards, log-PPL, token counts, truncation; groups of ``k``."""

    rewards: torch.Tensor
    log_ppl: torch.Tensor
    num_tokens: torch.Tensor
    truncated: torch.Tensor
    group_size: int
    prompt_ids: list[str]


def group_records(records: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[dict[str, Any]]]]:
    """Samples grouped by prompt id (first-seen prompt order, samples by index); all groups must have equal size."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(str(record["id"]), []).append(record)
    if not groups:
        raise ValueError("no probe samples to analyse")
    sizes = {len(g) for g in groups.values()}
    if len(sizes) != 1:
        raise ValueError(f"every prompt needs the same number of samples, got group sizes {sorted(sizes)}")
    ids = list(groups)
    return ids, [sorted(groups[i], key=lambda r: r["sample"]) for i in ids]


def build_tensors(records: Sequence[dict[str, Any]], truncated: str = "exclude") -> ProbeTensors:
    """Rewards and log-PPL (:func:`dipo.core.sequence_log_ppl` of the stored token log-probs) in group order."""
    if truncated not in TRUNCATED_CHOICES:
        raise ValueError(f"truncated={truncated!r}: use one of {TRUNCATED_CHOICES}")
    ids, groups = group_records(records)
    flat = [r for g in groups for r in g]
    width = max(1, max(len(r["token_logps"]) for r in flat))
    token_logps = torch.zeros(len(flat), width, dtype=torch.float64)
    mask = torch.zeros(len(flat), width, dtype=torch.float64)
    for row, record in enumerate(flat):
        values = record["token_logps"]
        if values and not (truncated == "exclude" and record["truncated"]):
            token_logps[row, : len(values)] = torch.tensor(values, dtype=torch.float64)
            mask[row, : len(values)] = 1.0
    return ProbeTensors(
        rewards=torch.tensor([float(r["reward"]) for r in flat], dtype=torch.float64),
        log_ppl=sequence_log_ppl(token_logps, mask),
        num_tokens=torch.tensor([int(r["num_tokens"]) for r in flat]),
        truncated=torch.tensor([bool(r["truncated"]) for r in flat]),
        group_size=len(groups[0]),
        prompt_ids=ids,
    )


def _finite_or_none(x: float) -> float | None:
    return x if isinstance(x, (int, float)) and math.isfinite(x) else None


def _auroc(log_ppl: torch.Tensor, correct: torch.Tensor) -> float:
    keep = ~torch.isnan(log_ppl)
    return auroc((-log_ppl[keep]).tolist(), correct[keep].tolist())


def _mean_ppl(log_ppl: torch.Tensor) -> float | None:
    return _finite_or_none(float(torch.exp(log_ppl).mean())) if log_ppl.numel() else None


def analyse(records: Sequence[dict[str, Any]], config: AnalysisConfig | None = None) -> dict[str, Any]:
    """Every premise quantity (see the module docstring) as a JSON-ready dict."""
    config = config or AnalysisConfig()
    t = build_tensors(records, config.truncated)
    valid = torch.ones_like(t.rewards, dtype=torch.bool)  # every sample has a verifier reward
    correct = correctness(t.rewards, valid)
    has_ppl = ~torch.isnan(t.log_ppl)
    n, g = t.rewards.numel(), t.group_size
    out: dict[str, Any] = {
        "num_prompts": n // g,
        "k": g,
        "num_samples": n,
        "accuracy": float(correct.double().mean()),
        "frac_truncated": float(t.truncated.double().mean()),
        "frac_with_ppl": float(has_ppl.double().mean()),
        "mean_tokens": float(t.num_tokens.double().mean()),
        "config": asdict(config),
    }
    if not bool(has_ppl.any()):
        out["error"] = "no response has a PPL (all truncated or empty); raise --max_new_tokens or --truncated include"
        return out
    tau = find_threshold(t.log_ppl, correct)
    judgment = judge(t.log_ppl, correct, tau, config.judgment_confidence)
    quadrants = quadrant_labels(t.log_ppl, correct, tau, valid)
    labelled = quadrants[quadrants >= 0]
    quadrant_counts = torch.bincount(labelled, minlength=4).tolist()
    types = classify_groups(t.rewards, valid, g)
    type_counts = torch.bincount(types, minlength=3).tolist()
    num_groups = n // g
    out.update(threshold_fields(tau))
    out.update(
        threshold_error=threshold_error(t.log_ppl, correct, tau),
        judgment=judgment_fields(judgment, config.judgment_confidence),
        auroc=_finite_or_none(_auroc(t.log_ppl, correct)),
        mean_ppl_correct=_mean_ppl(t.log_ppl[has_ppl & correct]),
        mean_ppl_wrong=_mean_ppl(t.log_ppl[has_ppl & ~correct]),
        quadrants={
            q.name: quadrant_counts[q] / max(int(labelled.numel()), 1)
            for q in (Quadrant.CL, Quadrant.CH, Quadrant.EL, Quadrant.EH)
        },
        groups={
            "easy": type_counts[GroupType.EASY] / num_groups,
            "normal": type_counts[GroupType.NORMAL] / num_groups,
            "hard": type_counts[GroupType.HARD] / num_groups,
            "num_easy": type_counts[GroupType.EASY],
            "num_normal": type_counts[GroupType.NORMAL],
            "num_hard": type_counts[GroupType.HARD],
        },
    )
    out["reallocation"] = reallocation_table(t, tau, judgment.passed)
    out["by_length"] = by_length(t, correct, config.length_bins)
    if config.batch_prompts:
        out["batches"] = replay_batches(t, config)
    out["balanced"] = balanced_threshold(t, correct, config)
    return out


def threshold_fields(tau: float) -> dict[str, Any]:
    """τ* as JSON: log-PPL and PPL (None at an edge) and which edge ("below_all" / "above_all"), if any."""
    return {
        "threshold_log_ppl": _finite_or_none(tau),
        "threshold_ppl": _finite_or_none(math.exp(tau)) if math.isfinite(tau) else None,
        "threshold_at_edge": None if math.isfinite(tau) else ("below_all" if tau < 0 else "above_all"),
    }


def judgment_fields(judgment: Judgment, confidence: float | None) -> dict[str, Any]:
    return {
        "passed": judgment.passed,
        "delta_eis": _finite_or_none(judgment.delta_eis),
        "delta_ers": _finite_or_none(judgment.delta_ers),
        "n_low": judgment.n_low,
        "n_high": judgment.n_high,
        "low_interval": [_finite_or_none(x) for x in judgment.low_interval],
        "high_interval": [_finite_or_none(x) for x in judgment.high_interval],
        "confidence": confidence,
    }


def balanced_threshold(t: ProbeTensors, correct: torch.Tensor, config: AnalysisConfig) -> dict[str, Any]:
    """The same analysis at the class-balanced τ* (``threshold_rule="balanced"``, NOT the paper's rule): τ*, its
    balanced and plain errors, the judgment there, BRR's reach per membership rule, and the step-by-step replay."""
    tau = find_threshold(t.log_ppl, correct, "balanced")
    judgment = judge(t.log_ppl, correct, tau, config.judgment_confidence)
    block: dict[str, Any] = {
        "rule": "balanced",
        **threshold_fields(tau),
        "balanced_error": threshold_error(t.log_ppl, correct, tau, "balanced"),
        "threshold_error": threshold_error(t.log_ppl, correct, tau),
        "judgment": judgment_fields(judgment, config.judgment_confidence),
        "reallocation": reallocation_table(t, tau, judgment.passed),
    }
    if config.batch_prompts:
        block["batches"] = replay_batches(t, config, threshold_rule="balanced")
    return block


def reallocation_table(t: ProbeTensors, tau: float, passed: bool) -> dict[str, Any]:
    """For each membership rule: extreme groups BRR would reallocate at τ* (:func:`dipo.core.reallocate`).

    ``*_if_judged`` are the counts BRR would act on given the judgment (0 if it failed), the others ignore it.
    """
    types = classify_groups(t.rewards, torch.ones_like(t.rewards, dtype=torch.bool), t.group_size)
    n_hard, n_easy = int((types == GroupType.HARD).sum()), int((types == GroupType.EASY).sum())
    table: dict[str, Any] = {}
    for membership in MEMBERSHIP_RULES:
        result = reallocate(t.rewards, t.log_ppl, t.group_size, tau, membership)
        hard, easy = int(result.hard.sum()), int(result.easy.sum())
        table[membership] = {
            "hard": hard,
            "easy": easy,
            "frac_of_hard": hard / n_hard if n_hard else None,
            "frac_of_easy": easy / n_easy if n_easy else None,
            "frac_of_extreme": (hard + easy) / (n_hard + n_easy) if n_hard + n_easy else None,
            "frac_of_groups": (hard + easy) / types.numel(),
            "hard_if_judged": hard if passed else 0,
            "easy_if_judged": easy if passed else 0,
        }
    return table


def length_edges(num_tokens: torch.Tensor, bins: int) -> list[int]:
    """Inclusive upper edges of ``bins`` response-length bins (quantiles of ``num_tokens``; duplicates merged)."""
    values = sorted(num_tokens.tolist())
    top = values[-1]
    rest = [v for v in values if v < top]
    if bins > 1 and rest and len(values) - len(rest) > len(values) / bins:
        # many responses at the length limit (truncated ones): they get their own bin, the rest is split by quantiles
        return [*length_edges(torch.tensor(rest), bins - 1), top]
    return sorted({values[min(len(values) - 1, math.ceil(len(values) * (b + 1) / bins) - 1)] for b in range(bins)})


def by_length(t: ProbeTensors, correct: torch.Tensor, bins: int) -> list[dict[str, Any]]:
    """Accuracy, mean PPL of correct / wrong and AUROC per response-length bin (responses with a PPL only)."""
    has_ppl = ~torch.isnan(t.log_ppl)
    tokens = t.num_tokens[has_ppl]
    if tokens.numel() == 0:
        return []
    rows = []
    lower = 0
    for upper in length_edges(tokens, bins):
        in_bin = has_ppl & (t.num_tokens > lower) & (t.num_tokens <= upper)
        s, c = t.log_ppl[in_bin], correct[in_bin]
        rows.append(
            {
                "tokens": [lower + 1, upper],
                "n": int(in_bin.sum()),
                "accuracy": float(c.double().mean()) if c.numel() else None,
                "mean_ppl_correct": _mean_ppl(s[c]),
                "mean_ppl_wrong": _mean_ppl(s[~c]),
                "auroc": _finite_or_none(_auroc(s, c)) if s.numel() else None,
            }
        )
        lower = upper
    return rows


def replay_batches(t: ProbeTensors, config: AnalysisConfig, threshold_rule: str = "error") -> dict[str, Any]:
    """Replay the samples through :class:`dipo.core.DiPO` in steps of ``batch_prompts`` prompts (two-batch queue),
    once per membership rule: how often the judgment passes and how many groups BRR reallocates per step
    (``threshold_rule``: τ* of the paper, "error", or the class-balanced one)."""
    g = t.group_size
    rows_per_batch = config.batch_prompts * g
    num_batches = t.rewards.numel() // rows_per_batch
    result: dict[str, Any] = {"batch_prompts": config.batch_prompts, "num_steps": num_batches}
    if num_batches == 0:
        return result
    for membership in MEMBERSHIP_RULES:
        core = DiPOCoreConfig(
            membership=membership, judgment_confidence=config.judgment_confidence, threshold_rule=threshold_rule
        )
        dipo = DiPO(core)
        passed = hard = easy = 0
        extreme = 0
        for b in range(num_batches):
            rows = slice(b * rows_per_batch, (b + 1) * rows_per_batch)
            step = dipo.step(t.rewards[rows], t.log_ppl[rows], g)
            passed += int(step.judgment.passed)
            hard += int(step.realloc_hard.sum())
            easy += int(step.realloc_easy.sum())
            extreme += int((step.group_types != GroupType.NORMAL).sum())
        result[membership] = {
            "frac_steps_judgment_passed": passed / num_batches,
            "realloc_hard": hard,
            "realloc_easy": easy,
            "realloc_groups_per_step": (hard + easy) / num_batches,
            "frac_of_extreme": (hard + easy) / extreme if extreme else None,
        }
    return result


def scatter_pairs(records: Sequence[dict[str, Any]], truncated: str = "exclude") -> list[tuple[float, float, int]]:
    """``(log_ppl, reward, num_tokens)`` of every response with a PPL (for the plots)."""
    t = build_tensors(records, truncated)
    keep = ~torch.isnan(t.log_ppl)
    return list(zip(t.log_ppl[keep].tolist(), t.rewards[keep].tolist(), t.num_tokens[keep].tolist(), strict=True))  # type: ignore[return-value]
