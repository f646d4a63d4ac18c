"""``DiPOConfig``: TRL's ``GRPOConfig`` plus every DiPO option and a ``preset`` (grpo / dapo / dipo).

Precedence rule (documented in ``docs/trl.md``): the preset-controlled fields ``loss_type``, ``epsilon_high``,
``mask_truncated_completions`` and ``dipo_alpha`` default to ``None``; ``None`` means "take the preset's value".
Any value you set explicitly (anything but ``None``) wins over the preset. All other fields behave as in TRL.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from trl import GRPOConfig

from dipo.core import DiPOCoreConfig
from dipo.core.config import CORE_OPTIONS
from dipo.core.dynamic_sampling import DS_QUEUE_CHOICES
from dipo.integrations._kit.logprobs import ppl_source_option
from dipo.integrations.trl.presets import PRESET_FIELDS, PRESETS, resolve_preset

#: What dynamic sampling does when ``max_generation_rounds`` rounds kept too few groups.
DS_ON_CAP_CHOICES = ("fill", "raise")

#: TRL's loss types (GRPOConfig.loss_type help, trl 1.16); anything else fails at TRL's first loss computation.
TRL_LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")

#: Core options that TRL's own advantage computation fixes: unbiased std (``nanstd``), ``(r - mean) / (std + 1e-4)``.
TRL_FIXED_OPTIONS: dict[str, Any] = {"std": "unbiased", "std_eps": 1e-4}

#: The DiPOConfig field behind each DiPOCoreConfig option: ``dipo_<name>``, except two that TRL's own fields set.
CORE_OPTION_FIELDS: dict[str, str] = {
    name: {"selection_seed": "seed", "scale_rewards": "scale_rewards"}.get(name, f"dipo_{name}")
    for name in CORE_OPTIONS
    if name not in TRL_FIXED_OPTIONS
}


def trl_option_name(core_name: str) -> str:
    """The ``DiPOConfig`` field that sets the core option ``core_name`` (``alpha`` -> ``dipo_alpha``)."""
    return CORE_OPTION_FIELDS.get(core_name, core_name)


def _core_help(name: str) -> str:
    opt = CORE_OPTIONS[name]
    return f"{opt.help} Allowed: {opt.allowed()}. Spec {opt.spec.replace('**', '')}."


def _core_option_fields() -> list[tuple[str, Any, Any]]:
    """``(name, type, field)`` of every ``dipo_<core option>`` field, generated from its declaration in
    :mod:`dipo.core.config` (``TrlParser`` shows the help, default and choices in ``--help``)."""
    generated = []
    for name, opt in CORE_OPTIONS.items():
        if CORE_OPTION_FIELDS.get(name) == f"dipo_{name}":
            meta = {"help": _core_help(name), **({"choices": list(opt.choices)} if opt.choices else {})}
            generated.append((f"dipo_{name}", opt.annotation, field(default=opt.default, metadata=meta)))
    return generated


def _trl_help(name: str) -> str:
    return GRPOConfig.__dataclass_fields__[name].metadata.get("help", "")


#: ``GRPOConfig`` plus one ``dipo_<name>`` field per core option (the base of :class:`DiPOConfig`).
_GRPOConfigWithCoreOptions = make_dataclass(
    "_GRPOConfigWithCoreOptions",
    _core_option_fields(),
    bases=(GRPOConfig,),
    namespace={"__module__": __name__, "__doc__": "GRPOConfig plus the generated dipo_<core option> fields."},
)


@dataclass
class DiPOConfig(_GRPOConfigWithCoreOptions):
    r"""Configuration for :class:`~dipo.integrations.trl.DiPOTrainer`: every ``GRPOConfig`` option plus DiPO's.

    * ``preset`` (`"dipo"`): `"grpo"`, `"dapo"`, `"dipo"` or `"none"`; fills the preset-controlled fields left at
      `None` (see `dipo.integrations.trl.presets.PRESETS`).
    * ``dipo_<name>``: one field per option of :class:`dipo.core.DiPOCoreConfig` (:data:`CORE_OPTION_FIELDS`;
      default, choices and help generated from the core's declaration), except ``selection_seed`` (TRL's ``seed``),
      ``scale_rewards`` (TRL's own) and ``std`` / ``std_eps`` (TRL's: unbiased, 1e-4). ``dipo_alpha`` defaults to
      `None`: the preset's value.
    * the trainer's own options below (``dipo_ppl_source``, ``dipo_log_diagnostics``, reward functions, checkpoints,
      the CDE-style baseline, fast generation, dynamic sampling); each field's ``help`` says what it does.
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
    # --- DiPO options: the core's come from _GRPOConfigWithCoreOptions; α also from the preset ---
    dipo_alpha: float | None = field(
        default=None,
        metadata={"help": _core_help("alpha") + " None: the preset's value ('dipo'/'none': 0.1, 'grpo'/'dapo': 0.0)."},
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
        self.dipo_core_config()  # validates every core option under its dipo_* field name
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
        """The :class:`dipo.core.DiPOCoreConfig` of this run (TRL's ``scale_rewards`` and ``seed``, unbiased std,
        eps 1e-4); an invalid option raises a ValueError naming its ``DiPOConfig`` field."""
        values = {name: getattr(self, trl_name) for name, trl_name in CORE_OPTION_FIELDS.items()}
        try:
            return DiPOCoreConfig.from_options({**values, **TRL_FIXED_OPTIONS}, name=trl_option_name)
        except ValueError as err:
            raise ValueError(f"DiPOConfig: {err}") from err

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
