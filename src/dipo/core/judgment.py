"""Advantage judgment (spec §5): trust perplexity only if it is informative at τ*."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch
from torch import Tensor


@dataclass(frozen=True)
class Judgment:
    """Outcome of the advantage judgment on the queue.

    ``delta_eis = Pr(c=1 | s<τ) − Pr(c=0 | s<τ)`` and ``delta_ers = Pr(c=0 | s>τ) − Pr(c=1 | s>τ)`` (point estimates);
    ``low_interval`` / ``high_interval`` are the confidence intervals of ``Pr(c=1 | s<τ)`` and ``Pr(c=1 | s>τ)``.
    """

    passed: bool
    delta_eis: float
    delta_ers: float
    n_low: int
    n_high: int
    low_interval: tuple[float, float]
    high_interval: tuple[float, float]

    @classmethod
    def failed_empty(cls) -> Judgment:
        nan = (math.nan, math.nan)
        return cls(False, math.nan, math.nan, 0, 0, nan, nan)


def wilson_interval(successes: int, n: int, confidence: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (used by the judgment, spec §5 [choice])."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}.")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, center - half), min(1.0, center + half))


def judge(log_ppl: Tensor, correct: Tensor, threshold: float, confidence: float | None = 0.95) -> Judgment:
    """Spec §5 advantage judgment: pass iff Δ_EiS > 0 and Δ_ErS > 0.

    With ``confidence`` (e.g. 0.95) the test is that the Wilson interval of ``Pr(c=1 | s<τ)`` lies above 1/2 and the
    one of ``Pr(c=1 | s>τ)`` lies below 1/2; with ``None`` the point estimates decide. An empty side fails.
    """
    keep = ~torch.isnan(log_ppl)
    s, c = log_ppl[keep].double(), correct[keep].bool()  # float64 like τ*
    if s.numel() == 0 or math.isnan(threshold):
        return Judgment.failed_empty()
    low, high = s < threshold, s > threshold
    n_low, n_high = int(low.sum()), int(high.sum())
    k_low, k_high = int((c & low).sum()), int((c & high).sum())
    p_low = k_low / n_low if n_low else math.nan
    p_high = k_high / n_high if n_high else math.nan
    delta_eis = 2 * p_low - 1 if n_low else math.nan
    delta_ers = 1 - 2 * p_high if n_high else math.nan
    if confidence is None:
        low_iv, high_iv = (p_low, p_low), (p_high, p_high)
    else:
        low_iv, high_iv = wilson_interval(k_low, n_low, confidence), wilson_interval(k_high, n_high, confidence)
    passed = n_low > 0 and n_high > 0 and low_iv[0] > 0.5 and high_iv[1] < 0.5
    return Judgment(bool(passed), delta_eis, delta_ers, n_low, n_high, low_iv, high_iv)
