"""DiPO options of a verl run, read from the ``algorithm`` config (``+algorithm.dipo.<name>=...``).

The DiPO options are :class:`dipo.core.DiPOCoreConfig`'s fields (same names, defaults, allowed values: read from their
declarations, :data:`dipo.core.config.CORE_OPTIONS`; a switch may also be the string "true"/"false") plus three verl
ones:

* ``log_probs``: where the per-token log-probs for the log-PPL (spec §3) come from;
* ``verifier_key``: where the verifier reward R that decides correctness and hard / easy groups (spec §2, §6) comes
  from — by default verl's score with the DAPO soft overlong penalty taken out again (:data:`VERIFIER_KEYS`);
* ``loss_agg_mode``: the actor's loss aggregation, which ``realloc_normalizer="separate"`` needs (spec §7); read from
  ``actor_rollout_ref.actor.loss_agg_mode`` when the run's full config is reachable, as it is in verl's trainers.

The advantage normalisation is *not* a DiPO option here: it follows verl's own GRPO (spec §7 [choice: std
normalisation as in the base config]), i.e. the unbiased ``torch.std`` of each uid group plus verl's epsilon (1e-6),
and no division by the std when ``algorithm.norm_adv_by_std_in_grpo=False`` (Dr.GRPO).

verl hands an estimator only its ``algorithm`` config, but in verl's trainers that is a node of the run's OmegaConf
config, which keeps a link to the whole config: :func:`root_config` follows it to read the actor's
``loss_agg_mode`` and the ``dapo`` reward manager's overlong-buffer settings.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dipo.core import DiPOCoreConfig
from dipo.core.config import CORE_OPTIONS
from dipo.core.options import parse_bool
from dipo.integrations._kit.logprobs import ppl_source_option
from dipo.integrations._kit.rewards import OverlongPenalty

#: ``log_probs`` choices, named as TRL's ``dipo_ppl_source`` (``dipo.integrations._kit.logprobs``): "auto" uses "old"
#: (``old_log_probs``: π_old, recomputed by the actor before the update) and falls back to "sampling"
#: (``rollout_log_probs``: the inference engine's sampler log-probs); the others require that key. The earlier values
#: "old_log_probs" / "rollout_log_probs" still work (with a one-time FutureWarning).
LOG_PROB_SOURCES = ("auto", "old", "sampling")

#: ``verifier_key`` values with a fixed meaning; any other value names a per-row field of ``data.non_tensor_batch``
#: (e.g. ``acc``, which verl's ``dapo`` reward manager fills from the reward function's result in the legacy trainer).
#: "auto": verl's score (``token_level_scores``, else ``token_level_rewards``, summed over the row) minus the DAPO
#: soft overlong penalty when the run uses verl's ``dapo`` reward manager with its overlong buffer on — the pure
#: verifier reward, in the score's own scale, exactly what the TRL integration uses — and the score otherwise.
#: "score": the score as is (the overlong penalty, if any, included).
VERIFIER_KEYS = ("auto", "score")

#: verl's ``actor_rollout_ref.actor.loss_agg_mode`` values and what their loss normaliser counts
#: (``core_algos.agg_loss`` in verl 0.9.1): tokens of the mini-batch for "token-mean" (``batch_num_tokens``), its rows
#: for the seq-mean modes (``global_batch_size``), nothing for "token-sum" (a plain sum).
LOSS_AGG_UNITS: dict[str, str | None] = {
    "token-mean": "tokens",
    "seq-mean-token-sum": "rows",
    "seq-mean-token-mean": "rows",
    "seq-mean-token-sum-norm": "rows",
    "token-sum": None,
}

#: DiPOCoreConfig fields that the verl adapter derives from verl's GRPO settings instead of ``algorithm.dipo``.
DERIVED_FIELDS = ("scale_rewards", "std", "std_eps")

#: verl's GRPO epsilon if it cannot be read from ``compute_grpo_outcome_advantage``'s signature.
VERL_GRPO_EPSILON_FALLBACK = 1e-6


def config_get(config: Any, key: str, default: Any = None) -> Any:
    """``config[key]`` for an OmegaConf ``DictConfig``, a verl ``BaseConfig`` dataclass, a dict, or ``None``."""
    if config is None:
        return default
    if isinstance(config, Mapping) or hasattr(config, "get"):
        try:
            return config.get(key, default)
        except Exception:  # a frozen dataclass without Mapping support
            pass
    return getattr(config, key, default)


def root_config(algorithm_config: Any) -> Any:
    """The run's whole config that verl's ``algorithm`` config node belongs to, or ``None`` if not reachable.

    verl's trainers pass ``config.algorithm``, an OmegaConf node that keeps a link to the full config (also after
    pickling into a Ray actor). A stand-alone config (a dict, verl's ``AlgoConfig`` dataclass, an OmegaConf config
    holding only the algorithm keys) has none.
    """
    get_root = getattr(algorithm_config, "_get_root", None)
    if not callable(get_root):
        return None
    try:
        root = get_root()
    except Exception:  # not an OmegaConf node after all
        return None
    if root is algorithm_config or config_get(root, "algorithm") is None:
        return None
    return root


def _plain(value: Any) -> Any:
    """OmegaConf containers to plain Python containers (no-op for everything else)."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf ships with verl
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def verl_grpo_epsilon() -> float:
    """The ``epsilon`` default of verl's own ``compute_grpo_outcome_advantage`` (1e-6 in verl 0.9)."""
    from verl.trainer.ppo import core_algos

    param = inspect.signature(core_algos.compute_grpo_outcome_advantage).parameters.get("epsilon")
    if param is None or not isinstance(param.default, float):
        return VERL_GRPO_EPSILON_FALLBACK
    return param.default


