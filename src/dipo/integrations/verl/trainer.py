"""verl v1 trainers with DiPO bookkeeping: ``dipo/*`` diagnostics and the PPL queue in checkpoints.

The ``dipo`` estimator works with any verl trainer; these subclasses add what an estimator cannot do
(integration-notes §2.3, §2.9): log the spec §10 diagnostics of every step as ``dipo/...`` metrics, and save and
restore the PPL queue (spec §4: it "must be saved with checkpoints and restored on resume") as ``dipo_state.pt`` in
verl's ``global_step_<N>`` checkpoint folder; with ``algorithm.filter_groups.enable=True`` their replay buffer runs the
DiPO-aware group filter (``dynamic_sampling.py``: DAPO's dynamic sampling that keeps reallocated groups). Select one
with ``trainer.v1.trainer_mode=dipo_sync`` (or ``dipo_colocate_async`` / ``dipo_separate_async``); it behaves exactly
like verl's ``sync`` (resp. async) trainer otherwise. The legacy v0 ``RayPPOTrainer`` is not subclassed;
:func:`save_dipo_state` / :func:`load_dipo_state` can be called from a custom one.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from verl.trainer.ppo.v1 import PPOTrainerColocateAsync, PPOTrainerSeparateAsync, PPOTrainerSync
from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY, register_trainer

from dipo.integrations._kit import state as kit_state
from dipo.integrations._kit.registry import free_registry_slot
from dipo.integrations._kit.state import DIPO_STATE_NAME, state_path  # noqa: F401  (DIPO_STATE_NAME re-exported)
from dipo.integrations.verl.dynamic_sampling import confirmed_reallocations, make_dipo_aware
from dipo.integrations.verl.estimator import ESTIMATOR_NAME, EstimatorState, get_estimator_state
from dipo.integrations.verl.options import config_get, filter_groups_enabled, parse_dipo_options, verl_option_name

logger = logging.getLogger(__name__)


def save_dipo_state(state: EstimatorState, checkpoint_folder: str, global_step: int | None = None) -> str:
    """Spec §4: write the PPL queue to ``<checkpoint_folder>/dipo_state.pt`` (the kit's format, written atomically:
    :func:`dipo.integrations._kit.state.save_dipo_state`)."""
    return kit_state.save_dipo_state(state.core, checkpoint_folder, state.options.log_probs, global_step)


def load_dipo_state(state: EstimatorState, checkpoint_folder: str) -> bool:
    """Spec §4: restore the PPL queue from ``<checkpoint_folder>/dipo_state.pt`` (any format, see
    :func:`dipo.integrations._kit.state.restore_dipo_state`); ``False`` (and a warning) if the file is absent (a
    checkpoint written without a DiPO trainer mode). An unreadable file, or options that give the queue's labels
    another meaning (``reward_mode``, ``correct_threshold``, ``queue_batches``), raise a ``ValueError`` that names the
    file and says how to proceed; other changed options warn."""
    if kit_state.restore_dipo_state(state.core, checkpoint_folder, verl_option_name) is None:
        logger.warning(
            "dipo: %s not found; the DiPO PPL queue starts empty after this resume (spec §4). Checkpoints written "
            "by a non-DiPO trainer mode do not contain it.",
            state_path(checkpoint_folder),
        )
        return False
    return True


def check_dipo_trainer_config(config: Any) -> None:
    """Fail before any worker starts if the run cannot be a DiPO run."""
    algorithm = config_get(config, "algorithm")
    estimator = config_get(algorithm, "adv_estimator")
    if getattr(estimator, "value", estimator) != ESTIMATOR_NAME:
        raise ValueError(
            f"trainer.v1.trainer_mode={config_get(config_get(config_get(config, 'trainer'), 'v1'), 'trainer_mode')} "
            f"is a DiPO trainer but algorithm.adv_estimator={estimator!r}; set algorithm.adv_estimator=dipo."
        )
    parse_dipo_options(algorithm)  # filter-groups guard and option validation
    rollout = config_get(config_get(config, "actor_rollout_ref"), "rollout")
    n = config_get(rollout, "n", 1)
    if n is None or int(n) < 2:
        raise ValueError(
            f"DiPO needs several responses per prompt (spec §2): actor_rollout_ref.rollout.n={n}, set it to >= 2."
        )
    check_dynamic_sampling_config(config)


def check_dynamic_sampling_config(config: Any) -> None:
    """``algorithm.filter_groups.enable=True``: the DiPO-aware filter decides at group completion, before verl
    computes ``old_log_probs``, so it needs the rollout log-probs (and verl's filter metric)."""
    algorithm = config_get(config, "algorithm")
    if not filter_groups_enabled(algorithm):
        return
    rollout = config_get(config_get(config, "actor_rollout_ref"), "rollout")
    if not bool(config_get(rollout, "calculate_log_probs", False)):
        raise ValueError(
            "algorithm.filter_groups.enable=True with DiPO decides which zero-variance groups BRR reallocates when "
            "each group finishes, before old_log_probs exist, from the sampler's log-probs: set "
            "actor_rollout_ref.rollout.calculate_log_probs=True."
        )
    if not config_get(config_get(algorithm, "filter_groups"), "metric"):
        raise ValueError(
            "algorithm.filter_groups.metric must be set when group filtering is enabled (verl's filter metric, "
            "e.g. reward or acc)."
        )


def checkpoint_folder(config: Any, global_steps: int) -> str:
    """verl's ``<trainer.default_local_dir>/global_step_<N>`` (as ``PPOTrainer._save_checkpoint`` builds it)."""
    return os.path.join(config.trainer.default_local_dir, f"global_step_{global_steps}")


def resume_folder(config: Any, global_steps: int) -> str | None:
    """The folder ``PPOTrainer._load_checkpoint`` resumed from, or ``None`` when it started from scratch."""
    if global_steps <= 0:
        return None
    trainer = config.trainer
    if trainer.resume_mode == "resume_path":
        folder = trainer.resume_from_path
    else:
        folder = os.path.join(trainer.default_local_dir, f"global_step_{global_steps}")
    return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)


