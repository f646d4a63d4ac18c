"""Summary statistics and markdown tables over seeds (generic: works on any per-run scalar)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95 % Student-t quantiles by degrees of freedom (1..30); larger df use 1.96.
# fmt: off
_T95 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]
# fmt: on


def t95(df: int) -> float:
    """Two-sided 95 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return math.nan
    return _T95[df - 1] if df <= len(_T95) else 1.96


@dataclass(frozen=True)
class Spread:
    """Mean, sample standard deviation and 95 % confidence half-width of the mean over ``n`` seeds."""

    mean: float
    std: float
    ci95: float
    n: int

    def fmt(self, scale: float = 100.0, digits: int = 1) -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return f"{self.mean * scale:.{digits}f}"
        return f"{self.mean * scale:.{digits}f} ± {self.std * scale:.{digits}f}"


def spread(values: Sequence[float]) -> Spread:
    """:class:`Spread` of the finite ``values``."""
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return Spread(math.nan, math.nan, math.nan, 0)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return Spread(
        float(arr.mean()),
        std,
        t95(arr.size - 1) * std / math.sqrt(arr.size) if arr.size > 1 else math.nan,
        int(arr.size),
    )


def paired_difference(a: Mapping[int, float], b: Mapping[int, float]) -> Spread:
    """Spread of ``a[seed] - b[seed]`` over the seeds both have (a paired comparison removes shared noise)."""
    seeds = sorted(set(a) & set(b))
    return spread([a[s] - b[s] for s in seeds])


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
