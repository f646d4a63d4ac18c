"""The methods ``dipo demo`` compares: the main three, the ablations and the paper's other baselines.

Each method is a :class:`DiPOConfig` preset plus overrides (any ``DiPOConfig`` field). The CDE-style perplexity bonus
(spec §11) is the trainer's own option: ``ppl_bonus_coef`` / ``ppl_bonus_clip`` (``r + min(coef·s, clip·|r|)`` on every
verifier reward, applied to the advantages). All run through ``DiPOTrainer`` from the same warm start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Method:
    """A named training recipe: ``preset`` + ``overrides`` of ``DiPOConfig`` fields."""

    name: str
    preset: str
    overrides: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def cde(coef: float, clip: float = 0.5) -> dict[str, float]:
    """Overrides of the CDE-style perplexity bonus baseline (the trainer's ``ppl_bonus_coef`` / ``ppl_bonus_clip``)."""
    return {"ppl_bonus_coef": coef, "ppl_bonus_clip": clip}


MAIN = [
    Method("grpo", "grpo", description="GRPO: group-normalised advantages, symmetric clip 0.2, sequence-mean loss"),
    Method("dapo", "dapo", description="DAPO (TRL): clip-higher 0.2/0.28, token-level loss, overlong filtering"),
    Method("dipo", "dipo", description="DiPO: DAPO + PSD/BRR, α = 0.1 (spec §7)"),
]

ALPHA_1 = Method("dipo-a1.0", "dipo", {"dipo_alpha": 1.0}, description="DiPO α = 1.0 (tenfold the default)")
"""In both the ablations (α sweep) and the baselines; defined once (the description the registry always held)."""

ABLATIONS = [
    Method("dipo-no-judgment", "dipo", {"dipo_judgment": False}, description="DiPO without the advantage judgment"),
    Method("dipo-hard-only", "dipo", {"dipo_reallocate_easy": False}, description="BRR max-PPL reward only"),
    Method("dipo-easy-only", "dipo", {"dipo_reallocate_hard": False}, description="BRR max-PPL penalty only"),
    Method("dipo-member-all", "dipo", {"dipo_membership": "all"}, description="membership rule 'all'"),
    Method("dipo-member-mean", "dipo", {"dipo_membership": "mean"}, description="membership rule 'mean'"),
    Method("dipo-a0.05", "dipo", {"dipo_alpha": 0.05}, description="α = 0.05"),
    Method("dipo-a0.3", "dipo", {"dipo_alpha": 0.3}, description="α = 0.3"),
    ALPHA_1,
]

BASELINES = [
    Method("dapo-ent0.003", "dapo", {"entropy_coef": 0.003}, description="DAPO + entropy bonus, coef 0.003"),
    Method("dapo-ent0.01", "dapo", {"entropy_coef": 0.01}, description="DAPO + entropy bonus, coef 0.01"),
    Method("dapo-ent0.03", "dapo", {"entropy_coef": 0.03}, description="DAPO + entropy bonus, coef 0.03"),
    Method("dapo-ent0.1", "dapo", {"entropy_coef": 0.1}, description="DAPO + entropy bonus, coef 0.1"),
    ALPHA_1,
    Method("dapo-cde0.1", "dapo", cde(0.1), description="DAPO + CDE-style PPL bonus, coef 0.1, clip 0.5"),
    Method("dapo-cde0.3", "dapo", cde(0.3), description="DAPO + CDE-style PPL bonus, coef 0.3, clip 0.5"),
]

RANDOM_SELECTION = Method(
    "dipo-random",
    "dipo",
    {"dipo_selection": "random"},
    description="DiPO, but BRR moves a uniformly random valid response of the same groups (does max-PPL matter?)",
)

DS_OVERRIDES: dict[str, Any] = {"dynamic_sampling": True, "max_generation_rounds": 10}
"""Dynamic sampling as DAPO's recipe runs it (verl ``max_num_gen_batches=10``): the batch is (almost) always filled
with kept groups, so the arms test dynamic sampling itself, not the trainer's cheaper default cap of 3 rounds."""

DYNAMIC_SAMPLING = [
    Method(
        "dapo-ds",
        "dapo",
        DS_OVERRIDES,
        description="DAPO with dynamic sampling (the paper's base method; DiPOConfig.dynamic_sampling)",
    ),
    Method(
        "dipo-ds",
        "dipo",
        DS_OVERRIDES,
        description="DiPO with DiPO-aware dynamic sampling (zero-variance groups dropped unless BRR reallocated them)",
    ),
]
"""The arms of the dynamic-sampling study (docs/results/regimes-ds.md); not in any default set of ``dipo demo``."""

CONTROLS = [
    "dapo", "dipo", "dipo-random", "dipo-hard-only", "dipo-easy-only", "dipo-a1.0", "dapo-ent0.01", "dapo-cde0.1",
]  # fmt: skip
"""The controls of the regime study (docs/results/regimes.md): each isolates one part of DiPO's mechanism."""


def build_registry(methods: list[Method]) -> dict[str, Method]:
    """``name → method``; a method may stand in several lists (``ALPHA_1``), but a name defined twice differently is
    a ValueError naming it (a dict would silently keep the last definition)."""
    registry: dict[str, Method] = {}
    for method in methods:
        if registry.setdefault(method.name, method) != method:
            raise ValueError(f"method {method.name!r} is defined twice, differently; define it once and reuse it")
    return registry


REGISTRY: dict[str, Method] = build_registry([*MAIN, *ABLATIONS, *BASELINES, RANDOM_SELECTION, *DYNAMIC_SAMPLING])


def resolve_methods(names: list[str]) -> list[Method]:
    """Methods by name; unknown names raise a ValueError listing the known ones."""
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in names]
