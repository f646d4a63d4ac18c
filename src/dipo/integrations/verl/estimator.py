"""The ``dipo`` advantage estimator for verl: a thin adapter from verl's row layout to :class:`dipo.core.DiPO`.

verl calls a registered estimator with per-token ``token_level_rewards`` and ``response_mask`` ``[bs, L]``, the prompt
``index`` (uid) of every row and the ``algorithm`` config. Rows are *not* contiguous per prompt (``_balance_batch``
reorders them), so this adapter groups rows by uid, lays the groups out contiguously for ``dipo.core``, runs one DiPO
step (queue, PSD, BRR, the α·A^r term — spec §3–§7, all in ``dipo.core``) and scatters the per-response advantages
back to verl's row order, broadcast over the response tokens like verl's GRPO.

Two rewards, as in the TRL integration: the *verifier* reward R (:func:`verifier_rewards`; by default verl's score
with DAPO's soft overlong penalty taken out) decides correctness, hard / easy groups and the reallocation; the base
advantage stays verl's GRPO advantage of ``token_level_rewards`` (penalty included, as DAPO trains on it), and DiPO
adds ``α·A^r`` to it.

State (the PPL queue, spec §4) lives in :data:`ESTIMATOR_STATES`, one :class:`EstimatorState` per distinct DiPO
configuration, in the driver process where verl computes advantages. ``dipo.integrations.verl.trainer`` saves it with
verl checkpoints and logs its diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dipo.core import DiPO, DiPOStepOutput, sequence_log_ppl
from dipo.integrations._kit import (
    StepInputs,
    StepResult,
    VerifierRewards,
    base_advantages,
    choose_log_probs,
    compose_verifier_rewards,
    run_step,
    step_metrics,
)
from dipo.integrations._kit.layout import GroupLayout, group_rows
from dipo.integrations._kit.registry import free_registry_slot
from dipo.integrations.verl.context import ESTIMATOR_NAME, current_batch, current_non_tensor_batch
from dipo.integrations.verl.options import VERIFIER_KEYS, DiPOVerlOptions, parse_dipo_options

__all__ = [
    "ESTIMATOR_NAME",
    "ESTIMATOR_STATES",
    "EstimatorState",
    "GroupLayout",
    "check_row_layout",
    "compute_dipo_outcome_advantage",
    "get_estimator_state",
    "group_rows_by_uid",
    "register_estimator",
    "reset_estimator_states",
    "select_log_probs",
    "verifier_rewards",
]

#: verl's batch key of each log-prob source (``dipo.integrations._kit.logprobs``; verl has no extra forward pass).
VERL_LOG_PROB_KEYS = {"old": "old_log_probs", "sampling": "rollout_log_probs"}


@dataclass
class EstimatorState:
    """DiPO state of one configuration in this process: the core (PPL queue) and the last step's output."""

    options: DiPOVerlOptions
    core: DiPO
    last_output: DiPOStepOutput | None = None
    last_layout: GroupLayout | None = None
    last_verifier: VerifierRewards | None = None  # in verl's row order
    last_result: StepResult | None = None
    steps: int = 0

    def pop_metrics(self, prefix: str = "dipo/") -> dict[str, float]:
        """The ``dipo/*`` metrics of the last step (:func:`~dipo.integrations._kit.step_metrics`; once: a second call
        returns ``{}`` until the next step); ``prefix`` replaces ``dipo/``."""
        if self.last_output is None or self.last_result is None:
            return {}
        self.last_output = None
        return {prefix + key.removeprefix("dipo/"): value for key, value in step_metrics(self.last_result).items()}


#: One state per distinct DiPO configuration (keyed by :meth:`DiPOVerlOptions.key`), in the driver process.
ESTIMATOR_STATES: dict[tuple, EstimatorState] = {}


def get_estimator_state(algorithm_config: Any) -> EstimatorState:
    """The :class:`EstimatorState` for this ``algorithm`` config (created on first use)."""
    options = parse_dipo_options(algorithm_config)
    key = options.key()
    state = ESTIMATOR_STATES.get(key)
    if state is None:
        state = EstimatorState(options=options, core=DiPO(options.core))
        ESTIMATOR_STATES[key] = state
    return state