#: The plugin's v1 trainer modes (``trainer.py`` registers them); their replay buffer runs the DiPO-aware group filter.
DIPO_TRAINER_MODES = ("dipo_sync", "dipo_colocate_async", "dipo_separate_async")


def filter_groups_enabled(algorithm_config: Any) -> bool:
    """Whether DAPO's dynamic sampling (``algorithm.filter_groups.enable``) is on."""
    filter_groups = config_get(algorithm_config, "filter_groups")
    return filter_groups is not None and bool(config_get(filter_groups, "enable", False))


def check_filter_groups(algorithm_config: Any) -> None:
    """Spec §7: dynamic sampling must never drop a group that BRR reallocated.

    verl's own filter (the v1 ``ReplayBuffer``) drops every zero-variance group — exactly the groups DiPO reallocates
    — so ``filter_groups.enable=True`` is accepted only where the DiPO-aware filter replaces it: verl's v1 trainer
    (``trainer.use_v1=True``) in a ``dipo_*`` trainer mode with verl's built-in sampler (``dynamic_sampling.py``).
    """
    if not filter_groups_enabled(algorithm_config):
        return
    root = root_config(algorithm_config)
    head = (
        "algorithm.filter_groups.enable=True is incompatible with algorithm.adv_estimator=dipo unless the DiPO-aware "
        "filter runs (it keeps the zero-variance groups BRR reallocates, which verl's own filter drops, spec §7)"
    )
    if root is None:
        raise ValueError(
            f"{head}, and this estimator cannot see the run's trainer config. Run verl's v1 trainer with "
            "trainer.v1.trainer_mode=dipo_sync (or dipo_colocate_async / dipo_separate_async), or set "
            "algorithm.filter_groups.enable=False."
        )
    trainer = config_get(root, "trainer")
    v1 = config_get(trainer, "v1")
    mode = config_get(v1, "trainer_mode")
    legacy = not bool(config_get(trainer, "use_v1", True))
    if legacy or mode not in DIPO_TRAINER_MODES:
        where = (
            "the legacy trainer (trainer.use_v1=False: verl 0.9.1's has no dynamic sampling, the DAPO trainer of "
            "verl-recipe drops those groups)"
            if legacy
            else f"trainer.v1.trainer_mode={mode}, whose filter drops those groups"
        )
        raise ValueError(
            f"{head}; this run uses {where}. Set trainer.use_v1=True and "
            "trainer.v1.trainer_mode=dipo_sync (or dipo_colocate_async / dipo_separate_async), or "
            "algorithm.filter_groups.enable=False."
        )
    custom = config_get(config_get(config_get(v1, "sampler"), "custom_sampler"), "path")
    if custom:
        raise ValueError(
            f"{head}; trainer.v1.sampler.custom_sampler.path={custom!r} replaces verl's replay buffer, so the DiPO "
            "filter cannot run. Drop the custom sampler or set algorithm.filter_groups.enable=False."
        )


