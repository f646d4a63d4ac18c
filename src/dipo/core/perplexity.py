"""Per-response log-perplexity (spec §3)."""

from __future__ import annotations

import torch
from torch import Tensor


def sequence_log_ppl(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Spec §3: ``s_i = -(Σ_t m_it ℓ_it) / (Σ_t m_it)``, the mean token negative log-likelihood (log-PPL).

    Args:
        token_logps: ``[N, T]`` log-probs of the response tokens under the sampling policy.
        mask: ``[N, T]`` 1 for tokens that count (response tokens, not prompt/tool-output/padding), else 0.

    Returns:
        ``[N]`` float tensor; ``NaN`` for rows without any valid token (they never enter the queue and are never
        selected by BRR). ``PPL_i = exp(s_i)``.
    """
    if token_logps.shape != mask.shape or token_logps.dim() != 2:
        raise ValueError(
            f"token_logps {tuple(token_logps.shape)} and mask {tuple(mask.shape)} must both be [N, T] with the "
            "same shape (one row per response, one column per completion token)."
        )
    m = mask.to(token_logps.dtype)
    # Masked positions may hold -inf/NaN padding values: zero them before the sum.
    nll = -torch.where(m > 0, token_logps, torch.zeros_like(token_logps)).mul(m).sum(dim=1)
    count = m.sum(dim=1)
    out = nll / count.clamp(min=1)
    return torch.where(count > 0, out, torch.full_like(out, float("nan")))
