"""DiPO-aware dynamic sampling in verl's v1 replay buffer (spec §7; ``docs/verl.md`` "Dynamic sampling with DiPO").

verl 0.9.1 runs DAPO's dynamic sampling (``algorithm.filter_groups.enable=True``) in its v1 ``ReplayBuffer``: when a
prompt group finishes, ``_dapo_filtered_keys`` marks it for eviction if its ``filter_groups.metric`` has zero variance,
and the buffer refills the batch with fresh prompts. That drops every group BRR would reallocate. The ``dipo_*``
trainer modes give their replay buffer :class:`DiPOReplayBufferMixin`, which overrides only that classification:

* a group whose metric has zero variance is kept when BRR would reallocate it (:func:`dipo.core.groups_to_keep` with
  ``reallocated``); the rest of verl's eviction / refill / surplus logic is unchanged;
* the decision is taken at group completion, before verl computes ``old_log_probs``, so the perplexity comes from
  the rollout log-probs (``actor_rollout_ref.rollout.calculate_log_probs=True`` is required) and the threshold is the
  current τ* of the estimator's PPL queue, **read-only**: the filter never pushes to the queue, so the DiPO step runs
  once per batch, in the estimator, on the groups that were kept (the queue sees kept groups only);
* the estimator's step then includes the batch itself in its queue (spec §4), so its τ* can differ slightly from the
  filter's: ``dipo/ds_realloc_confirmed`` counts the kept-as-reallocated groups the estimator did reallocate.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from verl.trainer.ppo.v1 import replay_buffer as verl_replay_buffer
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync

from dipo.core import sequence_log_ppl
from dipo.integrations._kit.dynamic_sampling import (  # the last two: public names of this module, kept
    kept_groups,
    predicted_reallocation,
    reallocation_threshold,
)
from dipo.integrations._kit.step import DS_METRICS, ds_metrics
from dipo.integrations.verl.estimator import EstimatorState, get_estimator_state, verifier_rewards
from dipo.integrations.verl.options import VERIFIER_KEYS, DiPOVerlOptions

#: Fields of a trajectory in verl's TransferQueue that the DiPO decision reads.
ROLLOUT_FIELDS = ("rm_scores", "response_mask", "rollout_log_probs", "extra_fields")


def _rows(values: Any) -> list[Any]:
    """Per-trajectory items of a field returned by TransferQueue (a list, a nested/jagged or a padded tensor)."""
    if isinstance(values, Tensor):
        return list(values.unbind(0))
    return list(values)


def _padded(rows: list[Tensor], width: int) -> Tensor:
    out = torch.zeros(len(rows), width, dtype=torch.float64)
    for i, row in enumerate(rows):
        flat = row.reshape(-1).double()
        out[i, : flat.numel()] = flat
    return out


def _reward_extra_info(extra_fields: Any) -> dict:
    """``extra_fields["reward_extra_info"]`` of one trajectory (verl wraps non-tensor values in ``NonTensorData``)."""
    fields = getattr(extra_fields, "data", extra_fields)
    info = fields.get("reward_extra_info", {}) if isinstance(fields, dict) else {}
    return info if isinstance(info, dict) else {}


@dataclass
class GroupRollouts:
    """One prompt group as verl's TransferQueue holds it: unpadded per-trajectory tensors, in session order."""

    rm_scores: list[Tensor]
    response_mask: list[Tensor]
    rollout_log_probs: list[Tensor | None]
    reward_extra_info: list[dict]

    @property
    def size(self) -> int:
        return len(self.rm_scores)

    def width(self) -> int:
        return max(int(m.numel()) for m in self.response_mask)

    def log_ppl(self, uid: str) -> Tensor:
        """Spec §3 log-PPL of every response, from the rollout log-probs (the only ones that exist at this point)."""
        if any(lp is None for lp in self.rollout_log_probs):
            raise RuntimeError(
                f"dipo dynamic sampling: group {uid!r} has no rollout_log_probs; the DiPO-aware filter needs the "
                "sampler's log-probs at group completion. Set actor_rollout_ref.rollout.calculate_log_probs=True."
            )
        width = self.width()
        mask = _padded(self.response_mask, width)
        return sequence_log_ppl(_padded(self.rollout_log_probs, width), mask)  # type: ignore[arg-type]

    def verifier_rewards(self, options: DiPOVerlOptions) -> Tensor:
        """Spec §2 verifier reward R, exactly as the estimator derives it (:func:`estimator.verifier_rewards`)."""
        width = self.width()
        scores = _padded(self.rm_scores, width)
        mask = _padded(self.response_mask, width)
        lengths = torch.tensor([int(m.numel()) for m in self.response_mask])
        attention = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).long()
        extras = None
        if options.verifier_key not in VERIFIER_KEYS:
            values = [info.get(options.verifier_key) for info in self.reward_extra_info]
            extras = {options.verifier_key: np.array(values, dtype=object)}
        return verifier_rewards(options, scores, mask, {"attention_mask": attention}, extras).rewards


