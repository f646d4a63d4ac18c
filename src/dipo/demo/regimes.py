"""Regime testbeds for ``dipo demo``: a *teacher* that writes the SFT targets, so that the converged warm start holds
the quantities DiPO acts on (spec §5–§6), and named regimes built from it.

A warm start trained to convergence on a teacher's samples reproduces the teacher's distribution, so the teacher
fixes what the policy looks like at the start of RL, independently of the machine:

* **surface variation** the verifier ignores: ``k`` leading spaces with probabilities ``filler_probs`` (the verifier
  strips whitespace). It moves a response's perplexity independently of its correctness — the analogue of free
  phrasing in a chain of thought.
* **confident systematic errors** (*traps*): on ``trap_levels`` items whose units digits carry, the teacher writes
  ``a + b − 10`` (it drops the units carry) with probability ``trap_drop``, a random other tens digit with
  ``trap_noise``, and the right answer otherwise. The error is cheap (−log ``trap_drop`` on one token), so whole
  groups of wrong answers sit at low perplexity — the over-confident errors BRR's maximum-PPL reward targets; the
  right path stays reachable.
* **uncertain digits**: on ``noisy_levels`` every answer digit is replaced by another with probability
  ``digit_noise`` — high-perplexity answers, mostly wrong, that RL can sharpen.

:func:`teacher_logprob` gives the exact log-probability of any target under the teacher, so the converged policy can
be simulated without training (:func:`simulate_converged`).
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from dipo.tasks.arithmetic import ArithmeticItem, ArithmeticTask

# Imported inside functions: torch and dipo.core, only for the teacher-policy check (`dipo demo` imports this module
# to list the regimes).


@dataclass(frozen=True)
class Teacher:
    """How SFT targets are written (see the module docstring). The default writes every answer right and bare."""

    filler_probs: tuple[float, ...] = (1.0,)
    trap_levels: tuple[int, ...] = ()
    trap_drop: float = 0.0
    trap_noise: float = 0.0
    noisy_levels: tuple[int, ...] = ()
    digit_noise: float = 0.0
    noise_spread: int = 9

    def __post_init__(self) -> None:
        if not self.filler_probs or any(p < 0 for p in self.filler_probs) or abs(sum(self.filler_probs) - 1) > 1e-9:
            raise ValueError(f"Teacher.filler_probs={self.filler_probs!r}: non-negative probabilities summing to 1")
        for name in ("trap_drop", "trap_noise", "digit_noise"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"Teacher.{name}={getattr(self, name)!r}: must lie in [0, 1)")
        if not 1 <= self.noise_spread <= 9:
            raise ValueError(f"Teacher.noise_spread={self.noise_spread!r}: must be in 1..9")
        if self.trap_drop + self.trap_noise >= 1.0:
            raise ValueError("Teacher: trap_drop + trap_noise must be < 1 (the right answer must stay reachable)")

    def is_trap(self, item: ArithmeticItem) -> bool:
        """A trap item: addition at a trap level whose units digits carry (at least two answer digits)."""
        if item.op != "+" or item.level not in self.trap_levels or item.value < 10:
            return False
        a, b = (int(x) for x in item.prompt.rstrip("=").split("+"))
        return (a % 10) + (b % 10) >= 10

    def trap_answers(self, item: ArithmeticItem, task: ArithmeticTask) -> dict[str, float]:
        """The answer strings the teacher writes on a trap item, with their probabilities."""
        right = item.answer
        out: dict[str, float] = {right: 1.0 - self.trap_drop - self.trap_noise}
        dropped = task.format_answer(item.value - 10)
        out[dropped] = out.get(dropped, 0.0) + self.trap_drop
        others = [d for d in "0123456789" if d != right[1]]  # reversed answers: the tens digit is the 2nd character
        for d in others:
            alt = right[0] + d + right[2:]
            out[alt] = out.get(alt, 0.0) + self.trap_noise / len(others)
        return {s: p for s, p in out.items() if p > 0}

    def answer_prob(self, item: ArithmeticItem, task: ArithmeticTask, answer: str) -> float:
        """Probability that the teacher writes ``answer`` (without filler) for ``item``."""
        if self.is_trap(item):
            return self.trap_answers(item, task).get(answer, 0.0)
        if item.level in self.noisy_levels and self.digit_noise > 0:
            if len(answer) != len(item.answer):
                return 0.0
            p = 1.0
            for got, want in zip(answer, item.answer, strict=True):
                if got == want:
                    p *= 1.0 - self.digit_noise
                elif want.isdigit() and got in _nearest_digits(int(want), self.noise_spread):
                    p *= self.digit_noise / self.noise_spread
                else:
                    return 0.0
            return p
        return float(answer == item.answer)

    def sample(self, item: ArithmeticItem, task: ArithmeticTask, rng: random.Random) -> str:
        """One SFT target: ``k`` filler spaces + an answer drawn from the teacher's distribution."""
        k = rng.choices(range(len(self.filler_probs)), weights=self.filler_probs)[0]
        if self.is_trap(item):
            table = self.trap_answers(item, task)
            answer = rng.choices(list(table), weights=list(table.values()))[0]
        elif item.level in self.noisy_levels and self.digit_noise > 0:
            answer = "".join(
                rng.choice(_nearest_digits(int(ch), self.noise_spread))
                if ch.isdigit() and rng.random() < self.digit_noise
                else ch
                for ch in item.answer
            )
        else:
            answer = item.answer
        return " " * k + answer

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nearest_digits(d: int, spread: int) -> list[str]:
    """The ``spread`` digits nearest to ``d`` on the circle mod 10, in the order d+1, d−1, d+2, d−2, …, d+5."""
    order = [d + 1, d - 1, d + 2, d - 2, d + 3, d - 3, d + 4, d - 4, d + 5]
    return [str(x % 10) for x in order[:spread]]