def reset_estimator_states() -> None:
    """Forget every DiPO state of this process (a fresh run; used by tests)."""
    ESTIMATOR_STATES.clear()


def group_rows_by_uid(index: Any, response_mask: Tensor) -> GroupLayout:
    """Group verl rows by prompt uid (:func:`dipo.integrations._kit.layout.group_rows`); rows without a response
    token (verl's padding rows) are left out."""
    num_rows = response_mask.shape[0]
    if index is None:
        raise ValueError(
            "the dipo estimator needs the prompt uid of every row (verl passes data.non_tensor_batch['uid'] as "
            "`index`); the batch has no 'uid' entry."
        )
    uids = list(index.tolist() if hasattr(index, "tolist") else index)
    if len(uids) != num_rows:
        raise ValueError(f"index (uid) has {len(uids)} entries but the batch has {num_rows} rows.")
    has_tokens = response_mask.reshape(num_rows, -1).sum(dim=1) > 0
    hint = " per uid (actor_rollout_ref.rollout.n >= 2; multi-output agent sessions are not supported)"
    return group_rows(uids, has_tokens, hint)


def select_log_probs(
    options: DiPOVerlOptions, batch: Any, old_log_probs: Tensor | None, rollout_log_probs: Tensor | None
) -> Tensor:
    """Spec §3 [choice]: per-token log-probs of the sampling policy, from what verl already computed."""
    old = old_log_probs if old_log_probs is not None else _batch_get(batch, "old_log_probs")
    rollout = rollout_log_probs if rollout_log_probs is not None else _batch_get(batch, "rollout_log_probs")
    chosen, source = choose_log_probs(options.log_probs, {"old": old, "sampling": rollout})
    if chosen is None:
        name = VERL_LOG_PROB_KEYS[source]
        available = "no batch was passed" if batch is None else f"batch keys: {sorted(batch.keys())}"
        raise ValueError(
            f"the dipo estimator needs per-token log-probs ({name}) to compute each response's perplexity, but "
            f"none reached it ({available}). verl computes old_log_probs before the advantage; make sure "
            "`dipo.integrations.verl` is imported in the driver (it installs the shim that passes the batch: "
            "pip install 'dipo[verl]', or VERL_USE_EXTERNAL_MODULES=dipo.integrations.verl), or set "
            "actor_rollout_ref.rollout.calculate_log_probs=True and +algorithm.dipo.log_probs=sampling."
        )
    return chosen


def _batch_get(batch: Any, key: str) -> Tensor | None:
    if batch is None:
        return None
    try:
        return batch[key] if key in batch.keys() else None  # noqa: SIM118 (TensorDict rejects `key in td`)
    except (KeyError, AttributeError):
        return None


def _row_values(values: Any, name: str, num_rows: int) -> Tensor:
    """A per-row field of ``non_tensor_batch`` (numpy array of floats, bools or 0-d tensors) as a float64 tensor."""
    items = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(items) != num_rows:
        raise ValueError(f"non_tensor_batch[{name!r}] has {len(items)} entries but the batch has {num_rows} rows.")
    try:
        return torch.tensor([float(v) for v in items], dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"non_tensor_batch[{name!r}] must hold one number per row (DiPO's verifier reward): {err}"
        ) from err


def _response_lengths(batch: Any, response_mask: Tensor) -> Tensor:
    """Response lengths as verl's ``dapo`` reward manager counts them: the response part of ``attention_mask``
    (tool-output tokens included) when the batch has it, else the response mask (equal for single-turn rollouts)."""
    attention = _batch_get(batch, "attention_mask")
    length = response_mask.shape[-1]
    if attention is not None and attention.dim() == 2 and attention.shape[-1] >= length:
        return attention[:, -length:].sum(dim=-1).cpu()
    return response_mask.sum(dim=-1).cpu()