def group_is_kept(
    state: EstimatorState, metric_values: list[float], rollouts: Callable[[], GroupRollouts], uid: str, tau: float
) -> tuple[bool, bool]:
    """``(keep, kept_as_reallocated)`` of one finished group: DAPO's zero-variance test on verl's filter metric,
    overruled by BRR's decision at τ* ``tau`` (:func:`dipo.core.groups_to_keep`). ``rollouts`` is called only for a
    zero-variance group when a threshold exists."""
    group_size = len(metric_values)
    if group_size < 2:  # verl never filters a single-trajectory group
        return True, False
    tol = state.core.config.zero_variance_tol
    metric = torch.tensor(metric_values, dtype=torch.float64)
    if bool(kept_groups(metric, group_size, zero_variance_tol=tol)[0][0]):
        return True, False
    reallocated = torch.zeros(1, dtype=torch.bool)
    if not math.isnan(tau):
        group = rollouts()
        if group.size != group_size:
            raise RuntimeError(f"dipo dynamic sampling: group {uid!r} changed size while it was classified.")
        rewards = group.verifier_rewards(state.options)
        reallocated = state.core.predict_reallocation(rewards, group.log_ppl(uid), group_size, tau)
    keep, by_brr = kept_groups(metric, group_size, reallocated, zero_variance_tol=tol)
    return bool(keep[0]), bool(by_brr[0])


def _session_order(key: str) -> tuple[int, int]:
    _, session, index = key.rsplit("_", 2)
    return int(session), int(index)


