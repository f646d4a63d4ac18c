"""The step contract between an adapter and :class:`dipo.core.DiPO`: what the adapter fills in, what it gets back.

An adapter (1) lays its batch out as ``B`` contiguous groups of ``G`` rows, (2) fills :class:`StepInputs` (the
verifier rewards from :func:`~dipo.integrations._kit.rewards.compose_verifier_rewards`, the per-response log-PPL from
the log-probs :func:`~dipo.integrations._kit.logprobs.choose_log_probs` picked), (3) calls :func:`run_step` and adds
``result.delta`` (α·A^r) to the base advantage its framework trains on, and (4) logs :func:`step_metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from dipo.core import DiPO, DiPOCoreConfig, DiPOStepOutput, group_advantages
from dipo.integrations._kit.rewards import VerifierRewards

#: Prefix of every metric an adapter logs.
METRIC_PREFIX = "dipo/"

#: Adapter-level step metrics (besides the core's spec §10 diagnostics, ``DiPOStepOutput.metrics()``).
ADAPTER_METRICS: tuple[str, ...] = (
    "frac_rows_no_ppl",
    "advantage_delta_abs_mean",
    "num_groups",
    "group_size",
    "inactive_rows",
    "frac_rows_overlong_penalty",
)

#: Dynamic-sampling metrics both adapters log (verl also logs ``dipo/ds_realloc_confirmed``, TRL
#: ``dipo/ds_filler_groups``).
DS_METRICS: tuple[str, ...] = (
    "dipo/ds_rounds",
    "dipo/ds_kept_groups",
    "dipo/ds_dropped_groups",
    "dipo/ds_kept_reallocated",
)


@dataclass
class StepInputs:
    """One training batch, laid out as contiguous groups (rows ``g·G .. g·G+G-1`` answer prompt ``g``)."""

    verifier: VerifierRewards  # R (0 on invalid rows), the valid rows, the overlong share
    log_ppl: Tensor  # [N] per-response log-PPL over the loss tokens (NaN: no token)
    group_size: int  # G
    token_counts: Tensor | None = None  # [N] loss tokens per row if the loss normalises by tokens, else None (rows)
    inactive_rows: int = 0  # rows the adapter left out of the layout (e.g. verl's padding rows)


@dataclass
class StepResult:
    """What :func:`run_step` returns: the inputs, the core's decisions and α·A^r (``delta``, ``[N]``, layout order)."""

    inputs: StepInputs
    output: DiPOStepOutput
    delta: Tensor


def run_step(core: DiPO, inputs: StepInputs, where: str = "", how_to_fix: str = "") -> StepResult:
    """One DiPO step (queue, PSD, judgment, BRR, α·A^r; spec §3–§7) on ``inputs``.

    The core's ``ValueError`` on bad inputs is re-raised as ``f"{where}{error}{how_to_fix}"`` (``where`` names the
    adapter, e.g. ``"DiPOTrainer: "``; ``how_to_fix`` says how the framework's user sets DiPO options)."""
    verifier = inputs.verifier
    try:
        out = core.step(
            verifier.rewards, inputs.log_ppl, inputs.group_size, valid=verifier.valid, token_counts=inputs.token_counts
        )
    except ValueError as err:
        if not (where or how_to_fix):
            raise
        raise ValueError(f"{where}{err}{how_to_fix}") from err
    return StepResult(inputs, out, out.advantage_delta)


def base_advantages(rewards: Tensor, group_size: int, config: DiPOCoreConfig) -> Tensor:
    """GRPO advantages of the reward the framework trains on (overlong shaping included), normalised as the run's
    core config says — for adapters whose framework hands over none (verl's estimator replaces GRPO's); an adapter
    that receives its framework's own advantages (TRL) adds ``delta`` to those instead."""
    return group_advantages(rewards, group_size, config.scale_rewards, config.std, config.std_eps)


def step_metrics(result: StepResult) -> dict[str, float]:
    """Every ``dipo/*`` metric of one step: the core's spec §10 diagnostics and :data:`ADAPTER_METRICS`."""
    inputs, valid = result.inputs, result.inputs.verifier.valid
    metrics = {f"{METRIC_PREFIX}{key}": float(value) for key, value in result.output.metrics().items()}
    no_ppl = (torch.isnan(inputs.log_ppl) & valid.to(inputs.log_ppl.device)).float().mean()
    extra = {
        "frac_rows_no_ppl": float(no_ppl),
        "advantage_delta_abs_mean": float(result.delta.abs().mean()) if result.delta.numel() else math.nan,
        "num_groups": float(inputs.log_ppl.numel() // inputs.group_size),
        "group_size": float(inputs.group_size),
        "inactive_rows": float(inputs.inactive_rows),
        "frac_rows_overlong_penalty": float(inputs.verifier.frac_penalised),
    }
    metrics.update({f"{METRIC_PREFIX}{key}": value for key, value in extra.items()})
    return metrics


def ds_metrics(rounds: float, kept: int, dropped: int, kept_reallocated: int) -> dict[str, float]:
    """The dynamic-sampling metrics of one training batch (:data:`DS_METRICS`): generation rounds (in batches),
    groups kept, groups dropped, groups kept only because BRR reallocated them."""
    return {
        name: float(value) for name, value in zip(DS_METRICS, (rounds, kept, dropped, kept_reallocated), strict=True)
    }
