"""Per-response log-perplexity (spec §3)."""

from __future__ import annotations

import torch
from torch import Tensor

from dipo.core._checks import check_same_device


def sequence_log_ppl(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Spec §3: ``s_i = -(Σ_t m_it ℓ_it) / (Σ_t m_it)``, the mean token negative log-likelihood (log-PPL).

    Args:
        token_logps: ``[N, T]`` log-probs of the response tokens under the sampling policy.
        mask: ``[N, T]`` 1 for tokens that count (response tokens, not prompt/tool-output/padding), else 0.

    Returns:
        ``[N]`` float tensor; ``NaN`` for rows without any valid token (they never enter the queue and are never
        selected by BRR). ``PPL_i = exp(s_i)``.

    Raises:
        ValueError: shapes differ, the tensors are on different devices, or a counted token (mask > 0) has a NaN
            log-prob — its row would otherwise get a NaN log-PPL, i.e. be silently treated as "no valid token".
    """
    if token_logps.shape != mask.shape or token_logps.dim() != 2:
        raise ValueError(
            f"token_logps {tuple(token_logps.shape)} and mask {tuple(mask.shape)} must both be [N, T] with the "
            "same shape (one row per response, one column per completion token)."
        )
    check_same_device(token_logps=token_logps, mask=mask)
    m = mask.to(token_logps.dtype)
    _refuse_nan_counted(token_logps, m)
    # Masked positions may hold -inf/NaN padding values: zero them before the sum.
    nll = -torch.where(m > 0, token_logps, torch.zeros_like(token_logps)).mul(m).sum(dim=1)
    count = m.sum(dim=1)
    out = nll / count.clamp(min=1)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))


def _refuse_nan_counted(token_logps: Tensor, m: Tensor) -> None:
    """A NaN log-prob at a counted token is a broken forward pass (or a bad mask), not "no token": refuse it."""
    bad = torch.isnan(token_logps) & (m > 0)
    if bool(bad.any()):
        rows = bad.any(dim=1).nonzero().flatten()
        row, col = int(rows[0]), int(bad[int(rows[0])].nonzero()[0])
        raise ValueError(
            f"token_logps[{row}, {col}] is NaN at a counted token (mask > 0) ({int(rows.numel())} row(s) affected); "
            "a NaN log-prob would make the row's log-PPL NaN, silently read as 'no valid token'. Fix the log-prob "
            "computation (e.g. a NaN logit) or set mask = 0 at tokens that must not count."
        )