def teacher_logprob(teacher: Teacher, item: ArithmeticItem, task: ArithmeticTask, target: str) -> tuple[float, int]:
    """Exact log-probability of ``target`` (filler + answer, eos implied) under the teacher, and its token count
    (characters + eos). ``-inf`` if the teacher never writes it."""
    answer = target.lstrip(" ")
    k = len(target) - len(answer)
    p_fill = teacher.filler_probs[k] if k < len(teacher.filler_probs) else 0.0
    p_ans = teacher.answer_prob(item, task, answer)
    logp = math.log(p_fill) + math.log(p_ans) if p_fill > 0 and p_ans > 0 else -math.inf
    return logp, len(target) + 1


@dataclass(frozen=True)
class Regime:
    """A named testbed: the task, the teacher that writes the warm start's SFT targets, and what it is for."""

    name: str
    task: ArithmeticTask
    teacher: Teacher | None  # None: the original demo's SFT (30 % leading-space answers, SFTConfig defaults)
    description: str
    sft_steps: int = 1800


REGIMES: dict[str, Regime] = {}


def register_regime(regime: Regime) -> Regime:
    if regime.name in REGIMES:
        raise ValueError(f"regime {regime.name!r} is registered already")
    REGIMES[regime.name] = regime
    return regime


def get_regime(name: str) -> Regime:
    """A regime by name; unknown names raise a ValueError listing the known ones."""
    if name not in REGIMES:
        raise ValueError(f"unknown regime {name!r}; known: {', '.join(REGIMES)}")
    return REGIMES[name]