def verifier_rewards(
    options: DiPOVerlOptions, token_level_rewards: Tensor, response_mask: Tensor, batch: Any, non_tensor_batch: Any
) -> VerifierRewards:
    """Spec §2, §6: the per-row verifier reward R that decides correctness and hard / easy groups.

    ``verifier_key`` (``+algorithm.dipo.verifier_key``):

    * ``"auto"`` (default): the score — the row sum of ``token_level_scores`` (the reward manager's output, before any
      in-reward KL penalty), else of ``token_level_rewards`` — minus DAPO's soft overlong penalty: the per-row
      ``overlong_reward`` field when verl logged it (``overlong_buffer_cfg.log=True``), else recomputed from the run's
      ``dapo`` reward-manager settings. Without an overlong penalty this is the score. Like the TRL integration,
      which leaves TRL's soft-overlong reward function out of R, so a group of right (or wrong) answers stays extreme
      when one of them runs into the overlong buffer.
    * ``"score"``: the score as is (penalty included).
    * any other name: that per-row field of ``data.non_tensor_batch`` (verl's ``dapo`` reward manager puts the reward
      function's extra outputs there, e.g. ``acc``, in the legacy trainer; the v1 trainers of verl 0.9.1 do not pass
      them to ``compute_advantage``).
    """
    num_rows = response_mask.shape[0]
    key = options.verifier_key
    if key not in VERIFIER_KEYS:
        values = None if non_tensor_batch is None else non_tensor_batch.get(key)
        if values is None:
            available = "none reached it" if non_tensor_batch is None else f"fields: {sorted(non_tensor_batch)}"
            raise ValueError(
                f"algorithm.dipo.verifier_key={key!r}, but the batch has no per-row {key!r} field ({available}). "
                "verl 0.9.1 puts the reward function's extra outputs into data.non_tensor_batch only in the legacy "
                "trainer (trainer.use_v1=false); the v1 trainers keep them out of compute_advantage. Use "
                "+algorithm.dipo.verifier_key=auto (the score without the DAPO overlong penalty)."
            )
        return compose_verifier_rewards(_row_values(values, key, num_rows), source=key)

    scores = _batch_get(batch, "token_level_scores")
    if scores is None or scores.shape != token_level_rewards.shape:
        scores = token_level_rewards
    score = scores.sum(dim=-1).double().cpu()
    if key == "score":
        return compose_verifier_rewards(score, source="score")
    logged = None if non_tensor_batch is None else non_tensor_batch.get("overlong_reward")
    if logged is not None:
        penalty, source = _row_values(logged, "overlong_reward", num_rows), "score - overlong_reward"
    elif options.overlong is not None:
        penalty, source = options.overlong(_response_lengths(batch, response_mask)), "score - overlong penalty"
    else:
        return compose_verifier_rewards(score, source="score")
    return compose_verifier_rewards(score, penalty=penalty, in_score=True, source=source)


def check_row_layout(token_level_rewards: Tensor, response_mask: Tensor) -> None:
    """``token_level_rewards`` and ``response_mask`` must both be ``[bs, response_length]`` with the same shape: a
    different row count would pair rows with the wrong rewards, a longer mask would give advantages wider than the
    rewards."""
    if token_level_rewards.dim() != 2 or token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"dipo estimator (verl): token_level_rewards has shape {tuple(token_level_rewards.shape)} but "
            f"response_mask has {tuple(response_mask.shape)}; both must be [batch, response_length] with one row per "
            "response, as verl's compute_advantage passes them."
        )


