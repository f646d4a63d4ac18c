"""Options of the DiPO core, with the spec's defaults (every open choice of the paper is an option).

Each field is declared once, with :func:`dipo.core.options.option` (default, allowed values, help, spec section):
validation, TRL's ``dipo_*`` fields, verl's ``algorithm.dipo.*`` keys and the options table of ``docs/algorithm.md``
are derived from these declarations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from dipo.core.advantages import REALLOC_NORMALIZERS, SCALE_REWARDS, STD_KINDS
from dipo.core.brr import MEMBERSHIP_RULES, REWARD_MODES, SELECTION_RULES
from dipo.core.options import OPTION_KEY, Option, option, options_of
from dipo.core.threshold import THRESHOLD_RULES


@dataclass
class DiPOCoreConfig:
    """Configuration of :class:`dipo.core.DiPO`; every field is validated when the config is built (ValueError naming
    the field). The options, their defaults, allowed values and spec sections: :data:`CORE_OPTIONS` (help(...) below
    lists them; ``docs/algorithm.md`` has the same table)."""

    alpha: float = option(
        0.1, "§7 [paper]", "Weight α of the reallocated-reward objective J_base(θ, R_r); 0 = the base method.",
        at_least=0.0, hint="the paper uses 0.1",
    )  # fmt: skip
    queue_batches: int = option(
        2, "§4 [choice]", "Number of most recent batches (the current one included) kept in the PPL queue.",
        at_least=1, hint="the paper uses 2",
    )  # fmt: skip
    threshold_rule: str = option(
        "error", "§5 (option, **not the paper's rule**)",
        "How τ* is chosen: 'error' (the paper) minimises the plain error; 'balanced' minimises ½·(FN/P + FP/N), the "
        "mean of the error rates on the P correct and N wrong responses (same candidates, tie rule, midpoint; a "
        "missing class counts 0).",
        choices=THRESHOLD_RULES,
    )  # fmt: skip
    judgment: bool = option(
        True, "§5", "Apply the advantage judgment: reallocate only when PPL separates correct from wrong responses on "
        "the queue. False reallocates whenever a threshold exists (ablation).",
    )  # fmt: skip
    judgment_confidence: float | None = option(
        0.95, "§5 [choice]", "Confidence of the Wilson-score intervals of the advantage judgment; None uses the point "
        "estimates (Δ_EiS > 0 and Δ_ErS > 0).",
        nullable=True, above=0.0, below=1.0,
    )  # fmt: skip
    membership: str = option(
        "selected", "§6 [choice]", "When an extreme group 'lies in' a perplexity space: 'selected' (its maximum-PPL "
        "response does), 'all' (every valid response does) or 'mean' (the group's mean log-PPL does).",
        choices=tuple(MEMBERSHIP_RULES),
    )  # fmt: skip
    reallocate_hard: bool = option(
        True, "§6", "Give the maximum-PPL reward in hard (all-wrong) groups lying in EiS (ablation switch)."
    )
    reallocate_easy: bool = option(
        True, "§6", "Give the maximum-PPL penalty in easy (all-right) groups lying in ErS (ablation switch)."
    )
    selection: str = option(
        "max_ppl", "§6 control", "Whose reward BRR moves in a reallocated group: 'max_ppl' (the maximum-PPL response, "
        "the paper) or 'random' (control: the same groups, a uniformly random valid response; does max-PPL matter?).",
        choices=tuple(SELECTION_RULES),
    )  # fmt: skip
    selection_seed: int = option(
        0, "§6 control", "Seed of the generator behind selection='random' (saved and restored with the state; TRL: "
        "`seed`).",
    )  # fmt: skip
    reward_mode: str = option(
        "binary", "§6", "'binary': verifier rewards must be 0/1 (the paper's setting); 'graded': any finite rewards, "
        "extreme group = zero-variance group, hard/easy by correct_threshold (graded rule).",
        choices=REWARD_MODES,
    )  # fmt: skip
    correct_threshold: float = option(
        0.5, "§6 [choice]", "A verifier reward >= this counts as correct (PSD and graded BRR; 0.5 suits 0/1 rewards)."
    )
    graded_delta: float | None = option(
        None, "§6 [choice]", "Graded mode: how far BRR moves the selected reward; None = the batch's reward range "
        "(1.0 if it is 0).",
        kind=float, nullable=True, above=0.0,
    )  # fmt: skip
    zero_variance_tol: float = option(
        1e-6, "§6 [choice]", "Graded extreme-group test: max − min <= tol × max(1, max|r|).", at_least=0.0
    )
    scale_rewards: str = option(
        "group", "§7 [choice]", "Std normalisation of the advantages, as the base config: 'group', 'batch', 'none'.",
        choices=SCALE_REWARDS,
    )  # fmt: skip
    std: str = option(
        "unbiased", "§7 [choice]", "Standard deviation of the normalisation: 'unbiased' (TRL, verl) or "
        "'population'.",
        choices=STD_KINDS,
    )  # fmt: skip
    std_eps: float = option(
        1e-4, "§7", "Added to the std before dividing (TRL's 1e-4; the verl plugin uses verl's 1e-6).", at_least=0.0
    )
    realloc_normalizer: str = option(
        "shared", "§7 [choice]", "Loss normaliser of the α-weighted term: 'shared' (the base loss's, an exact fold "
        "into the advantages) or 'separate' (rescaled by N_all / N_realloc, in tokens if given).",
        choices=REALLOC_NORMALIZERS,
    )  # fmt: skip

    def __post_init__(self) -> None:
        """Validate every field against its declaration (types, ranges, choices)."""
        for f in fields(self):
            f.metadata[OPTION_KEY].check(getattr(self, f.name), f.name)

    @classmethod
    def from_options(
        cls, values: Mapping[str, Any], name: Callable[[str], str] = str, *, text: bool = False
    ) -> DiPOCoreConfig:
        """The config of ``values`` (core option name -> value; others at their defaults), each validated under the
        name the user wrote (``name("alpha")``, e.g. ``dipo_alpha``); ``text``: values from a text config (a switch
        may be "true"/"false", :meth:`Option.parse`). An unknown option name is a ValueError."""
        unknown = sorted(set(values) - set(CORE_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown DiPO option(s) {', '.join(map(name, unknown))}; valid: {', '.join(CORE_OPTIONS)}."
            )
        parse = Option.parse if text else Option.check
        return cls(**{key: parse(CORE_OPTIONS[key], value, name(key)) for key, value in values.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Every core option, ``name -> Option``, in declaration order: the one source of names, defaults, choices and help.
CORE_OPTIONS: dict[str, Option] = options_of(DiPOCoreConfig)


def _attributes_doc() -> str:
    lines = [f"        {n}: {o.help} Default {o.default!r}; spec {o.spec}." for n, o in CORE_OPTIONS.items()]
    return "\n\n    Attributes:\n" + "\n".join(lines) + "\n"


DiPOCoreConfig.__doc__ = (DiPOCoreConfig.__doc__ or "") + _attributes_doc()
