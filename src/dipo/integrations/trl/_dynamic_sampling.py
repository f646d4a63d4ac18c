"""Tensor plumbing of dynamic sampling in ``DiPOTrainer`` (``docs/trl.md`` "Dynamic sampling").

The rules (which groups to keep, which fill the batch) are :func:`dipo.core.groups_to_keep` and
:func:`dipo.integrations._kit.dynamic_sampling.select_groups`; this module only (1) draws the prompts of a refill
round, (2) pads and concatenates TRL's per-row batch tensors of several generation rounds and (3) picks the rows of
the chosen groups. Every function is deterministic and identical on every process.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import torch
from torch import Tensor
from trl.trainer.utils import RepeatSampler

from dipo.integrations._kit.dynamic_sampling import Selection, select_groups

#: TRL's per-row batch tensors that dynamic sampling can re-assemble: key -> (padding side, padding value); ``None``
#: as value means the tokenizer's pad token id. Any other per-row key (images, ...) is refused.
ROW_KEYS: dict[str, tuple[str, float | None]] = {
    "prompt_ids": ("left", None),
    "prompt_mask": ("left", 0),
    "completion_ids": ("right", None),
    "completion_mask": ("right", 0),
    "advantages": ("right", 0),
    "old_per_token_logps": ("right", 0.0),
    "sampling_per_token_logps": ("right", 0.0),
    "ref_per_token_logps": ("right", 0.0),
    "importance_sampling_ratio": ("right", 0.0),
    "tool_mask": ("right", 1),
}
#: Keys recomputed after the filter (the loss normaliser of the final batch).
RECOMPUTED_KEYS = ("num_items_in_batch",)


def check_batch_keys(output: dict[str, Any]) -> None:
    """Refuse batches dynamic sampling cannot re-assemble row by row (multimodal inputs)."""
    unknown = sorted(set(output) - set(ROW_KEYS) - set(RECOMPUTED_KEYS))
    if unknown:
        raise ValueError(
            f"DiPOTrainer: dynamic_sampling=True re-assembles the batch row by row, but TRL's batch holds {unknown} "
            "(multimodal inputs), which are not stored per completion. Set dynamic_sampling=False for this model."
        )


def refill_rows(dataset_size: int, num_prompts: int, group_size: int, key: tuple[int, ...]) -> list[int]:
    """Dataset indices of one refill round (global, ``num_prompts × group_size`` rows, groups contiguous).

    TRL's own :class:`RepeatSampler` (shuffled, each prompt repeated ``group_size`` times) seeded by ``key`` (the run
    seed, optimizer step, micro-step and round): the draw depends on nothing else, so a resumed run draws the same
    prompts without saved state, and the global torch RNG is never touched.
    """
    seed = int(np.random.SeedSequence(list(key)).generate_state(1)[0])
    sampler = RepeatSampler(
        range(dataset_size), mini_repeat_count=group_size, batch_size=num_prompts, repeat_count=1, seed=seed
    )
    return list(itertools.islice(iter(sampler), num_prompts * group_size))


def pad_to(tensor: Tensor, width: int, side: str, value: float) -> Tensor:
    """``tensor`` (``[N, L]`` or ``[N]``) padded along dim 1 to ``width``."""
    if tensor.dim() < 2 or tensor.size(1) >= width:
        return tensor
    pad = tensor.new_full((tensor.size(0), width - tensor.size(1), *tensor.shape[2:]), value)
    return torch.cat([pad, tensor] if side == "left" else [tensor, pad], dim=1)


def assemble(
    rounds: list[dict[str, Tensor]], selection: Selection, group_size: int, rows_per_round: int, pad_token_id: int
) -> dict[str, Tensor]:
    """The global batch of the selected groups from the global tensors of every round (same keys in every round).

    Filler rows (cap reached) get ``completion_mask = 0`` and advantage 0: they are in the batch only because TRL's
    shapes are fixed and carry no loss tokens."""
    pairs = selection.kept + selection.fillers
    rows = torch.tensor([r * rows_per_round + g * group_size + j for r, g in pairs for j in range(group_size)])
    batch: dict[str, Tensor] = {}
    for key in rounds[0]:
        side, value = ROW_KEYS[key]
        value = pad_token_id if value is None else value
        parts = [r[key] for r in rounds]
        width = max(p.size(1) if p.dim() > 1 else 0 for p in parts)
        stacked = torch.cat([pad_to(p, width, side, value) for p in parts], dim=0)
        batch[key] = stacked.index_select(0, rows.to(stacked.device))
    if selection.fillers:
        filler = torch.arange(rows.numel()) >= len(selection.kept) * group_size
        for key in ("completion_mask", "advantages"):
            mask = filler.to(batch[key].device).view(-1, *([1] * (batch[key].dim() - 1)))
            batch[key] = batch[key].masked_fill(mask, 0)
    return batch


__all__ = ["ROW_KEYS", "Selection", "assemble", "check_batch_keys", "refill_rows", "select_groups"]
