"""PSD threshold τ* (spec §5): the log-PPL cut that best separates "correct ⇔ low perplexity"."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dipo.core._checks import check_1d, check_choice, check_same_device, check_same_shape

#: ``threshold_rule`` choices: "error" — the paper's τ* (spec §5), minimising the plain error; "balanced" — NOT the
#: paper's rule: τ* minimising the balanced error ½·(FN/P + FP/N), the mean of the two per-class error rates.
THRESHOLD_RULES = ("error", "balanced")


def _cut_costs(s_sorted: Tensor, c_sorted: Tensor, rule: str) -> tuple[Tensor, Tensor]:
    """Integer cost of every cut ``k = 0..M`` (first ``k`` sorted rows predicted "low" = correct) and which cuts are
    allowed.

    With ``FP[k]`` = #wrong among the first k and ``FN[k]`` = #correct among the rest: ``"error"`` costs
    ``FP + FN`` (M × the plain error); ``"balanced"`` costs ``FP·P + FN·N`` (2·P·N × the balanced error, exact in
    integers), with P correct and N wrong pairs; if one class is absent its error rate is taken as 0 and the balanced
    error is the plain one. A cut is allowed below all values (k=0), above all values (k=M), and between two
    consecutive *distinct* values.
    """
    m = s_sorted.numel()
    wrong_prefix = torch.zeros(m + 1, dtype=torch.long, device=s_sorted.device)
    correct_prefix = torch.zeros(m + 1, dtype=torch.long, device=s_sorted.device)
    wrong_prefix[1:] = torch.cumsum((~c_sorted).long(), 0)
    correct_prefix[1:] = torch.cumsum(c_sorted.long(), 0)
    false_pos, false_neg = wrong_prefix, correct_prefix[-1] - correct_prefix
    num_correct, num_wrong = int(correct_prefix[-1]), int(wrong_prefix[-1])
    if rule == "balanced" and num_correct > 0 and num_wrong > 0:
        costs = false_pos * num_correct + false_neg * num_wrong
    else:
        costs = false_pos + false_neg
    allowed = torch.ones(m + 1, dtype=torch.bool, device=s_sorted.device)
    allowed[1:m] = s_sorted[:-1] < s_sorted[1:]
    return costs, allowed


def find_threshold(log_ppl: Tensor, correct: Tensor, rule: str = "error") -> float:
    """Spec §5, τ* = argmin_τ (1/|Q|) Σ_{(s,c)∈Q} |c − 𝟙(s < τ)|, exact in O(M log M).

    Candidate cuts lie between consecutive distinct values plus below-all and above-all. Among the minimisers the
    median one is taken (the lower median for an even count), so the result is deterministic. τ* is the midpoint of
    the two values around the cut; ``-inf`` for the below-all cut (every response in the exploration space) and
    ``+inf`` for the above-all cut. NaN log-PPL rows are ignored.

    ``rule="balanced"`` (an option, NOT the paper's rule) minimises the balanced error ½·(FN/P + FP/N) of the same
    "correct ⇔ s < τ" prediction instead — the mean of the error rates on the P correct and the N wrong pairs —, with
    the same candidates, tie rule and midpoint. With few correct responses and weak separation the plain error is
    often minimised by the edge cut "everything wrong" (then the judgment fails); the balanced error weighs both
    classes equally and cuts inside. It cannot make the judgment pass there: when an edge cut minimises the plain
    error, no cut has a correct majority below it (and a wrong majority above it).

    Args:
        log_ppl: ``[M]`` log-perplexities (the queue).
        correct: ``[M]`` bool or 0/1 correctness.
        rule: "error" (default, the paper) or "balanced".

    Returns:
        τ* on the log-PPL scale, a Python float.
    """
    check_choice("threshold_rule", rule, THRESHOLD_RULES)
    check_1d("log_ppl", log_ppl)
    check_1d("correct", correct)
    check_same_shape("log_ppl", log_ppl, "correct", correct)
    check_same_device(log_ppl=log_ppl, correct=correct)
    return _find_threshold_unchecked(log_ppl, correct, rule)


def _find_threshold_unchecked(log_ppl: Tensor, correct: Tensor, rule: str) -> float:
    """:func:`find_threshold` on inputs already validated by the caller (``DiPO.step``: the queue's 1-D tensors of one
    shape and device, a known rule). Internal to ``dipo.core``."""
    keep = ~torch.isnan(log_ppl)
    s = log_ppl[keep].double()
    c = correct[keep].bool()
    if s.numel() == 0:
        raise ValueError("find_threshold needs at least one response with a valid (non-NaN) log-perplexity.")
    s_sorted, order = torch.sort(s, stable=True)
    c_sorted = c[order]
    costs, allowed = _cut_costs(s_sorted, c_sorted, rule)
    big = torch.iinfo(torch.long).max
    costs = torch.where(allowed, costs, torch.full_like(costs, big))
    minimisers = torch.nonzero(costs == costs.min()).flatten()
    k = int(minimisers[(minimisers.numel() - 1) // 2])
    m = s_sorted.numel()
    if k == 0:
        return -math.inf
    if k == m:
        return math.inf
    return float((s_sorted[k - 1] + s_sorted[k]) / 2)


def threshold_error(log_ppl: Tensor, correct: Tensor, threshold: float, rule: str = "error") -> float:
    """The objective at ``threshold``: the fraction of valid pairs with ``c ≠ 𝟙(s < τ)`` (spec §5, ``"error"``), or
    the balanced error ½·(FN/P + FP/N) (``"balanced"``; a class without pairs contributes 0 and the other counts
    fully, i.e. the plain error). NaN if no pair is valid."""
    check_choice("threshold_rule", rule, THRESHOLD_RULES)
    keep = ~torch.isnan(log_ppl)
    if not bool(keep.any()):
        return math.nan
    predicted_correct = log_ppl[keep].double() < threshold
    c = correct[keep].bool()
    wrong_prediction = predicted_correct != c
    if rule == "error" or bool(c.all()) or not bool(c.any()):
        return float(wrong_prediction.double().mean())
    return 0.5 * (float(wrong_prediction[c].double().mean()) + float(wrong_prediction[~c].double().mean()))