class DiPOTrainerMixin:
    """Adds DiPO metrics and checkpointed PPL-queue state to a verl v1 ``PPOTrainer`` subclass.

    ``base_trainer_mode`` is the verl mode whose behaviour the trainer keeps: verl's base class branches on
    ``self.trainer_mode == "sync"``, so the attribute reports the base mode, not the registered ``dipo_*`` name.
    """

    base_trainer_mode: str = "sync"
    config: Any
    global_steps: int

    def __init__(self, config: Any) -> None:
        check_dipo_trainer_config(config)
        super().__init__(config)

    @property
    def trainer_mode(self) -> str:
        return self.base_trainer_mode

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        if value not in (self.base_trainer_mode, f"dipo_{self.base_trainer_mode}"):
            raise ValueError(f"{type(self).__name__} runs verl's {self.base_trainer_mode!r} mode, got {value!r}.")

    @property
    def dipo_state(self) -> EstimatorState:
        """The estimator's state for this run's ``algorithm`` config (shared with the ``dipo`` estimator)."""
        return get_estimator_state(self.config.algorithm)

    def _build_replay_buffer(self) -> Any:
        buffer = super()._build_replay_buffer()  # type: ignore[misc]
        if filter_groups_enabled(self.config.algorithm):
            buffer = make_dipo_aware(buffer, self.config.algorithm)
        return buffer

    def _compute_advantage(self, batch: Any, metrics: dict) -> Any:
        kept = getattr(getattr(self, "replay_buffer", None), "dipo_last_kept_reallocated", None)
        row_keys = None if kept is None else list(batch.keys)  # verl's rows, in the order the estimator sees them
        batch = super()._compute_advantage(batch, metrics)
        if row_keys is not None:
            metrics.update(self._dynamic_sampling_metrics(row_keys))
        metrics.update(self.dipo_state.pop_metrics())
        return batch

    def _dynamic_sampling_metrics(self, row_keys: list[str]) -> dict[str, float]:
        """``dipo/ds_realloc_confirmed``: of the groups the filter kept because it predicted a reallocation, those
        the estimator's step (whose τ* also counts the batch itself) reallocated."""
        kept = self.replay_buffer.dipo_last_kept_reallocated
        row_uids = [key.rsplit("_", 2)[0] for key in row_keys]
        confirmed = confirmed_reallocations(self.dipo_state, row_uids, kept)
        return {} if confirmed is None else {"dipo/ds_realloc_confirmed": float(confirmed)}

    def _save_checkpoint(self) -> None:
        # Written before verl's own save, which ends by marking the step as the latest resumable checkpoint.
        save_dipo_state(self.dipo_state, checkpoint_folder(self.config, self.global_steps), self.global_steps)
        super()._save_checkpoint()

    def _load_checkpoint(self) -> None:
        super()._load_checkpoint()
        folder = resume_folder(self.config, self.global_steps)
        if folder is not None and load_dipo_state(self.dipo_state, folder):
            logger.info("dipo: restored the PPL queue (%d values) from %s", len(self.dipo_state.core.queue), folder)


class DiPOTrainerSync(DiPOTrainerMixin, PPOTrainerSync):
    """verl's ``sync`` trainer with DiPO metrics and checkpointed state (``trainer.v1.trainer_mode=dipo_sync``)."""

    base_trainer_mode = "sync"


class DiPOTrainerColocateAsync(DiPOTrainerMixin, PPOTrainerColocateAsync):
    """verl's ``colocate_async`` trainer with DiPO bookkeeping (``trainer.v1.trainer_mode=dipo_colocate_async``)."""

    base_trainer_mode = "colocate_async"


class DiPOTrainerSeparateAsync(DiPOTrainerMixin, PPOTrainerSeparateAsync):
    """verl's ``separate_async`` trainer with DiPO bookkeeping (``trainer.v1.trainer_mode=dipo_separate_async``)."""

    base_trainer_mode = "separate_async"


DIPO_TRAINERS: dict[str, type] = {
    "dipo_sync": DiPOTrainerSync,
    "dipo_colocate_async": DiPOTrainerColocateAsync,
    "dipo_separate_async": DiPOTrainerSeparateAsync,
}


def register_trainers() -> None:
    """Register the ``dipo_*`` trainer modes in verl's v1 trainer registry (idempotent on re-import)."""
    for name, cls in DIPO_TRAINERS.items():
        free_registry_slot(TRAINER_REGISTRY, name, cls, "verl trainer mode")
        register_trainer(name)(cls)