@dataclass(frozen=True)
class DiPOVerlOptions:
    """The DiPO configuration of a verl run: the core config, the log-prob source, the verifier-reward source and
    the actor's loss aggregation (``None`` if unknown; needed only by ``realloc_normalizer="separate"``)."""

    core: DiPOCoreConfig
    log_probs: str = "auto"
    verifier_key: str = "auto"
    loss_agg_mode: str | None = None
    overlong: OverlongPenalty | None = None

    def key(self) -> tuple:
        """Hashable identity of the options (the estimator keeps one DiPO state per distinct configuration)."""
        return (
            *sorted(self.core.to_dict().items()),
            ("log_probs", self.log_probs),
            ("verifier_key", self.verifier_key),
            ("loss_agg_mode", self.loss_agg_mode),
            ("overlong", self.overlong),
        )

    @property
    def count_tokens(self) -> bool:
        """Whether the actor's loss normaliser counts tokens (``token-mean``) rather than rows (the seq-mean modes):
        the unit of ``realloc_normalizer="separate"``'s ``N_all / N_realloc`` (spec §7)."""
        return self.loss_agg_mode is None or LOSS_AGG_UNITS[self.loss_agg_mode] == "tokens"


def allowed_option_names() -> tuple[str, ...]:
    return (
        *(name for name in CORE_OPTIONS if name not in DERIVED_FIELDS),
        "log_probs",
        "verifier_key",
        "loss_agg_mode",
    )


def verl_option_name(name: str) -> str:
    """How a verl user spells the DiPO option ``name``: ``algorithm.dipo.<name>``."""
    return f"algorithm.dipo.{name}"


def resolve_loss_agg_mode(option: Any, root: Any) -> str | None:
    """The actor's ``loss_agg_mode``: ``+algorithm.dipo.loss_agg_mode`` if set, else the run config's
    ``actor_rollout_ref.actor.loss_agg_mode``; ``None`` if neither is known. Both set and different: an error."""
    actor = config_get(config_get(root, "actor_rollout_ref"), "actor")
    from_actor = config_get(actor, "loss_agg_mode")
    for name, value in (
        ("algorithm.dipo.loss_agg_mode", option),
        ("actor_rollout_ref.actor.loss_agg_mode", from_actor),
    ):
        if value is not None and value not in LOSS_AGG_UNITS:
            raise ValueError(f"unknown {name}={value!r}; verl's loss_agg_mode is one of {', '.join(LOSS_AGG_UNITS)}.")
    if option is not None and from_actor is not None and option != from_actor:
        raise ValueError(
            f"algorithm.dipo.loss_agg_mode={option!r} but actor_rollout_ref.actor.loss_agg_mode={from_actor!r}; "
            "DiPO must use the actor's loss aggregation: drop +algorithm.dipo.loss_agg_mode (it is read from the "
            "actor config) or make the two equal."
        )
    return option if option is not None else from_actor


def check_separate_normalizer(core: DiPOCoreConfig, loss_agg_mode: str | None) -> None:
    """``realloc_normalizer="separate"`` rescales α·A^r by ``N_all / N_realloc`` counted in the unit the actor's loss
    divides by (spec §7), so it needs the loss aggregation; "token-sum" divides by nothing."""
    if core.realloc_normalizer != "separate":
        return
    if loss_agg_mode is None:
        raise ValueError(
            "algorithm.dipo.realloc_normalizer='separate' counts the second objective's own normaliser in the unit "
            "the actor's loss divides by (tokens for token-mean, responses for the seq-mean-* modes), but the actor's "
            "loss_agg_mode is not reachable from the algorithm config this estimator received. Set "
            "+algorithm.dipo.loss_agg_mode=<actor_rollout_ref.actor.loss_agg_mode> (e.g. token-mean)."
        )
    if LOSS_AGG_UNITS[loss_agg_mode] is None:
        raise ValueError(
            f"algorithm.dipo.realloc_normalizer='separate' has no meaning with loss_agg_mode={loss_agg_mode!r}: that "
            "loss is a plain sum with no normaliser to separate. Use realloc_normalizer='shared'."
        )


