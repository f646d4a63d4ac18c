"""The PPL queue (spec §4): (log-PPL, correct) pairs of the most recent batches."""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from dipo.core._checks import check_1d, check_same_device, check_same_shape


class PPLQueue:
    """Spec §4: a FIFO of the last ``max_batches`` batches of valid ``(s_i, c_i)`` pairs (current batch included).

    The queue is algorithm state: save it with checkpoints (:meth:`state_dict`) and build it from values gathered
    over all processes so that every rank holds the same queue.
    """

    def __init__(self, max_batches: int = 2) -> None:
        if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
            raise ValueError(f"max_batches (queue_batches) must be an int >= 1, got {max_batches!r}.")
        self.max_batches = max_batches
        self._batches: deque[tuple[Tensor, Tensor]] = deque(maxlen=max_batches)

    def push(self, log_ppl: Tensor, correct: Tensor) -> bool:
        """Append one batch; rows whose log-PPL is NaN (no valid token) are dropped. The oldest batch falls out.

        A batch left without any pair (no rows, or every log-PPL NaN) is *skipped*, not queued: it says nothing about
        PPL and correctness, and queuing it would evict a real batch from the two-batch queue (spec §4), leaving τ*
        to one batch, or none. Refusing it instead would stop a training run on a step where, say, every reward
        function returned None. Returns whether the batch was queued.
        """
        check_1d("log_ppl", log_ppl)
        check_1d("correct", correct)
        check_same_shape("log_ppl", log_ppl, "correct", correct)
        check_same_device(log_ppl=log_ppl, correct=correct)
        return self._push_unchecked(log_ppl, correct)

    def _push_unchecked(self, log_ppl: Tensor, correct: Tensor) -> bool:
        """:meth:`push` on 1-D tensors of equal shape already validated by the caller (``DiPO.step``)."""
        keep = ~torch.isnan(log_ppl)
        if not bool(keep.any()):
            return False
        self._batches.append((log_ppl[keep].detach(), correct[keep].detach().bool()))
        return True

    def values(self) -> tuple[Tensor, Tensor]:
        """All pairs in the queue, oldest batch first: ``(log_ppl [M], correct [M] bool)``."""
        if not self._batches:
            return torch.empty(0), torch.empty(0, dtype=torch.bool)
        device = self._batches[-1][0].device
        s = torch.cat([b[0].to(device) for b in self._batches])
        c = torch.cat([b[1].to(device) for b in self._batches])
        return s, c

    def __len__(self) -> int:
        return sum(int(b[0].numel()) for b in self._batches)

    @property
    def num_batches(self) -> int:
        return len(self._batches)

    def clear(self) -> None:
        self._batches.clear()

    def state_dict(self) -> dict[str, Any]:
        return {
            "max_batches": self.max_batches,
            "log_ppl": [b[0].cpu() for b in self._batches],
            "correct": [b[1].cpu() for b in self._batches],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; every batch is validated (1-D, finite log-PPL, 0/1 labels).

        Atomic: on any invalid part the ValueError is raised before anything changes, so the queue keeps its contents.
        """
        self._replace(self.checked_batches(state))

    def _replace(self, batches: list[tuple[Tensor, Tensor]]) -> None:
        """Set the queue to ``batches`` (from :meth:`checked_batches`); internal to ``dipo.core``."""
        self._batches.clear()
        self._batches.extend(batches)

    def checked_batches(self, state: Any) -> list[tuple[Tensor, Tensor]]:
        """The batches of a saved queue ``state``, validated, without touching this queue (ValueError if invalid)."""
        if not isinstance(state, dict):
            raise ValueError(f"PPL queue state must be a dict (from state_dict()), got {type(state).__name__}.")
        missing = {"max_batches", "log_ppl", "correct"} - set(state)
        if missing:
            raise ValueError(f"PPL queue state is missing keys {sorted(missing)}; pass what state_dict() returned.")
        log_ppl, correct, saved_max = state["log_ppl"], state["correct"], state["max_batches"]
        if not isinstance(log_ppl, (list, tuple)) or not isinstance(correct, (list, tuple)):
            raise ValueError(
                "PPL queue state is corrupt: log_ppl and correct must be lists of per-batch tensors, got "
                f"{type(log_ppl).__name__} and {type(correct).__name__}."
            )
        if len(log_ppl) != len(correct):
            raise ValueError("PPL queue state is corrupt: log_ppl and correct hold different numbers of batches.")
        if isinstance(saved_max, bool) or not isinstance(saved_max, int):
            raise ValueError(f"PPL queue state is corrupt: max_batches must be an int, got {saved_max!r}.")
        if saved_max != self.max_batches:
            raise ValueError(
                f"PPL queue state was saved with queue_batches={saved_max} but this run uses "
                f"queue_batches={self.max_batches}; resume with the same setting."
            )
        if len(log_ppl) > self.max_batches:
            raise ValueError(
                f"PPL queue state holds {len(log_ppl)} batches, more than queue_batches={self.max_batches}; "
                "the state is corrupt or from another run."
            )
        return [_checked_batch(i, s, c) for i, (s, c) in enumerate(zip(log_ppl, correct, strict=True))]


def _checked_batch(index: int, log_ppl: Any, correct: Any) -> tuple[Tensor, Tensor]:
    """One saved batch of the queue, validated: 1-D float log-PPL, all finite (NaN rows are never queued), and 1-D
    bool/0-1 correctness of the same length."""
    where = f"PPL queue state, batch {index}"
    try:
        s, c = torch.as_tensor(log_ppl), torch.as_tensor(correct)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{where}: log_ppl and correct must be tensors of numbers; the state is corrupt ({err})."
        ) from err
    if s.dim() != 1 or c.dim() != 1:
        raise ValueError(
            f"{where}: log_ppl and correct must be 1-D (one value per response), got shapes {tuple(s.shape)} and "
            f"{tuple(c.shape)}; the state is corrupt or was not written by PPLQueue.state_dict()."
        )
    if s.shape != c.shape:
        raise ValueError(f"{where}: log_ppl has {s.numel()} values but correct has {c.numel()}; the state is corrupt.")
    if not torch.is_floating_point(s):
        raise ValueError(f"{where}: log_ppl must be a floating-point tensor, got dtype {s.dtype}.")
    if not bool(torch.isfinite(s).all()):
        bad = int((~torch.isfinite(s)).sum())
        raise ValueError(
            f"{where}: {bad} log_ppl value(s) are NaN or infinite; the queue only ever holds finite log-PPL values "
            "(responses without PPL are dropped when pushed), so the state is corrupt."
        )
    if c.dtype != torch.bool:
        if c.is_complex() or not bool(((c == 0) | (c == 1)).all()):
            raise ValueError(f"{where}: correct must hold bools (or 0/1), got values outside {{0, 1}}.")
        c = c.bool()
    return s, c
