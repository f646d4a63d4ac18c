"""Sampling metrics: mean@k, maj@k and the unbiased pass@k estimator.

For a problem with n samples of which c are correct:

* mean@k (the paper's "ACC/mean@8", spec §9): c / n with n = k samples — the expected single-sample accuracy.
* pass@k: probability that at least one of k samples drawn without replacement from the n is correct,
  1 − C(n−c, k) / C(n, k) (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", Eq. 1).
* maj@k: correctness of the most frequent final answer among the samples (majority vote; samples without an
  answer do not vote; ties go to the answer seen first).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate for one problem with ``n`` samples, ``c`` of them correct (Chen et al. 2021)."""
    if not (0 <= c <= n) or n < 1:
        raise ValueError(f"need 0 <= c <= n and n >= 1, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    # 1 - prod_{i=n-c+1}^{n} (1 - k/i): numerically stable form of 1 - C(n-c, k)/C(n, k)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_at_k(correct: Sequence[bool]) -> float:
    """Fraction of correct samples of one problem."""
    if not correct:
        raise ValueError("mean@k of a problem with no samples")
    return sum(bool(c) for c in correct) / len(correct)


def majority_vote(answers: Sequence[Hashable | None]) -> int | None:
    """Index of the first sample carrying the most frequent non-None answer, or None if no sample has one."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(i for i, a in enumerate(answers) if a is not None and counts[a] == top)


def maj_at_k(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
    """1.0 if the majority answer is correct, else 0.0 (0.0 when no sample produced an answer)."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    winner = majority_vote(answers)
    return float(bool(correct[winner])) if winner is not None else 0.0


def aggregate(
    per_problem: Sequence[Sequence[bool]],
    answers: Sequence[Sequence[Hashable | None]] | None = None,
    ks: Sequence[int] = (1,),
) -> dict[str, float]:
    """Benchmark-level metrics in percent: ``mean@n``, ``pass@k`` for each k in ``ks`` (k <= n) and ``maj@n`` when
    ``answers`` are given. Every problem must have the same number of samples n."""
    if not per_problem:
        raise ValueError("no problems to aggregate")
    n = len(per_problem[0])
    if any(len(p) != n for p in per_problem):
        raise ValueError("every problem needs the same number of samples")
    out = {f"mean@{n}": 100.0 * sum(mean_at_k(p) for p in per_problem) / len(per_problem)}
    for k in sorted(set(ks) | {n}):
        if k <= n:
            out[f"pass@{k}"] = 100.0 * sum(pass_at_k(n, sum(map(bool, p)), k) for p in per_problem) / len(per_problem)
    if answers is not None:
        maj = [maj_at_k(a, c) for a, c in zip(answers, per_problem, strict=True)]
        out[f"maj@{n}"] = 100.0 * sum(maj) / len(maj)
    return out


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels`` (Mann-Whitney form, ties count one half).

    The probability that a random positive scores higher than a random negative:
    ``(#{(p, n): s_p > s_n} + ½ #{(p, n): s_p = s_n}) / (#pos · #neg)``, computed from midranks in O(n log n).
    NaN scores must be removed by the caller. Returns NaN if either class is empty (AUROC is undefined then).
    For "low perplexity ⇒ correct", pass ``scores = -log_ppl`` and ``labels = correct``.
    """
    if len(scores) != len(labels):
        raise ValueError(f"auroc: {len(scores)} scores but {len(labels)} labels")
    if any(math.isnan(float(s)) for s in scores):
        raise ValueError("auroc: NaN score; drop the rows without a score first")
    n_pos = sum(bool(y) for y in labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = sorted(range(len(scores)), key=lambda i: float(scores[i]))
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and float(scores[order[j + 1]]) == float(scores[order[i]]):
            j += 1
        midrank = (i + j) / 2 + 1  # ranks are 1-based; tied values share their mean rank
        for t in range(i, j + 1):
            ranks[order[t]] = midrank
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels, strict=True) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
