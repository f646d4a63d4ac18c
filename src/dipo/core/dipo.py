"""The DiPO step (spec §3–§7, §10): one stateful entry point that frameworks call once per batch.

Read top to bottom with the paper beside it:
1. correctness of each response from the verifier reward (§2);
2. push the batch's (log-PPL, correct) pairs into the PPL queue (§4);
3. PSD: threshold τ* on the queue (§5) and the advantage judgment (§5);
4. BRR: reallocate rewards of the maximum-PPL response in extreme groups (§6) — only if the judgment passed;
5. group-normalised advantages of R and of R_r, folded as A + α·A^r (§7);
6. diagnostics (§10).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dipo.core._checks import (
    cast_result,
    check_1d,
    check_binary_rewards,
    check_finite_rewards,
    check_group_size,
    check_log_ppl,
    check_same_device,
    check_same_shape,
    float_rewards,
    output_dtype,
    threshold_as,
    valid_mask,
)
from dipo.core.advantages import _group_advantages_unchecked, fold_advantages, realloc_scale
from dipo.core.brr import _reallocate_unchecked, reallocate
from dipo.core.config import DiPOCoreConfig
from dipo.core.groups import GroupType, correctness
from dipo.core.judgment import Judgment, judge
from dipo.core.quadrants import Quadrant, quadrant_labels
from dipo.core.queue import PPLQueue
from dipo.core.threshold import _find_threshold_unchecked, threshold_error


@dataclass
class DiPOStepOutput:
    """Result of :meth:`DiPO.step`; tensors are ``[N]`` per response or ``[B]`` per group."""

    advantages: Tensor
    base_advantages: Tensor
    advantage_delta: Tensor
    realloc_rewards: Tensor
    realloc_mask: Tensor
    group_types: Tensor
    selected: Tensor
    realloc_hard: Tensor
    realloc_easy: Tensor
    quadrants: Tensor
    correct: Tensor
    log_ppl: Tensor
    threshold: float
    threshold_error: float
    judgment: Judgment
    applied: bool
    queue_size: int

    def metrics(self) -> dict[str, float]:
        """Spec §10 diagnostics as plain floats (prefix them, e.g. ``dipo/``, when logging)."""
        num_groups = max(int(self.group_types.numel()), 1)
        counts = torch.bincount(self.group_types, minlength=3).tolist()
        labelled = self.quadrants[self.quadrants >= 0]
        quadrant_counts = torch.bincount(labelled, minlength=4).tolist()
        n_labelled = max(int(labelled.numel()), 1)
        ppl = torch.exp(self.log_ppl.double())
        ok = ~torch.isnan(ppl)
        # An edge cut (τ* = ±inf: every queued response on one side) is logged as NaN plus its side, so that
        # JSON/tensorboard/wandb never receive an infinity.
        finite = math.isfinite(self.threshold)
        metrics = {
            "threshold_log_ppl": self.threshold if finite else math.nan,
            "threshold_ppl": math.exp(self.threshold) if finite else math.nan,
            "threshold_at_edge": 0.0 if finite or math.isnan(self.threshold) else math.copysign(1.0, self.threshold),
            "threshold_error": self.threshold_error,
            "judgment_passed": float(self.judgment.passed),
            "applied": float(self.applied),
            "delta_eis": self.judgment.delta_eis,
            "delta_ers": self.judgment.delta_ers,
            "frac_normal": counts[GroupType.NORMAL] / num_groups,
            "frac_hard": counts[GroupType.HARD] / num_groups,
            "frac_easy": counts[GroupType.EASY] / num_groups,
            "realloc_hard": float(self.realloc_hard.sum()),
            "realloc_easy": float(self.realloc_easy.sum()),
            "frac_realloc_groups": float((self.realloc_hard | self.realloc_easy).sum()) / num_groups,
            "mean_ppl_correct": _nanmean(ppl[ok & self.correct]),
            "mean_ppl_wrong": _nanmean(ppl[ok & ~self.correct]),
            "queue_size": float(self.queue_size),
        }
        for q in (Quadrant.CL, Quadrant.CH, Quadrant.EL, Quadrant.EH):
            metrics[f"frac_{q.name}"] = quadrant_counts[q] / n_labelled
        return metrics


def _nanmean(x: Tensor) -> float:
    return float(x.mean()) if x.numel() else math.nan


class DiPO:
    """Stateful DiPO advantage computation: PPL queue + PSD + BRR + folded objective.

    Frameworks call :meth:`step` once per training batch with the *global* batch (gathered over processes), so every
    process takes the same decisions, then keep their local slice of ``advantages`` (or add ``advantage_delta`` to
    their own base advantages).
    """

    def __init__(self, config: DiPOCoreConfig | None = None) -> None:
        self.config = config or DiPOCoreConfig()
        self.queue = PPLQueue(self.config.queue_batches)
        # Draws of the selection="random" control: a CPU generator, identical on every process, saved with the state.
        self.generator = torch.Generator().manual_seed(self.config.selection_seed)

    def step(
        self,
        rewards: Tensor,
        log_ppl: Tensor,
        group_size: int,
        valid: Tensor | None = None,
        token_counts: Tensor | None = None,
    ) -> DiPOStepOutput:
        """Run DiPO on one batch of ``N = B × G`` responses (groups are ``G`` contiguous rows).

        Args:
            rewards: ``[N]`` verifier rewards R (binary 0/1 or graded, see the config); float, int or bool. Computed
                in float64; ``advantages``, ``base_advantages``, ``advantage_delta`` and ``realloc_rewards`` come
                back in the rewards' floating dtype (int / bool: the default dtype). ``correct_threshold`` is
                compared as the rewards' own dtype would (a float32 reward 0.7 is correct at threshold 0.7).
            log_ppl: ``[N]`` per-response log-PPL from :func:`dipo.core.sequence_log_ppl` (NaN: no valid token);
                compared in float64 (``DiPOStepOutput.log_ppl`` and the queue hold float64).
            group_size: G >= 2.
            valid: optional ``[N]`` bool; False rows (e.g. no reward function applied) are excluded everywhere.
            token_counts: optional ``[N]`` loss-token counts, used by ``realloc_normalizer="separate"``.

        Every tensor must be on one device (else a ValueError naming the devices).
        """
        cfg = self.config
        check_1d("rewards", rewards)
        check_1d("log_ppl", log_ppl)
        check_same_shape("rewards", rewards, "log_ppl", log_ppl)
        check_same_device(rewards=rewards, log_ppl=log_ppl, valid=valid, token_counts=token_counts)
        check_group_size(rewards.numel(), group_size)
        check_log_ppl(log_ppl)
        reward_dtype, out_dtype = rewards.dtype, output_dtype(rewards)
        # Rewards and advantages in float64 whatever the input dtype (float, int or bool): no overflow of float16
        # rewards in the group std, no loss of float64 rewards beyond float32's range; results in out_dtype.
        rewards = float_rewards(rewards)
        correct_threshold = threshold_as(cfg.correct_threshold, reward_dtype)
        # Every log-PPL comparison (queue, τ*, judgment, spaces, quadrants) runs in float64: τ* is a float64 midpoint,
        # and in float32 it could round onto one of the two values around the cut, which then lies in neither space.
        log_ppl = log_ppl.double()
        valid = valid_mask(rewards.numel(), valid, rewards.device)
        check_finite_rewards(rewards, valid)
        if cfg.reward_mode == "binary":
            check_binary_rewards(rewards, valid)
        if token_counts is not None:
            check_same_shape("token_counts", token_counts, "rewards", rewards)
        log_ppl = torch.where(valid, log_ppl, torch.full_like(log_ppl, math.nan))

        # §2 correctness, §4 queue (current batch included).
        correct = correctness(rewards, valid, correct_threshold)
        self.queue._push_unchecked(log_ppl, correct)  # validated above
        queue_s, queue_c = self.queue.values()

        # §5 PSD: threshold and advantage judgment.
        tau, judgment, applied = self._psd(queue_s, queue_c)
        tau_error = threshold_error(queue_s, queue_c, tau) if queue_s.numel() > 0 else math.nan

        # §6 BRR (only when PPL is trusted) — otherwise DiPO is the base method for this step.
        realloc = _reallocate_unchecked(  # inputs and config validated above
            rewards,
            log_ppl,
            group_size,
            tau if applied else math.nan,
            **self._brr_options(correct_threshold),
            valid=valid,
            selection=cfg.selection,
            generator=self.generator,
        )

        # §7 advantages of R and R_r, folded as A + α·scale·A^r.
        # Rewards and R_r are float64 here (converted once above) and the options validated with the config.
        norm = (cfg.scale_rewards, cfg.std, cfg.std_eps, valid)
        base = _group_advantages_unchecked(rewards, group_size, *norm)
        if bool(realloc.mask.any()) and cfg.alpha > 0:
            realloc_adv = _group_advantages_unchecked(realloc.rewards, group_size, *norm) * realloc.mask
            scale = realloc_scale(realloc.mask, cfg.realloc_normalizer, token_counts, valid)
        else:
            realloc_adv, scale = torch.zeros_like(base), 1.0
        advantages = fold_advantages(base, realloc_adv, cfg.alpha, scale)
        # A^r is non-zero only in reallocated groups, where A is 0 (binary rewards: exactly), so this is α·scale·A^r.
        delta = advantages - base

        return DiPOStepOutput(
            advantages=cast_result(advantages, out_dtype, "advantages"),
            base_advantages=cast_result(base, out_dtype, "base advantages"),
            advantage_delta=cast_result(delta, out_dtype, "advantage deltas"),
            realloc_rewards=cast_result(realloc.rewards, out_dtype, "reallocated rewards"),
            realloc_mask=realloc.mask,
            group_types=realloc.group_types,
            selected=realloc.selected,
            realloc_hard=realloc.hard,
            realloc_easy=realloc.easy,
            quadrants=quadrant_labels(log_ppl, correct, tau, valid),
            correct=correct,
            log_ppl=log_ppl,
            threshold=tau,
            threshold_error=tau_error,
            judgment=judgment,
            applied=applied,
            queue_size=int(queue_s.numel()),
        )

    def current_threshold(self) -> float:
        """τ* of the PPL queue as it stands if BRR would act on it (judgment passed or off), else NaN; read-only.

        Spec §5: the rule of :meth:`step` (same ``threshold_rule`` and judgment) without pushing a batch — for a
        dynamic-sampling filter that decides which groups to keep before the step (with :meth:`predict_reallocation`).
        """
        log_ppl, correct = self.queue.values()
        tau, _, applied = self._psd(log_ppl, correct)
        return tau if applied else math.nan

    def predict_reallocation(
        self, rewards: Tensor, log_ppl: Tensor, group_size: int, threshold: float, valid: Tensor | None = None
    ) -> Tensor:
        """``[B]`` bool: the groups BRR reallocates at ``threshold`` (spec §6) with this run's BRR options, read-only
        (what :meth:`step` reallocates when its τ* is ``threshold`` and BRR acts; NaN: none).

        ``selection="random"`` moves a random response's reward but reallocates the same groups, so the decision is
        taken with the maximum-PPL rule and draws nothing from :attr:`generator`.
        """
        out = reallocate(
            rewards,
            log_ppl,
            group_size,
            threshold,
            **self._brr_options(self.config.correct_threshold),
            valid=valid,
            selection="max_ppl",
        )
        return out.hard | out.easy

    def _psd(self, log_ppl: Tensor, correct: Tensor) -> tuple[float, Judgment, bool]:
        """Spec §5 on the queue's values: τ*, the advantage judgment and whether BRR acts (judgment passed or off,
        and τ* defined)."""
        cfg = self.config
        if log_ppl.numel() == 0:
            return math.nan, Judgment.failed_empty(), False
        tau = _find_threshold_unchecked(log_ppl, correct, cfg.threshold_rule)  # queue: validated on push
        judgment = judge(log_ppl, correct, tau, cfg.judgment_confidence)
        return tau, judgment, (judgment.passed or not cfg.judgment) and not math.isnan(tau)

    def _brr_options(self, correct_threshold: float) -> dict[str, Any]:
        """The config's BRR options (spec §6) as :func:`~dipo.core.reallocate`'s keyword arguments — the one place
        they are mapped (``correct_threshold`` as the caller compares it, see :meth:`step`)."""
        cfg = self.config
        return {
            "membership": cfg.membership,
            "reward_mode": cfg.reward_mode,
            "correct_threshold": correct_threshold,
            "graded_delta": cfg.graded_delta,
            "reallocate_hard": cfg.reallocate_hard,
            "reallocate_easy": cfg.reallocate_easy,
            "zero_variance_tol": cfg.zero_variance_tol,
        }

    def state_dict(self) -> dict[str, Any]:
        """Algorithm state to save with checkpoints (the PPL queue) and the config it was built with."""
        return {
            "queue": self.queue.state_dict(),
            "config": self.config.to_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned. Atomic: every part (queue, generator) is validated first, and on
        any invalid part a ValueError is raised with this object unchanged."""
        if not isinstance(state, dict) or "queue" not in state:
            raise ValueError("DiPO state is missing 'queue'; pass what DiPO.state_dict() returned.")
        batches = self.queue.checked_batches(state["queue"])
        generator = None
        if "generator" in state:  # absent in states saved before the selection option existed
            generator = _checked_generator_state(state["generator"])
        self.queue._replace(batches)
        if generator is not None:
            self.generator.set_state(generator)


def _checked_generator_state(value: Any) -> Tensor:
    """A saved CPU generator state, checked by loading it into a scratch generator (ValueError if it is not one)."""
    try:
        torch.Generator().set_state(value)
    except (TypeError, RuntimeError, ValueError) as err:
        raise ValueError(
            f"DiPO state: 'generator' is not a CPU torch.Generator state (from DiPO.state_dict()); the state is "
            f"corrupt ({err})."
        ) from err
    return value


def __getattr__(name: str) -> Any:
    """``dipo.core.dipo.classify_groups`` (listed in ``__all__`` by mistake): deprecated, use ``dipo.core``'s."""
    if name == "classify_groups":
        warnings.warn(
            "dipo.core.dipo.classify_groups is deprecated; import classify_groups from dipo.core.",
            DeprecationWarning,
            stacklevel=2,
        )
        from dipo.core.groups import classify_groups

        return classify_groups
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["DiPO", "DiPOStepOutput"]