def dapo_overlong_penalty(root: Any) -> OverlongPenalty | None:
    """The overlong penalty verl's ``dapo`` reward manager adds to every score, from the run config's ``reward``
    block (``reward_manager.name=dapo``, ``reward_kwargs.overlong_buffer_cfg.enable=True``); ``None`` otherwise."""
    reward = config_get(root, "reward")
    manager = config_get(reward, "reward_manager")
    if config_get(manager, "name") != "dapo" or config_get(manager, "source", "register") not in (None, "register"):
        return None
    kwargs = config_get(reward, "reward_kwargs")
    buffer = config_get(kwargs, "overlong_buffer_cfg")
    if buffer is None or not bool(config_get(buffer, "enable", False)):
        return None
    settings = {
        "reward.reward_kwargs.max_resp_len": config_get(kwargs, "max_resp_len"),
        "reward.reward_kwargs.overlong_buffer_cfg.len": config_get(buffer, "len"),
        "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor": config_get(buffer, "penalty_factor"),
    }
    missing = [name for name, value in settings.items() if value is None]
    if missing:
        raise ValueError(
            f"verl's dapo reward manager has its overlong buffer on but {', '.join(missing)} is not set; DiPO needs "
            "it to take the overlong penalty out of the verifier reward (or set +algorithm.dipo.verifier_key=score)."
        )
    max_resp_len, buffer_len, factor = settings.values()
    if int(buffer_len) <= 0:
        raise ValueError(f"reward.reward_kwargs.overlong_buffer_cfg.len must be > 0, got {buffer_len}.")
    return OverlongPenalty(int(max_resp_len), int(buffer_len), float(factor))


def parse_dipo_options(algorithm_config: Any) -> DiPOVerlOptions:
    """Build :class:`DiPOVerlOptions` from verl's ``algorithm`` config (its ``dipo`` sub-config may be absent).

    Raises ``ValueError`` on unknown keys, on keys that verl's GRPO settings determine, on invalid values (via
    :class:`DiPOCoreConfig`), if DAPO's group filter is on without the DiPO-aware filter (:func:`check_filter_groups`),
    and for ``realloc_normalizer="separate"`` without a known (or with a normaliser-free) loss aggregation.
    """
    check_filter_groups(algorithm_config)
    raw = _plain(config_get(algorithm_config, "dipo"))
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"algorithm.dipo must be a mapping of DiPO options (e.g. +algorithm.dipo.alpha=0.1), got {raw!r}."
        )
    options = dict(raw)
    fixed = sorted(set(options) & set(DERIVED_FIELDS))
    if fixed:
        raise ValueError(
            f"algorithm.dipo.{fixed[0]} cannot be set for verl: the advantage normalisation follows verl's GRPO "
            "(unbiased std per uid group, epsilon 1e-6); use algorithm.norm_adv_by_std_in_grpo=True|False instead."
        )
    unknown = sorted(set(options) - set(allowed_option_names()))
    if unknown:
        raise ValueError(
            f"unknown DiPO option(s) {', '.join(map(verl_option_name, unknown))}; "
            f"valid options: {', '.join(allowed_option_names())}."
        )
    log_probs = ppl_source_option(options.pop("log_probs", "auto"), "algorithm.dipo.log_probs", LOG_PROB_SOURCES)
    verifier_key = options.pop("verifier_key", "auto")
    if not isinstance(verifier_key, str) or not verifier_key:
        raise ValueError(
            f"algorithm.dipo.verifier_key must be 'auto', 'score' or the name of a per-row reward field such as "
            f"'acc', got {verifier_key!r}."
        )
    root = root_config(algorithm_config)
    loss_agg_mode = resolve_loss_agg_mode(options.pop("loss_agg_mode", None), root)
    norm_by_std = parse_bool(
        "algorithm.norm_adv_by_std_in_grpo", config_get(algorithm_config, "norm_adv_by_std_in_grpo", True)
    )
    grpo = {"scale_rewards": "group" if norm_by_std else "none", "std": "unbiased", "std_eps": verl_grpo_epsilon()}
    core = DiPOCoreConfig.from_options({**options, **grpo}, name=verl_option_name, text=True)
    check_separate_normalizer(core, loss_agg_mode)
    return DiPOVerlOptions(
        core=core,
        log_probs=log_probs,
        verifier_key=verifier_key,
        loss_agg_mode=loss_agg_mode,
        overlong=dapo_overlong_penalty(root) if verifier_key == "auto" else None,
    )