class DiPOReplayBufferMixin:
    """DiPO-aware ``_dapo_filtered_keys`` for verl's v1 ``ReplayBuffer`` / ``ReplayBufferAsync`` (see module doc).

    Set up by :func:`make_dipo_aware`; everything else (eviction, refill credit, surplus, off-policy control) stays
    verl's.
    """

    dipo_algorithm_config: Any
    filter_groups_metric: str | None
    finished_keys: dict[str, set]
    partitions: dict[str, dict[str, dict]]
    _dapo_classification_cache: dict[str, dict[str, float | None]]

    def _dipo_init(self, algorithm_config: Any) -> None:
        self.dipo_algorithm_config = algorithm_config
        self.dipo_kept_reallocated: dict[str, set[str]] = defaultdict(set)  # finished groups kept by BRR
        self.dipo_last_kept_reallocated: set[str] = set()  # those of the last sampled training batch
        # Since the last sampled training batch (the async trainers also evict and refill outside ``sample``):
        self.dipo_refilled_prompts = 0  # fresh prompts dispatched to replace evicted groups
        self.dipo_dropped_groups = 0  # finished training groups the filter dropped
        refill = self.refill_fn

        def counting_refill(num_prompts: int) -> Any:
            self.dipo_refilled_prompts += int(num_prompts)
            return refill(num_prompts)

        self.refill_fn = counting_refill

    def _dapo_filtered_keys(self, partition_id: str) -> tuple[set[str], Counter]:
        """Finished groups to evict: zero variance on verl's filter metric and not reallocated by BRR."""
        if partition_id == "val" or self.filter_groups_metric is None:
            return set(), Counter()
        finished = self.finished_keys[partition_id]
        cache = self._dapo_classification_cache[partition_id]
        for uid in cache.keys() - finished:
            del cache[uid]
        self.dipo_kept_reallocated[partition_id] &= finished
        new_uids = finished - cache.keys()
        if new_uids:
            cache.update(self._dipo_classify(partition_id, new_uids))
        dropped = {uid: value for uid, value in cache.items() if value is not None}
        return set(dropped), Counter(dropped.values())

    def _dipo_keys_by_uid(self, partition_id: str, uids: set[str]) -> dict[str, list[str]]:
        keys: dict[str, list[str]] = {uid: [] for uid in uids}
        for key in self.partitions[partition_id]:
            uid = key.split("_")[0]
            if uid in keys:
                keys[uid].append(key)
        missing = sorted(uid for uid, group in keys.items() if not group)
        if missing:
            raise RuntimeError(f"Finished groups are missing DAPO metric {self.filter_groups_metric!r}: {missing[:5]}")
        return {uid: sorted(group, key=_session_order) for uid, group in keys.items()}

    def _dipo_metric_values(self, partition_id: str, keys_by_uid: dict[str, list[str]]) -> dict[str, list[float]]:
        """verl's filter metric per trajectory: summed ``rm_scores`` for "reward", else a reward_extra_info field."""
        keys = [key for group in keys_by_uid.values() for key in group]
        canonical = self.filter_groups_metric == verl_replay_buffer.FILTER_GROUPS_REWARD_METRIC
        field = "rm_scores" if canonical else "extra_fields"
        data = verl_replay_buffer.tq.kv_batch_get(keys=keys, partition_id=partition_id, select_fields=[field])
        values: dict[str, float] = {}
        for key, value in zip(keys, _rows(data[field]), strict=True):
            if canonical:
                values[key] = float(value.sum().item())
                continue
            info = _reward_extra_info(value)
            if self.filter_groups_metric not in info:
                raise RuntimeError(
                    f"Finished groups are missing DAPO metric {self.filter_groups_metric!r}: {[key.split('_')[0]]}"
                )
            values[key] = float(info[self.filter_groups_metric])
        return {uid: [values[key] for key in group] for uid, group in keys_by_uid.items()}

    def _dipo_rollouts(self, partition_id: str, keys: list[str]) -> GroupRollouts:
        try:
            data = verl_replay_buffer.tq.kv_batch_get(
                keys=keys, partition_id=partition_id, select_fields=list(ROLLOUT_FIELDS)
            )
            rollout_log_probs = _rows(data["rollout_log_probs"])
        except KeyError as err:
            raise RuntimeError(
                f"dipo dynamic sampling: the finished trajectories have no {err} field; the DiPO-aware filter reads "
                "the rollout log-probs at group completion. Set actor_rollout_ref.rollout.calculate_log_probs=True."
            ) from err
        return GroupRollouts(
            rm_scores=_rows(data["rm_scores"]),
            response_mask=_rows(data["response_mask"]),
            rollout_log_probs=rollout_log_probs,
            reward_extra_info=[_reward_extra_info(v) for v in _rows(data["extra_fields"])],
        )

    def _dipo_classify(self, partition_id: str, uids: set[str]) -> dict[str, float | None]:
        """verl's classification cache entries (the shared metric value if evicted, else None) for new groups."""
        keys_by_uid = self._dipo_keys_by_uid(partition_id, uids)
        metrics = self._dipo_metric_values(partition_id, keys_by_uid)
        state = get_estimator_state(self.dipo_algorithm_config)
        tau = state.core.current_threshold()
        result: dict[str, float | None] = {}
        for uid, values in metrics.items():
            keys = keys_by_uid[uid]
            keep, by_brr = group_is_kept(state, values, lambda k=keys: self._dipo_rollouts(partition_id, k), uid, tau)
            result[uid] = None if keep else float(values[0])
            self.dipo_dropped_groups += int(not keep)
            if by_brr:
                self.dipo_kept_reallocated[partition_id].add(uid)
        return result

    def sample(self, global_steps: int, partition_id: str, batch_size: int) -> tuple[Any, dict]:
        batch, metrics = super().sample(global_steps, partition_id, batch_size)  # type: ignore[misc]
        if partition_id != "val" and self.filter_groups_metric is not None:
            metrics.update(self._dipo_sample_metrics(batch.keys, partition_id, batch_size))
        return batch, metrics

    def _dipo_sample_metrics(self, keys: Iterable[str], partition_id: str, batch_size: int) -> dict[str, float]:
        """``dipo/ds_*`` of one sampled training batch, counted since the previous one (``docs/verl.md``)."""
        selected = {key.split("_")[0] for key in keys}
        kept_reallocated = selected & self.dipo_kept_reallocated[partition_id]
        self.dipo_kept_reallocated[partition_id] -= selected
        self.dipo_last_kept_reallocated = kept_reallocated
        rounds = 1.0 + self.dipo_refilled_prompts / max(batch_size, 1)
        metrics = ds_metrics(rounds, len(selected), self.dipo_dropped_groups, len(kept_reallocated))
        self.dipo_refilled_prompts = self.dipo_dropped_groups = 0
        return metrics