def compute_dipo_outcome_advantage(
    token_level_rewards: Tensor,
    response_mask: Tensor,
    index: Any = None,
    config: Any = None,
    batch: Any = None,
    non_tensor_batch: Any = None,
    old_log_probs: Tensor | None = None,
    rollout_log_probs: Tensor | None = None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """verl advantage estimator ``dipo``: verl's GRPO advantages plus α·A^r of the reallocated rewards (spec §7).

    Args:
        token_level_rewards: ``[bs, L]``; their row sum is the reward of verl's GRPO advantage. The verifier reward R
            that decides the reallocation is chosen by ``verifier_key`` (:func:`verifier_rewards`).
        response_mask: ``[bs, L]`` response tokens that count.
        index: ``[bs]`` prompt uids (``data.non_tensor_batch["uid"]``); rows may be in any order.
        config: verl's ``algorithm`` config; DiPO options under ``config.dipo`` (see ``options.py``).
        batch: ``data.batch`` with ``old_log_probs`` / ``rollout_log_probs`` ``[bs, L]`` — passed by verl once it
            forwards the batch to estimators, and by :mod:`dipo.integrations.verl.shim` until then.
        non_tensor_batch: ``data.non_tensor_batch`` (per-row reward extras for ``verifier_key``); from the shim when
            verl does not pass it.
        old_log_probs, rollout_log_probs, kwargs: accepted for forward compatibility.

    Returns:
        ``(advantages, returns)``, both ``[bs, L]`` = per-response advantage × ``response_mask``: verl's GRPO advantage
        of ``token_level_rewards`` plus DiPO's ``α·A^r`` decided on the verifier reward.
    """
    if batch is None:
        batch = current_batch()
    if non_tensor_batch is None:
        non_tensor_batch = current_non_tensor_batch()
    state = get_estimator_state(config)
    options = state.options
    check_row_layout(token_level_rewards, response_mask)
    layout = group_rows_by_uid(index, response_mask)
    token_logps = select_log_probs(options, batch, old_log_probs, rollout_log_probs)
    if token_logps.shape != response_mask.shape:
        raise ValueError(
            f"log-probs have shape {tuple(token_logps.shape)} but response_mask has {tuple(response_mask.shape)}; "
            "both must be [batch, response_length]."
        )
    verifier = verifier_rewards(options, token_level_rewards, response_mask, batch, non_tensor_batch)
    order = layout.order.to(response_mask.device)
    cpu_order = layout.order.cpu()
    if not bool(verifier.valid[cpu_order].all()):  # verl has no "skipped" rows: a NaN score is an error
        raise ValueError(f"dipo estimator (verl): the verifier reward ({verifier.source}) is NaN for some rows.")
    laid_out = verifier.take(cpu_order, response_mask.device)
    log_ppl = sequence_log_ppl(token_logps.double()[order], response_mask[order])
    # Spec §7 realloc_normalizer="separate": N_all / N_realloc in the unit the actor's loss divides by — tokens for
    # token-mean (verl's batch_num_tokens), responses for the seq-mean-* modes (verl's global_batch_size).
    loss_counts = response_mask[order].sum(dim=-1).double()
    if not options.count_tokens:
        loss_counts = torch.ones_like(loss_counts)
    inputs = StepInputs(laid_out, log_ppl, layout.group_size, loss_counts, layout.num_inactive_rows)
    hint = " Set DiPO options as +algorithm.dipo.<name>=<value>."
    result = run_step(state.core, inputs, "dipo estimator (verl): ", hint)
    # Base advantage: verl's GRPO of the rewards it trains on (overlong penalty included); it is out.base_advantages
    # whenever the verifier reward is the score.
    scores = token_level_rewards.sum(dim=-1).double()[order]
    base = base_advantages(scores, layout.group_size, state.core.config)
    per_row = torch.zeros(response_mask.shape[0], dtype=torch.float64, device=response_mask.device)
    per_row[order] = base + result.delta.to(base.device)
    advantages = per_row.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    state.last_output, state.last_layout, state.last_verifier = result.output, layout, verifier
    state.last_result = result
    state.steps += 1
    return advantages, advantages


def register_estimator() -> None:
    """Register :func:`compute_dipo_outcome_advantage` as verl's ``dipo`` estimator (idempotent on re-import)."""
    from verl.trainer.ppo import core_algos

    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    free_registry_slot(registry, ESTIMATOR_NAME, compute_dipo_outcome_advantage, "verl advantage estimator")
    core_algos.register_adv_est(ESTIMATOR_NAME)(compute_dipo_outcome_advantage)
