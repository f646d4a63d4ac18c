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

from dipo.core import DiPO, DiPOStepOutput, group_advantages, sequence_log_ppl
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

#: Verifier rewards this close to an integer are snapped to it after the overlong penalty is subtracted: verl adds
#: the penalty in float32, so ``score − penalty`` of a ±1 / 0-1 verifier reward is off by a few float32 ulps.
_SNAP_TOLERANCE = 1e-5


@dataclass
class EstimatorState:
    """DiPO state of one configuration in this process: the core (PPL queue) and the last step's output."""

    options: DiPOVerlOptions
    core: DiPO
    last_output: DiPOStepOutput | None = None
    last_layout: GroupLayout | None = None
    last_verifier: VerifierRewards | None = None
    steps: int = 0

    def pop_metrics(self, prefix: str = "dipo/") -> dict[str, float]:
        """Spec §10 diagnostics of the last step (once: a second call returns ``{}`` until the next step)."""
        if self.last_output is None:
            return {}
        metrics = {f"{prefix}{k}": float(v) for k, v in self.last_output.metrics().items()}
        if self.last_layout is not None:
            metrics[f"{prefix}num_groups"] = float(self.last_layout.num_groups)
            metrics[f"{prefix}group_size"] = float(self.last_layout.group_size)
            metrics[f"{prefix}inactive_rows"] = float(self.last_layout.num_inactive_rows)
        if self.last_verifier is not None:
            metrics[f"{prefix}frac_rows_overlong_penalty"] = self.last_verifier.frac_penalised
        self.last_output = None
        return metrics


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


@dataclass
class GroupLayout:
    """Map from verl's rows to dipo.core's contiguous groups.

    ``order[k]`` is the verl row placed at position ``k`` of the contiguous layout (groups in order of first
    appearance, rows of a group in their verl order). Rows of *inactive* uids — every row without a response token,
    such as the synthetic padding rows verl appends to make the batch divisible — are left out and get advantage 0.
    """

    order: Tensor
    group_size: int
    num_groups: int
    num_inactive_rows: int = 0


def group_rows_by_uid(index: Any, response_mask: Tensor) -> GroupLayout:
    """Group verl rows by prompt uid (spec §2: B prompts × G responses); every active uid must have G >= 2 rows."""
    num_rows = response_mask.shape[0]
    if index is None:
        raise ValueError(
            "the dipo estimator needs the prompt uid of every row (verl passes data.non_tensor_batch['uid'] as "
            "`index`); the batch has no 'uid' entry."
        )
    uids = list(index.tolist() if hasattr(index, "tolist") else index)
    if len(uids) != num_rows:
        raise ValueError(f"index (uid) has {len(uids)} entries but the batch has {num_rows} rows.")
    codes: dict[Any, int] = {}
    row_codes = torch.tensor([codes.setdefault(uid, len(codes)) for uid in uids], dtype=torch.long)
    num_uids = len(codes)
    has_tokens = response_mask.reshape(num_rows, -1).sum(dim=1).cpu() > 0
    active_uid = torch.zeros(num_uids, dtype=torch.bool).index_put_((row_codes,), has_tokens, accumulate=True)
    active_rows = active_uid[row_codes]
    counts = torch.bincount(row_codes[active_rows], minlength=num_uids)[active_uid]
    uid_list = list(codes)
    if counts.numel() == 0:
        raise ValueError("the batch has no response tokens at all (response_mask is all 0); nothing to train on.")
    group_size = int(counts[0])
    if bool((counts != group_size).any()) or group_size < 2:
        active_uids = [u for u, a in zip(uid_list, active_uid.tolist(), strict=True) if a]
        sizes = dict(zip(active_uids, counts.tolist(), strict=True))
        shown = ", ".join(f"{u!r}: {n}" for u, n in list(sizes.items())[:6])
        raise ValueError(
            "the dipo estimator needs every prompt uid to have the same number G >= 2 of responses "
            f"(actor_rollout_ref.rollout.n >= 2), got rows per uid {{{shown}{', ...' if len(sizes) > 6 else ''}}}. "
            "Multi-output agent sessions (several outputs per uid) are not supported."
        )
    active_idx = torch.nonzero(active_rows).squeeze(1)
    order = active_idx[torch.argsort(row_codes[active_idx], stable=True)]
    return GroupLayout(
        order=order,
        group_size=group_size,
        num_groups=int(active_uid.sum()),
        num_inactive_rows=int((~active_rows).sum()),
    )