class DiPOReplayBuffer(DiPOReplayBufferMixin, ReplayBuffer):
    """verl's sync ``ReplayBuffer`` with the DiPO-aware group filter."""


class DiPOReplayBufferAsync(DiPOReplayBufferMixin, ReplayBufferAsync):
    """verl's ``ReplayBufferAsync`` with the DiPO-aware group filter."""


DIPO_REPLAY_BUFFERS: dict[type, type] = {ReplayBuffer: DiPOReplayBuffer, ReplayBufferAsync: DiPOReplayBufferAsync}


def make_dipo_aware(buffer: Any, algorithm_config: Any) -> Any:
    """Turn the replay buffer verl's ``PPOTrainer._build_replay_buffer`` built into its DiPO-aware subclass, in place.

    verl chooses the class (sync or async) and computes its constructor arguments inside ``_build_replay_buffer``
    (the refill sizes only for its own classes), so the plugin lets verl build it and then swaps the class for the
    subclass that adds nothing but the filter; this keeps verl's construction logic as it is.
    """
    target = DIPO_REPLAY_BUFFERS.get(type(buffer))
    if target is None:
        raise ValueError(
            f"dipo dynamic sampling needs verl's built-in replay buffer, got {type(buffer).__name__}; drop "
            "trainer.v1.sampler.custom_sampler or set algorithm.filter_groups.enable=False."
        )
    buffer.__class__ = target
    buffer._dipo_init(algorithm_config)
    return buffer


def confirmed_reallocations(state: EstimatorState, row_uids: list[str], kept_reallocated: set[str]) -> int | None:
    """How many of ``kept_reallocated`` (groups the filter kept because it predicted a reallocation) the estimator's
    last step did reallocate; ``None`` if the step's layout does not match ``row_uids`` (verl's row order)."""
    out, layout = state.last_output, state.last_layout
    if out is None or layout is None or layout.order.numel() == 0 or max(layout.order.tolist()) >= len(row_uids):
        return None
    firsts = layout.order[:: layout.group_size].tolist()
    done = (out.realloc_hard | out.realloc_easy).tolist()
    return sum(1 for row, flag in zip(firsts, done, strict=True) if flag and row_uids[row] in kept_reallocated)


__all__ = [
    "DIPO_REPLAY_BUFFERS",
    "DS_METRICS",
    "DiPOReplayBuffer",
    "DiPOReplayBufferAsync",
    "DiPOReplayBufferMixin",
    "GroupRollouts",
    "confirmed_reallocations",
    "group_is_kept",
    "make_dipo_aware",
    "predicted_reallocation",
    "reallocation_threshold",
]
