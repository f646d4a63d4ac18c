"""From a framework's row order to the core's contiguous groups (spec §2: B prompts × G responses) and back.

Frameworks may reorder rows (verl's ``_balance_batch``) and pad the batch with rows that have no response token.
:func:`group_rows` lays the active rows out group by group; ``advantages[layout.order] = per_row_in_layout`` maps
the core's results back (inactive rows get nothing: advantage 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class GroupLayout:
    """Map from the framework's rows to the core's contiguous groups.

    ``order[k]`` is the framework row placed at position ``k`` of the contiguous layout (groups in order of first
    appearance, rows of a group in their framework order). Rows of *inactive* groups — groups none of whose rows has
    a response token, such as the synthetic padding rows verl appends — are left out.
    """

    order: Tensor
    group_size: int
    num_groups: int
    num_inactive_rows: int = 0


def group_rows(group_ids: Sequence[Any], has_tokens: Tensor, how_to_fix: str = "") -> GroupLayout:
    """Lay out rows by group id (any hashable per row); every active group must have the same size G >= 2.

    Args:
        group_ids: ``[N]`` the prompt (group) id of every row.
        has_tokens: ``[N]`` bool, whether the row has a response token (a group is active if any row has one).
        how_to_fix: appended to the error for unequal or too small groups (how the framework sets G).
    """
    codes: dict[Any, int] = {}
    row_codes = torch.tensor([codes.setdefault(uid, len(codes)) for uid in group_ids], dtype=torch.long)
    num_uids = len(codes)
    has_tokens = has_tokens.cpu().bool()
    active_uid = torch.zeros(num_uids, dtype=torch.bool).index_put_((row_codes,), has_tokens, accumulate=True)
    active_rows = active_uid[row_codes]
    counts = torch.bincount(row_codes[active_rows], minlength=num_uids)[active_uid]
    if counts.numel() == 0:
        raise ValueError("the batch has no response tokens at all (response_mask is all 0); nothing to train on.")
    group_size = int(counts[0])
    if bool((counts != group_size).any()) or group_size < 2:
        active_uids = [u for u, a in zip(codes, active_uid.tolist(), strict=True) if a]
        sizes = dict(zip(active_uids, counts.tolist(), strict=True))
        shown = ", ".join(f"{u!r}: {n}" for u, n in list(sizes.items())[:6])
        raise ValueError(
            f"DiPO needs every prompt to have the same number G >= 2 of responses{how_to_fix}, got rows per prompt "
            f"{{{shown}{', ...' if len(sizes) > 6 else ''}}}."
        )
    active_idx = torch.nonzero(active_rows).squeeze(1)
    order = active_idx[torch.argsort(row_codes[active_idx], stable=True)]
    return GroupLayout(order, group_size, int(active_uid.sum()), int((~active_rows).sum()))
