"""DAPO's dynamic sampling, DiPO-aware (spec §7), as both adapters decide it: which groups a filter keeps, and — for a
filter that decides before the step, from the queue as it stands — which groups BRR would reallocate."""

from __future__ import annotations

import torch
from torch import Tensor

from dipo.core import DiPO, DiPOCoreConfig, groups_to_keep


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


def reallocation_threshold(core: DiPO) -> float:
    """:meth:`DiPO.current_threshold` (this name kept for ``dipo.integrations.verl.dynamic_sampling``)."""
    return core.current_threshold()


def predicted_reallocation(
    config: DiPOCoreConfig, rewards: Tensor, log_ppl: Tensor, group_size: int, threshold: float
) -> Tensor:
    """:meth:`DiPO.predict_reallocation` of a run with ``config`` (this name kept for
    ``dipo.integrations.verl.dynamic_sampling``)."""
    return DiPO(config).predict_reallocation(rewards, log_ppl, group_size, threshold)
