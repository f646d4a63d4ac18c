"""``DiPOConfig``: TRL's ``GRPOConfig`` plus every DiPO option and a ``preset`` (grpo / dapo / dipo).

Precedence rule (documented in ``docs/trl.md``): the preset-controlled fields ``loss_type``, ``epsilon_high``,
``mask_truncated_completions`` and ``dipo_alpha`` default to ``None``; ``None`` means "take the preset's value".
Any value you set explicitly (anything but ``None``) wins over the preset. All other fields behave as in TRL.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from trl import GRPOConfig

from dipo.core import DiPOCoreConfig
from dipo.core.dynamic_sampling import DS_QUEUE_CHOICES
from dipo.integrations._kit.logprobs import ppl_source_option
from dipo.integrations.trl.presets import PRESET_FIELDS, PRESETS, resolve_preset

#: What dynamic sampling does when ``max_generation_rounds`` rounds kept too few groups.
DS_ON_CAP_CHOICES = ("fill", "raise")

#: TRL's loss types (GRPOConfig.loss_type help, trl 1.16); anything else fails at TRL's first loss computation.
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")

#: The DiPOConfig field behind each DiPOCoreConfig option (the core's error messages are reworded with these names).
CORE_OPTION_FIELDS: dict[str, str] = {
    "alpha": "dipo_alpha",
    "queue_batches": "dipo_queue_batches",
    "threshold_rule": "dipo_threshold_rule",
    "judgment_confidence": "dipo_judgment_confidence",
    "judgment": "dipo_judgment",
    "membership": "dipo_membership",
    "reallocate_hard": "dipo_reallocate_hard",
    "reallocate_easy": "dipo_reallocate_easy",
    "selection_seed": "seed",
    "selection": "dipo_selection",
    "reward_mode": "dipo_reward_mode",
    "correct_threshold": "dipo_correct_threshold",
    "graded_delta": "dipo_graded_delta",
    "zero_variance_tol": "dipo_zero_variance_tol",
    "scale_rewards": "scale_rewards",
    "realloc_normalizer": "dipo_realloc_normalizer",
}
_CORE_NAME = re.compile(r"(?<![\w.])(" + "|".join(sorted(CORE_OPTION_FIELDS, key=len, reverse=True)) + r")\b")


def trl_option_name(core_name: str) -> str:
    """The ``DiPOConfig`` field that sets the core option ``core_name`` (``alpha`` -> ``dipo_alpha``)."""
    return CORE_OPTION_FIELDS.get(core_name, core_name)


def with_trl_names(message: str) -> str:
    """A core message with each core option name replaced by its ``DiPOConfig`` field (``alpha`` -> ``dipo_alpha``)."""
    return _CORE_NAME.sub(lambda m: CORE_OPTION_FIELDS[m.group(1)], message)


def _trl_help(name: str) -> str:
    return GRPOConfig.__dataclass_fields__[name].metadata.get("help", "")


@dataclass
class DiPOConfig(GRPOConfig):
    r"""Configuration for :class:`~dipo.integrations.trl.DiPOTrainer`: every ``GRPOConfig`` option plus DiPO's.

    Parameters (DiPO-specific; the spec section of each rule is given):
        preset (`str`, defaults to `"dipo"`): `"grpo"`, `"dapo"`, `"dipo"` or `"none"`; fills the preset-controlled
            fields left at `None` (see `dipo.integrations.trl.presets.PRESETS`).
        dipo_alpha (`float` or `None`): α of spec §7 (preset dipo: 0.1; grpo/dapo: 0 = DiPO off).
        dipo_queue_batches (`int`, 2): batches kept in the PPL queue (spec §4).
        dipo_threshold_rule (`str`, "error"): τ* minimises the plain error (the paper, spec §5) or, "balanced" (not
            the paper's rule), the mean of the two per-class error rates.
        dipo_judgment (`bool`, True): apply the advantage judgment (spec §5); False = ablation.
        dipo_judgment_confidence (`float` or `None`, 0.95): Wilson-interval confidence of the judgment; None = point
            estimates (spec §5).
        dipo_membership (`str`, "selected"): when an extreme group lies in a space, "selected" | "all" | "mean"
            (spec §6).
        dipo_reallocate_hard / dipo_reallocate_easy (`bool`, True): BRR ablation switches (spec §6).
        dipo_selection (`str`, "max_ppl"): whose reward BRR moves: the maximum-PPL response (the paper) or, as a
            control, a uniformly random valid response of the same groups ("random", seeded by `seed`).
        dipo_reward_mode (`str`, "binary"): "binary" (0/1 verifier rewards) or "graded" (spec §6 graded rule).
        dipo_correct_threshold (`float`, 0.5): graded mode: a reward >= this counts as correct.
        dipo_graded_delta (`float` or `None`): graded mode: how far BRR moves the selected reward (None: reward range).
        dipo_zero_variance_tol (`float`, 1e-6): a group is extreme if max − min <= tol × reward scale (spec §6).
        dipo_realloc_normalizer (`str`, "shared"): loss normaliser of the α term, "shared" | "separate" (spec §7).
        dipo_ppl_source (`str`, "auto"): where per-token log-probs for the PPL come from (spec §3).
        dipo_log_diagnostics (`bool` or `None`): log the spec §10 diagnostics; True also runs PSD when α = 0
            (observe-only: advantages unchanged); None = on iff α > 0. DiPO runs iff α > 0 or this is True
            (:attr:`DiPOConfig.dipo_track`); False with α > 0 keeps DiPO on and only stops the ``dipo/…`` logging.
        dipo_verifier_reward_funcs (`list[str]` or `None`): names of the reward functions (TRL's
            ``reward_func_names``) whose unweighted sum is DiPO's verifier reward (correctness, hard/easy groups);
            None = the weighted sum of all of them. TRL's advantages always use the weighted total.
        dipo_truncation_warn_threshold (`float`, 0.5): with ``mask_truncated_completions``, warn when more than
            this share of a batch's completions is truncated (masked out of the loss).
        dipo_resume_empty_queue (`bool`, False): resume from a checkpoint without ``dipo_state.pt`` (e.g. a GRPO
            run's) with an empty PPL queue; by default such a checkpoint is incomplete and refused (or skipped by
            ``resume_from_checkpoint=True``) while DiPO runs.
        soft_overlong_cache (`int` or `None`): if set, add TRL's DAPO soft overlong punishment reward; DiPO's
            verifier reward excludes it.
        ppl_bonus_coef / ppl_bonus_clip (`float`, 0.0 / 0.5): the CDE-style PPL reward bonus baseline (spec §11).
        fast_generation (`bool`, False): not a paper rule, a speed option for TRL's transformers ``generate`` path:
            static KV cache + ``torch.compile`` of the decoding step (on CUDA/XPU; static cache only elsewhere), with
            prompts left-padded to a multiple of ``fast_generation_bucket`` so that it compiles once per bucket.
        fast_generation_bucket (`int`, 64): the prompt-length bucket used when ``pad_to_multiple_of`` is not set.
        dynamic_sampling (`bool`, False): DAPO's dynamic sampling, DiPO-aware (spec §7): drop zero-variance groups
            that BRR did not reallocate and refill the batch with fresh prompts (any preset).
        max_generation_rounds (`int`, 3): generation rounds per batch at most (verl's ``max_num_gen_batches``).
        dipo_ds_keep_reallocated (`bool`, True): dynamic sampling keeps the zero-variance groups BRR reallocated.
        dipo_ds_queue (`str`, "all"): the PPL queue sees every generated response ("all") or only the kept ones.
        dipo_ds_on_cap (`str`, "fill"): too few kept groups after ``max_generation_rounds``: "fill" (complete the
            batch with dropped groups masked out of the loss, warn) or "raise".
    """

    preset: str = field(
        default="dipo",
        metadata={
            "help": "One of 'grpo', 'dapo', 'dipo' (default) or 'none'. Fills the preset-controlled fields "
            "(loss_type, epsilon_high, mask_truncated_completions, dipo_alpha) that are left at None; values you set "
            "explicitly always win. 'grpo': loss_type='grpo', symmetric clipping, no overlong filtering, DiPO off. "
            "'dapo': loss_type='dapo', epsilon_high=0.28, mask_truncated_completions=True, DiPO off. "
            "'dipo': 'dapo' + DiPO (PSD/BRR) with dipo_alpha=0.1. 'none': TRL's GRPOConfig defaults + DiPO α=0.1."
        },
    )
    # --- TRL fields that the preset controls (None = take the preset's value) ---
    loss_type: str | None = field(
        default=None,
        metadata={"help": "None: the preset's value ('grpo' preset: 'grpo', else 'dapo'). " + _trl_help("loss_type")},
    )
    epsilon_high: float | None = field(
        default=None,
        metadata={
            "help": "None: the preset's value ('dapo'/'dipo' presets: 0.28; 'grpo'/'none': same as `epsilon`). "
            + _trl_help("epsilon_high")
        },
    )
    mask_truncated_completions: bool | None = field(
        default=None,
        metadata={
            "help": "None: the preset's value ('dapo'/'dipo' presets: True, DAPO overlong filtering). "
            + _trl_help("mask_truncated_completions")
        },
    )
    # --- DiPO options (spec sections in the help) ---
    dipo_alpha: float | None = field(
        default=None,
        metadata={
            "help": "Weight α of the reallocated-reward objective J_base(θ, R_r) (spec §7; the paper's best is 0.1). "
            "None: the preset's value ('dipo'/'none': 0.1, 'grpo'/'dapo': 0.0). 0 disables BRR (the base method)."
        },
    )
    dipo_queue_batches: int = field(
        default=2,
        metadata={"help": "Number of most recent batches (current one included) kept in the PPL queue (spec §4)."},
    )
    dipo_threshold_rule: str = field(
        default="error",
        metadata={
            "help": "How τ* is chosen (spec §5): 'error' (the paper: minimise the plain error) or 'balanced' (NOT the "
            "paper's rule: minimise the mean of the error rates on correct and on wrong responses)."
        },
    )
    dipo_judgment: bool = field(
        default=True,
        metadata={
            "help": "Apply the advantage judgment (spec §5): reallocate only when PPL separates correct from wrong "
            "responses on the queue. False reallocates whenever a threshold exists (ablation)."
        },
    )
    dipo_judgment_confidence: float | None = field(
        default=0.95,
        metadata={
            "help": "Confidence of the Wilson-score intervals used by the advantage judgment (spec §5). None uses "
            "the point estimates Δ_EiS > 0 and Δ_ErS > 0."
        },
    )
    dipo_membership: str = field(
        default="selected",
        metadata={
            "help": "When an extreme group 'lies in' a perplexity space (spec §6): 'selected' (the maximum-PPL "
            "response does), 'all' (every valid response does) or 'mean' (the group's mean log-PPL does)."
        },
    )
    dipo_reallocate_hard: bool = field(
        default=True,
        metadata={"help": "Give the maximum-PPL reward in hard (all-wrong) groups lying in EiS (spec §6; ablation)."},
    )
    dipo_reallocate_easy: bool = field(
        default=True,
        metadata={"help": "Give the maximum-PPL penalty in easy (all-right) groups lying in ErS (spec §6; ablation)."},
    )
    dipo_selection: str = field(
        default="max_ppl",
        metadata={
            "help": "Whose reward BRR moves in a reallocated group: 'max_ppl' (the maximum-PPL response, spec §6) or "
            "'random' (control: the same groups, a uniformly random valid response; seeded by `seed`)."
        },
    )
    dipo_reward_mode: str = field(
        default="binary",
        metadata={
            "help": "'binary': verifier rewards must be 0/1 (the paper's setting). 'graded': any finite rewards; "
            "extreme group = zero-variance group, hard/easy by `dipo_correct_threshold` (spec §6 graded rule)."
        },
    )
    dipo_correct_threshold: float = field(
        default=0.5,
        metadata={"help": "A verifier reward >= this counts as correct (spec §2; used by PSD and graded BRR)."},
    )
    dipo_graded_delta: float | None = field(
        default=None,
        metadata={
            "help": "Graded mode: how far BRR moves the selected response's reward (spec §6). None: the batch's "
            "reward range (1.0 if the range is 0)."
        },
    )
    dipo_zero_variance_tol: float = field(
        default=1e-6,
        metadata={"help": "A group is extreme if max − min <= tol × max(1, max|r|) (spec §6 graded rule)."},
    )
    dipo_realloc_normalizer: str = field(
        default="shared",
        metadata={
            "help": "Loss normaliser of the α-weighted term (spec §7): 'shared' (the base loss normaliser, exact "
            "fold into the advantages) or 'separate' (rescaled as if normalised over its own tokens)."
        },
    )
    dipo_ppl_source: str = field(
        default="auto",
        metadata={
            "help": "Per-token log-probs of the sampling policy used for the per-response PPL (spec §3). 'auto': "
            "TRL's old_per_token_logps if it computed them, else the sampler's (vLLM) log-probs, else one extra "
            "no-grad forward pass. 'old' / 'sampling': require that source. 'forward': always the extra pass."
        },
    )
    dipo_log_diagnostics: bool | None = field(
        default=None,
        metadata={
            "help": "Log the spec §10 diagnostics under 'dipo/…'. True also runs PSD when dipo_alpha == 0 "
            "(observe-only: the advantages are unchanged; to compare baselines). None: on iff dipo_alpha > 0. DiPO "
            "runs iff dipo_alpha > 0 or this is True; False with dipo_alpha > 0 keeps DiPO on and only stops the "
            "'dipo/…' diagnostics. Costs one extra forward pass when TRL has no log-probs."
        },
    )
    dipo_verifier_reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Names of the reward functions (TRL's reward_func_names: the function's __name__, or the reward "
            "model's name) that define correctness for DiPO. Their unweighted sum is DiPO's verifier reward (correct "
            "/ wrong, hard / easy groups); the other functions (format, length, reward-model scores, ...) still count "
            "in TRL's weighted total and thus in the base advantages. None: the weighted sum of all reward functions "
            "(the soft overlong penalty excluded). Unknown names fail when DiPOTrainer is built."
        },
    )
    dipo_truncation_warn_threshold: float = field(
        default=0.5,
        metadata={
            "help": "With mask_truncated_completions=True (DAPO overlong filtering, the dapo/dipo presets), truncated "
            "completions have no loss tokens. DiPOTrainer logs their share as 'dipo/frac_masked_truncated' and warns "
            "(at most once every 50 steps) when it exceeds this value: then (almost) nothing learns; raise "
            "max_completion_length or set mask_truncated_completions=False. 1.0 never warns."
        },
    )
    dipo_resume_empty_queue: bool = field(
        default=False,
        metadata={
            "help": "While DiPO runs, a checkpoint without dipo_state.pt (the PPL queue) is incomplete: a save was "
            "interrupted, or another method wrote it. It is refused, and resume_from_checkpoint=true skips it. True: "
            "resume from such a checkpoint (e.g. to continue a GRPO run with DiPO) with an empty PPL queue."
        },
    )
    soft_overlong_cache: int | None = field(
        default=None,
        metadata={
            "help": "DAPO soft overlong punishment (DAPO Eq. 13): if set, DiPOTrainer adds TRL's "
            "`get_soft_overlong_punishment(max_completion_length, soft_overlong_cache)` reward function. DiPO's "
            "verifier reward (grouping, correctness) excludes it. None (all presets): off."
        },
    )

    ppl_bonus_coef: float = field(
        default=0.0,
        metadata={
            "help": "Baseline, not DiPO: CDE-style actor curiosity (spec §11, arXiv 2509.09675). > 0 adds "
            "min(coef × log-PPL, ppl_bonus_clip × |r|) to every verifier reward before the group normalisation "
            "(dipo.core.perplexity_bonus). 0 (default): off."
        },
    )
    ppl_bonus_clip: float = field(
        default=0.5,
        metadata={"help": "CDE-style baseline: the bonus never exceeds this fraction of the reward's magnitude."},
    )

    fast_generation: bool = field(
        default=False,
        metadata={
            "help": "Faster rollouts on TRL's transformers `generate` path (no vLLM): static KV cache "
            "(cache_implementation='static') and torch.compile of the decoding step, which TRL switches off by "
            "default (disable_compile=True). transformers compiles on CUDA/XPU only; elsewhere the static cache "
            "runs uncompiled. Prompts are left-padded to a multiple of `fast_generation_bucket` (through TRL's "
            "`pad_to_multiple_of`, unless you set that) so the decoding step compiles once per bucket. Sampling "
            "(temperature, top-p/top-k, EOS, masks) is unchanged."
        },
    )
    fast_generation_bucket: int = field(
        default=64,
        metadata={
            "help": "fast_generation: prompt lengths are padded up to a multiple of this (sets `pad_to_multiple_of` "
            "when that is None). Larger buckets mean fewer compilations and more padding."
        },
    )

    dynamic_sampling: bool = field(
        default=False,
        metadata={
            "help": "DAPO's dynamic sampling, DiPO-aware (spec §7; docs/trl.md): after DiPO's step, drop every group "
            "whose verifier rewards have zero variance unless BRR reallocated it, and generate further rounds from "
            "fresh prompts until the batch holds its full number of groups. Works with every preset; the paper's "
            "base method is preset='dapo' + dynamic_sampling=True. False (default): TRL's batches, unchanged."
        },
    )
    max_generation_rounds: int = field(
        default=3,
        metadata={
            "help": "Dynamic sampling: generation rounds per batch at most, the first included (verl's "
            "max_num_gen_batches; DAPO's recipe uses 10). Each round generates a full generation batch."
        },
    )
    dipo_ds_keep_reallocated: bool = field(
        default=True,
        metadata={
            "help": "Dynamic sampling keeps a zero-variance group that BRR reallocated (its R_r carries the α-weighted"
            " signal; spec §7). False drops it as plain DAPO would (ablation)."
        },
    )
    dipo_ds_queue: str = field(
        default="all",
        metadata={
            "help": "Dynamic sampling: which responses the PPL queue (spec §4) sees. 'all' (default): every generated "
            "response, each round one queue batch (an unbiased sample of the policy; BRR's decision in a round uses "
            "that round). 'kept': at the end of the step, the step's rounds are replaced by one queue batch holding "
            "only the responses of the groups that entered the batch."
        },
    )
    dipo_ds_on_cap: str = field(
        default="fill",
        metadata={
            "help": "Dynamic sampling, when max_generation_rounds rounds kept fewer groups than the batch holds: "
            "'fill' (default) completes the batch with dropped groups whose completions are masked out of the loss "
            "(the step trains on the kept groups only) and warns; 'raise' stops with an error (verl's behaviour)."
        },
    )

    def __post_init__(self) -> None:
        explicit = {name: getattr(self, name) for name in PRESET_FIELDS}
        for name, value in resolve_preset(self.preset, explicit).items():
            setattr(self, name, value)
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"DiPOConfig: num_generations={self.num_generations}, but GRPO/DAPO/DiPO need at least 2 responses "
                "per prompt to form groups (spec §2). Set num_generations >= 2 (the paper uses 8)."
            )
        super().__post_init__()
        self._validate_dipo()

    def _apply_fast_generation(self) -> None:
        """``fast_generation``: static cache + bucketed prompt padding (the trainer re-enables compilation)."""
        if not self.fast_generation:
            return
        if (
            self.use_vllm
            or self.use_transformers_continuous_batching
            or getattr(self, "use_transformers_paged", False)
        ):
            engine = "use_vllm" if self.use_vllm else "use_transformers_continuous_batching"
            raise ValueError(
                f"DiPOConfig: fast_generation=True applies to TRL's transformers `generate` path, but {engine}=True "
                "selects another generation engine with its own caching. Set fast_generation=False, or turn the "
                "other engine off."
            )
        if self.fast_generation_bucket < 1:
            raise ValueError(
                f"DiPOConfig: fast_generation_bucket={self.fast_generation_bucket} must be >= 1 (64 is a good value)."
            )
        requested = {self.cache_implementation, (self.generation_kwargs or {}).get("cache_implementation", "static")}
        requested.discard(None)
        if requested != {"static"}:
            raise ValueError(
                f"DiPOConfig: fast_generation=True uses cache_implementation='static', but {sorted(requested)} was "
                "requested (cache_implementation / generation_kwargs). Remove that setting or set "
                "fast_generation=False."
            )
        self.cache_implementation = "static"
        if self.pad_to_multiple_of is None:
            self.pad_to_multiple_of = self.fast_generation_bucket

    def _validate_dipo(self) -> None:
        self._apply_fast_generation()
        try:  # one set of names with verl (dipo.integrations._kit.logprobs)
            self.dipo_ppl_source = ppl_source_option(self.dipo_ppl_source, "dipo_ppl_source")
        except ValueError as err:
            raise ValueError(f"DiPOConfig: {err}") from None
        if self.soft_overlong_cache is not None and not 0 <= self.soft_overlong_cache < self.max_completion_length:
            raise ValueError(
                f"DiPOConfig: soft_overlong_cache={self.soft_overlong_cache} must lie in [0, max_completion_length="
                f"{self.max_completion_length}); DAPO uses about a fifth of the maximum length."
            )
        if not (self.ppl_bonus_coef >= 0 and self.ppl_bonus_clip >= 0):
            raise ValueError(
                f"DiPOConfig: ppl_bonus_coef={self.ppl_bonus_coef} and ppl_bonus_clip={self.ppl_bonus_clip} must be "
                ">= 0 (ppl_bonus_coef=0 turns the CDE-style baseline off)."
            )
        if self.loss_type not in TRL_LOSS_TYPES:
            raise ValueError(
                f"DiPOConfig: unknown loss_type={self.loss_type!r}; TRL supports "
                f"{', '.join(repr(t) for t in TRL_LOSS_TYPES)} (the dapo/dipo presets use 'dapo', grpo uses 'grpo')."
            )
        names = self.dipo_verifier_reward_funcs
        if names is not None and (
            isinstance(names, str) or not names or not all(isinstance(n, str) and n for n in names)
        ):
            raise ValueError(
                f"DiPOConfig: dipo_verifier_reward_funcs={names!r} must be None (all reward functions) or a non-empty "
                "list of reward function names, e.g. ['accuracy_reward']."
            )
        threshold = self.dipo_truncation_warn_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
            raise ValueError(
                f"DiPOConfig: dipo_truncation_warn_threshold={threshold!r} must be a number in [0, 1] (a share of "
                "the batch; 1.0 never warns)."
            )
        if self.dipo_log_diagnostics is not None and not isinstance(self.dipo_log_diagnostics, bool):
            raise ValueError(
                f"DiPOConfig: dipo_log_diagnostics={self.dipo_log_diagnostics!r} must be True, False or None."
            )
        self._validate_dynamic_sampling()
        self.dipo_core_config()  # validates every core option (messages use the dipo_* field names)
        if self.dipo_enabled and self.multi_objective_aggregation != "sum_then_normalize":
            warnings.warn(
                "DiPOConfig: multi_objective_aggregation='normalize_then_sum' normalises the summed advantages over "
                "the whole batch, so extreme groups do not have zero base advantage and the DiPO term is added on "
                "top of a non-zero one. The paper's setting is 'sum_then_normalize'.",
                UserWarning,
                stacklevel=3,
            )

    def _validate_dynamic_sampling(self) -> None:
        rounds = self.max_generation_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(
                f"DiPOConfig: max_generation_rounds={rounds!r} must be an integer >= 1 (1: no refill round; verl's "
                "DAPO recipe uses 10)."
            )
        if self.dipo_ds_queue not in DS_QUEUE_CHOICES:
            raise ValueError(
                f"DiPOConfig: unknown dipo_ds_queue={self.dipo_ds_queue!r}; choose one of "
                f"{', '.join(repr(c) for c in DS_QUEUE_CHOICES)}."
            )
        if self.dipo_ds_on_cap not in DS_ON_CAP_CHOICES:
            raise ValueError(
                f"DiPOConfig: unknown dipo_ds_on_cap={self.dipo_ds_on_cap!r}; choose one of "
                f"{', '.join(repr(c) for c in DS_ON_CAP_CHOICES)}."
            )

    @property
    def dipo_enabled(self) -> bool:
        """True when BRR can change advantages (``dipo_alpha > 0``)."""
        return bool(self.dipo_alpha and self.dipo_alpha > 0)

    @property
    def dipo_track(self) -> bool:
        """**The** definition of "DiPO runs" (the trainer builds :class:`dipo.core.DiPO`, keeps the PPL queue, runs
        PSD): α > 0, or diagnostics requested (``dipo_log_diagnostics=True``, observe-only when α = 0)."""
        return self.dipo_enabled or self.dipo_log_diagnostics is True

    @property
    def dipo_logs_diagnostics(self) -> bool:
        """True when the ``dipo/…`` diagnostics are logged: ``dipo_log_diagnostics``, or (None) whenever DiPO runs."""
        return self.dipo_track if self.dipo_log_diagnostics is None else bool(self.dipo_log_diagnostics)

    @property
    def needs_ppl(self) -> bool:
        """True when the trainer computes per-response perplexities (DiPO/diagnostics or the CDE-style bonus)."""
        return self.dipo_track or self.ppl_bonus_coef > 0

    def dipo_core_config(self) -> DiPOCoreConfig:
        """The :class:`dipo.core.DiPOCoreConfig` of this run (TRL's ``scale_rewards``, unbiased std, eps 1e-4)."""
        try:
            return DiPOCoreConfig(
                alpha=self.dipo_alpha,
                queue_batches=self.dipo_queue_batches,
                threshold_rule=self.dipo_threshold_rule,
                judgment=self.dipo_judgment,
                judgment_confidence=self.dipo_judgment_confidence,
                membership=self.dipo_membership,
                reallocate_hard=self.dipo_reallocate_hard,
                reallocate_easy=self.dipo_reallocate_easy,
                selection=self.dipo_selection,
                selection_seed=int(self.seed),
                reward_mode=self.dipo_reward_mode,
                correct_threshold=self.dipo_correct_threshold,
                graded_delta=self.dipo_graded_delta,
                zero_variance_tol=self.dipo_zero_variance_tol,
                scale_rewards=self.scale_rewards,
                std="unbiased",  # TRL's nanstd
                std_eps=1e-4,  # TRL: (r - mean) / (std + 1e-4)
                realloc_normalizer=self.dipo_realloc_normalizer,
            )
        except ValueError as err:
            raise ValueError(f"DiPOConfig: {with_trl_names(str(err))}") from err

    @classmethod
    def from_grpo_config(cls, args: GRPOConfig, **dipo_options: Any) -> DiPOConfig:
        """Wrap an already-built ``GRPOConfig``: every TRL value kept as given, preset ``"none"``, DiPO options at
        their defaults (α = 0.1) unless passed in ``dipo_options`` (``dipo_*`` fields and ``soft_overlong_cache``)."""
        if isinstance(args, DiPOConfig):
            return args
        new = copy.copy(args)
        new.__class__ = cls
        own = {f.name: f for f in dataclasses.fields(cls) if f.name not in GRPOConfig.__dataclass_fields__}
        unknown = set(dipo_options) - set(own)
        if unknown:
            raise ValueError(f"DiPOConfig.from_grpo_config: unknown DiPO options {sorted(unknown)}.")
        for name, f in own.items():
            setattr(new, name, dipo_options.get(name, f.default))
        new.preset = "none"
        if new.dipo_alpha is None:
            new.dipo_alpha = PRESETS["none"]["dipo_alpha"]
        new._validate_dipo()
        return new
