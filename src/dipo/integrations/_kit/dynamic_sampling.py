"""DAPO's dynamic sampling, DiPO-aware (spec §7), as adapters decide it: which groups a filter keeps
(:func:`kept_groups`), which of them fill the batch when generation rounds run out (:func:`select_groups`), and — for a
filter that decides after the step — the PPL queue of the kept groups only (:func:`queue_kept_groups`). A filter that
decides before the step reads BRR's decision with :meth:`DiPO.current_threshold` and :meth:`DiPO.predict_reallocation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dipo.core import DiPO, DiPOCoreConfig, DiPOStepOutput, groups_to_keep


def kept_groups(
    rewards: Tensor,
    group_size: int,
    reallocated: Tensor | None = None,
    valid: Tensor | None = None,
    keep_reallocated: bool = True,
    zero_variance_tol: float = 1e-6,
) -> tuple[Tensor, Tensor]:
    """``([B] keep, [B] kept only because BRR reallocated them)`` (:func:`dipo.core.groups_to_keep`; ``reallocated``
    ``None``: plain DAPO, nothing kept by BRR)."""
    plain = groups_to_keep(rewards, group_size, valid=valid, zero_variance_tol=zero_variance_tol)
    if reallocated is None:
        return plain, torch.zeros_like(plain)
    keep = groups_to_keep(
        rewards,
        group_size,
        reallocated,
        valid=valid,
        keep_reallocated=keep_reallocated,
        zero_variance_tol=zero_variance_tol,
    )
    return keep, keep & ~plain


@dataclass
class Selection:
    """The groups of the final batch: ``(round, group)`` pairs, kept groups first, then fillers (no loss)."""

    kept: list[tuple[int, int]]
    fillers: list[tuple[int, int]]


def select_groups(keeps: list[Tensor], target: int) -> Selection:
    """The first ``target`` kept groups in generation order (surplus dropped, as verl does); if fewer were kept,
    fillers from the dropped groups (in generation order) complete the batch."""
    kept = [(r, int(g)) for r, keep in enumerate(keeps) for g in keep.nonzero().flatten()]
    dropped = [(r, int(g)) for r, keep in enumerate(keeps) for g in (~keep).nonzero().flatten()]
    kept = kept[:target]
    return Selection(kept=kept, fillers=dropped[: target - len(kept)])


def queue_kept_groups(
    core: DiPO,
    queue_state: Mapping[str, Any],
    outputs: Sequence[DiPOStepOutput],
    kept: Sequence[tuple[int, int]],
    group_size: int,
) -> None:
    """Replace the PPL queue's batches of this step's rounds by one batch holding only the kept groups' responses.

    Args:
        core: the run's DiPO, whose step ran once per generation round (``outputs[r]`` of round ``r``).
        queue_state: ``core.queue.state_dict()`` taken before the first round.
        kept: ``(round, group)`` of every group that entered the batch (:attr:`Selection.kept`).
    """
    log_ppl, correct = [], []
    for round_index, group in kept:
        rows = slice(group * group_size, (group + 1) * group_size)
        log_ppl.append(outputs[round_index].log_ppl[rows])
        correct.append(outputs[round_index].correct[rows])
    core.queue.load_state_dict(dict(queue_state))
    if log_ppl:
        core.queue.push(torch.cat(log_ppl), torch.cat(correct))


def reallocation_threshold(core: DiPO) -> float:
    """:meth:`DiPO.current_threshold` (this name kept for ``dipo.integrations.verl.dynamic_sampling``)."""
    return core.current_threshold()


def predicted_reallocation(
    config: DiPOCoreConfig, rewards: Tensor, log_ppl: Tensor, group_size: int, threshold: float
) -> Tensor:
    """:meth:`DiPO.predict_reallocation` of a run with ``config`` (this name kept for
    ``dipo.integrations.verl.dynamic_sampling``)."""
    return DiPO(config).predict_reallocation(rewards, log_ppl, group_size, threshold)
