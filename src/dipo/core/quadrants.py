"""Quadrant labels (spec §5): correctness × perplexity space."""

from __future__ import annotations

import math
from enum import IntEnum

import torch
from torch import Tensor


class Quadrant(IntEnum):
    CL = 0  # correct, low PPL (exploitation space)
    CH = 1  # correct, high PPL -> needs exploitation
    EL = 2  # error, low PPL (over-confident) -> needs exploration
    EH = 3  # error, high PPL
    NONE = -1  # no valid PPL, invalid reward, or no threshold yet


def quadrant_labels(log_ppl: Tensor, correct: Tensor, threshold: float, valid: Tensor | None = None) -> Tensor:
    """Spec §5: label each response CL/CH/EL/EH relative to τ*; ``-1`` where undefined.

    A response exactly at τ* (impossible for queue members, τ* is a midpoint) counts as high.
    """
    ok = ~torch.isnan(log_ppl)
    if valid is not None:
        ok = ok & valid
    if math.isnan(threshold):
        return torch.full(log_ppl.shape, int(Quadrant.NONE), dtype=torch.long, device=log_ppl.device)
    high = (log_ppl.double() >= threshold).long()  # float64 like τ*
    wrong = (~correct.bool()).long()
    labels = 2 * wrong + high
    return torch.where(ok, labels, torch.full_like(labels, int(Quadrant.NONE)))
