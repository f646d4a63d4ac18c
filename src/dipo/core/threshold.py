"""PSD threshold τ* (spec §5): the log-PPL cut that best separates "correct ⇔ low perplexity"."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dipo.core._checks import check_1d, check_same_shape


def _cut_errors(s_sorted: Tensor, c_sorted: Tensor) -> tuple[Tensor, Tensor]:
    """Error count of every cut ``k = 0..M`` (first ``k`` sorted rows predicted "low") and which cuts are allowed.

    ``err[k] = #wrong among the first k + #correct among the rest``. A cut is allowed below all values (k=0), above all
    values (k=M), and between two consecutive *distinct* values.
    """
    m = s_sorted.numel()
    wrong_prefix = torch.zeros(m + 1, dtype=torch.long, device=s_sorted.device)
    correct_prefix = torch.zeros(m + 1, dtype=torch.long, device=s_sorted.device)
    wrong_prefix[1:] = torch.cumsum((~c_sorted).long(), 0)
    correct_prefix[1:] = torch.cumsum(c_sorted.long(), 0)
    errors = wrong_prefix + (correct_prefix[-1] - correct_prefix)
    allowed = torch.ones(m + 1, dtype=torch.bool, device=s_sorted.device)
    allowed[1:m] = s_sorted[:-1] < s_sorted[1:]
    return errors, allowed


def find_threshold(log_ppl: Tensor, correct: Tensor) -> float:
    """Spec §5, τ* = argmin_τ (1/|Q|) Σ_{(s,c)∈Q} |c − 𝟙(s < τ)|, exact in O(M log M).

    Candidate cuts lie between consecutive distinct values plus below-all and above-all. Among the minimisers the
    median one is taken (the lower median for an even count), so the result is deterministic. τ* is the midpoint of
    the two values around the cut; ``-inf`` for the below-all cut (every response in the exploration space) and
    ``+inf`` for the above-all cut. NaN log-PPL rows are ignored.

    Args:
        log_ppl: ``[M]`` log-perplexities (the queue).
        correct: ``[M]`` bool or 0/1 correctness.

    Returns:
        τ* on the log-PPL scale, a Python float.
    """
    check_1d("log_ppl", log_ppl)
    check_1d("correct", correct)
    check_same_shape("log_ppl", log_ppl, "correct", correct)
    keep = ~torch.isnan(log_ppl)
    s = log_ppl[keep].double()
    c = correct[keep].bool()
    if s.numel() == 0:
        raise ValueError("find_threshold needs at least one response with a valid (non-NaN) log-perplexity.")
    s_sorted, order = torch.sort(s, stable=True)
    c_sorted = c[order]
    errors, allowed = _cut_errors(s_sorted, c_sorted)
    big = torch.iinfo(torch.long).max
    errors = torch.where(allowed, errors, torch.full_like(errors, big))
    minimisers = torch.nonzero(errors == errors.min()).flatten()
    k = int(minimisers[(minimisers.numel() - 1) // 2])
    m = s_sorted.numel()
    if k == 0:
        return -math.inf
    if k == m:
        return math.inf
    return float((s_sorted[k - 1] + s_sorted[k]) / 2)


def threshold_error(log_ppl: Tensor, correct: Tensor, threshold: float) -> float:
    """The objective of spec §5 at ``threshold``: the fraction of valid pairs with ``c ≠ 𝟙(s < τ)``."""
    keep = ~torch.isnan(log_ppl)
    if not bool(keep.any()):
        return math.nan
    predicted_correct = log_ppl[keep].double() < threshold
    return float((predicted_correct != correct[keep].bool()).double().mean())