def simulate_converged(
    regime: Regime,
    teacher: Teacher | None = None,
    steps: int = 60,
    prompts_per_step: int = 32,
    group_size: int = 8,
    seed: int = 0,
    **core_options: Any,
) -> dict[str, float]:
    """DiPO's decisions on a policy equal to the teacher (no training): BRR activity and PSD statistics.

    Samples ``steps`` batches of training prompts, ``group_size`` teacher answers each, computes their exact log-PPL
    (mean token NLL, :func:`teacher_logprob`) and correctness, and runs :class:`dipo.core.DiPO` on them.
    """
    import torch

    from dipo.core import DiPO, DiPOCoreConfig, GroupType

    teacher = teacher or regime.teacher
    if teacher is None:
        raise ValueError(f"regime {regime.name!r} has no teacher to simulate; pass teacher=Teacher(...)")
    task = regime.task
    dipo = DiPO(DiPOCoreConfig(**core_options))
    rng = random.Random(seed)
    totals: dict[str, float] = {}
    for step in range(steps):
        items = task.sample(prompts_per_step, seed=seed * 100_003 + step, split="train")
        rewards, log_ppl = [], []
        for it in items:
            for _ in range(group_size):
                target = teacher.sample(it, task, rng)
                logp, n = teacher_logprob(teacher, it, task, target)
                rewards.append(1.0 if target.strip() == it.answer else 0.0)
                log_ppl.append(-logp / n)
        out = dipo.step(torch.tensor(rewards), torch.tensor(log_ppl), group_size)
        for k, v in out.metrics().items():
            if not math.isnan(v):
                totals[k] = totals.get(k, 0.0) + v
        totals["n_hard"] = totals.get("n_hard", 0.0) + float((out.group_types == GroupType.HARD).sum())
        totals["n_easy"] = totals.get("n_easy", 0.0) + float((out.group_types == GroupType.EASY).sum())
    summary = {k: v / steps for k, v in totals.items() if not k.startswith("n_")}
    summary["realloc_hard_share"] = totals.get("realloc_hard", 0.0) / max(totals["n_hard"], 1.0)
    summary["realloc_easy_share"] = totals.get("realloc_easy", 0.0) / max(totals["n_easy"], 1.0)
    return summary


REGIME_TASK = ArithmeticTask(levels=(1, 2), ops=("+",))
"""1- and 2-digit sums: small enough for the demo model to reproduce its teacher (a converged warm start)."""

register_regime(
    Regime(
        "neutral",
        ArithmeticTask(ops=("+",)),
        None,
        "The original testbed: 1–5-digit addition, 30 % of SFT answers with a leading space, short SFT. PPL separates "
        "right from wrong almost perfectly and BRR touches ~1 % of the groups (docs/results/demo.md).",
    )
)
register_regime(
    Regime(
        "explore",
        REGIME_TASK,
        Teacher(
            filler_probs=(0.7, 0.2, 0.1),
            trap_levels=(2,),
            trap_drop=0.9,
            trap_noise=0.05,
            noisy_levels=(2,),
            digit_noise=0.25,
        ),
        "Over-confident errors: on 2-digit sums whose units carry (trap items), the teacher drops the carry 90 % of "
        "the time (5 % a random tens digit, 5 % right), so many all-wrong groups sit below τ* and BRR's maximum-PPL "
        "reward fires. Other 2-digit answers carry uncertain digits (25 % noise per digit); 0–2 leading spaces the "
        "verifier ignores vary the PPL.",
        sft_steps=4000,
    )
)
register_regime(
    Regime(
        "exploit",
        REGIME_TASK,
        Teacher(filler_probs=(0.9, 0.1), noisy_levels=(2,), digit_noise=0.4, noise_spread=2),
        "Uncertain right answers: 10 % of answers start with a rare leading space the verifier ignores, and τ* sits "
        "low because 2-digit answers err by a neighbouring digit (40 % noise per digit, two alternatives), so "
        "all-right groups often hold a right answer above τ* and BRR's maximum-PPL penalty fires.",
        sft_steps=4000,
    )
)

DEFAULT_REGIME = "exploit"
"""The regime ``dipo demo`` / ``make demo`` runs when none is named: the one where the regime study
(docs/results/regimes.md) measured DiPO changing learning beyond the seed noise (the maximum-PPL penalty sharpens the
surface form); ``explore`` acts too, with no effect measured."""