def select_log_probs(
    options: DiPOVerlOptions, batch: Any, old_log_probs: Tensor | None, rollout_log_probs: Tensor | None
) -> Tensor:
    """Spec §3 [choice]: per-token log-probs of the sampling policy, from what verl already computed."""
    old = old_log_probs if old_log_probs is not None else _batch_get(batch, "old_log_probs")
    rollout = rollout_log_probs if rollout_log_probs is not None else _batch_get(batch, "rollout_log_probs")
    source = options.log_probs
    if source == "old_log_probs" or (source == "auto" and old is not None):
        chosen, name = old, "old_log_probs"
    else:
        chosen, name = rollout, "rollout_log_probs"
    if chosen is None:
        available = "no batch was passed" if batch is None else f"batch keys: {sorted(batch.keys())}"
        raise ValueError(
            f"the dipo estimator needs per-token log-probs ({name}) to compute each response's perplexity, but "
            f"none reached it ({available}). verl computes old_log_probs before the advantage; make sure "
            "`dipo.integrations.verl` is imported in the driver (it installs the shim that passes the batch: "
            "pip install 'dipo[verl]', or VERL_USE_EXTERNAL_MODULES=dipo.integrations.verl), or set "
            "actor_rollout_ref.rollout.calculate_log_probs=True and +algorithm.dipo.log_probs=rollout_log_probs."
        )
    return chosen


def _batch_get(batch: Any, key: str) -> Tensor | None:
    if batch is None:
        return None
    try:
        return batch[key] if key in batch.keys() else None  # noqa: SIM118 (TensorDict rejects `key in td`)
    except (KeyError, AttributeError):
        return None


@dataclass
class VerifierRewards:
    """Per-row verifier rewards R in verl's row order, where they came from, and the share of rows whose score
    carried an overlong penalty that was taken out."""

    rewards: Tensor
    source: str
    frac_penalised: float = 0.0


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
        return VerifierRewards(_row_values(values, key, num_rows), key)

    scores = _batch_get(batch, "token_level_scores")
    if scores is None or scores.shape != token_level_rewards.shape:
        scores = token_level_rewards
    score = scores.sum(dim=-1).double().cpu()
    if key == "score":
        return VerifierRewards(score, "score")
    logged = None if non_tensor_batch is None else non_tensor_batch.get("overlong_reward")
    if logged is not None:
        penalty, source = _row_values(logged, "overlong_reward", num_rows), "score - overlong_reward"
    elif options.overlong is not None:
        penalty, source = options.overlong(_response_lengths(batch, response_mask)), "score - overlong penalty"
    else:
        return VerifierRewards(score, "score")
    verifier = score - penalty
    snapped = verifier.round()
    verifier = torch.where((verifier - snapped).abs() <= _SNAP_TOLERANCE, snapped, verifier)
    return VerifierRewards(verifier, source, float((penalty < 0).double().mean()))


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
    options, cfg = state.options, state.core.config
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
    rewards = verifier.rewards[cpu_order].to(response_mask.device)
    log_ppl = sequence_log_ppl(token_logps.double()[order], response_mask[order])
    # Spec §7 realloc_normalizer="separate": N_all / N_realloc in the unit the actor's loss divides by — tokens for
    # token-mean (verl's batch_num_tokens), responses for the seq-mean-* modes (verl's global_batch_size).
    loss_counts = response_mask[order].sum(dim=-1).double()
    if not options.count_tokens:
        loss_counts = torch.ones_like(loss_counts)
    try:
        out = state.core.step(rewards, log_ppl, layout.group_size, token_counts=loss_counts)
    except ValueError as err:
        raise ValueError(f"dipo estimator (verl): {err} Set DiPO options as +algorithm.dipo.<name>=<value>.") from err
    # Base advantage: verl's GRPO of the rewards it trains on (overlong penalty included); it is out.base_advantages
    # whenever the verifier reward is the score.
    scores = token_level_rewards.sum(dim=-1).double()[order]
    base = group_advantages(scores, layout.group_size, scale_rewards=cfg.scale_rewards, std=cfg.std, eps=cfg.std_eps)
    per_row = torch.zeros(response_mask.shape[0], dtype=torch.float64, device=response_mask.device)
    per_row[order] = base + out.advantage_delta.to(base.device)
    advantages = per_row.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    state.last_output, state.last_layout, state.last_verifier = out, layout, verifier
    state.steps += 1
    return advantages, advantages


def register_estimator() -> None:
    """Register :func:`compute_dipo_outcome_advantage` as verl's ``dipo`` estimator (idempotent on re-import)."""
    from verl.trainer.ppo import core_algos

    existing = core_algos.ADV_ESTIMATOR_REGISTRY.get(ESTIMATOR_NAME)
    if existing is not None and existing is not compute_dipo_outcome_advantage:
        same_function = (
            getattr(existing, "__module__", None) == __name__
            and getattr(existing, "__qualname__", None) == compute_dipo_outcome_advantage.__qualname__
        )
        if not same_function:
            raise ValueError(
                f"verl already has an advantage estimator named {ESTIMATOR_NAME!r} ({existing!r}) that is not "
                "DiPO's; remove the other plugin or rename it."
            )
        del core_algos.ADV_ESTIMATOR_REGISTRY[ESTIMATOR_NAME]  # a reloaded copy of this module
    core_algos.register_adv_est(ESTIMATOR_NAME)(compute_dipo_outcome_advantage)
