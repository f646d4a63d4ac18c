"""DiPO options of a verl run, read from the ``algorithm`` config (``+algorithm.dipo.<name>=...``).

The DiPO options are :class:`dipo.core.DiPOCoreConfig`'s fields (same names, same defaults) plus ``log_probs``, which
says where the per-token log-probs for the log-PPL (spec §3) come from. The advantage normalisation is *not* a DiPO
option here: it follows verl's own GRPO (spec §7 [choice: std normalisation as in the base config]), i.e. the
unbiased ``torch.std`` of each uid group plus verl's epsilon (1e-6), and no division by the std when
``algorithm.norm_adv_by_std_in_grpo=False`` (Dr.GRPO).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dipo.core import DiPOCoreConfig

#: ``log_probs`` choices: "auto" uses ``old_log_probs`` (π_old, recomputed by the actor before the update) and falls
#: back to ``rollout_log_probs`` (the inference engine's sampler log-probs); the others require that key.
LOG_PROB_SOURCES = ("auto", "old_log_probs", "rollout_log_probs")

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


def check_filter_groups_disabled(algorithm_config: Any) -> None:
    """Spec §7: DAPO's dynamic sampling drops zero-variance groups — exactly the groups DiPO reallocates."""
    filter_groups = config_get(algorithm_config, "filter_groups")
    if filter_groups is not None and bool(config_get(filter_groups, "enable", False)):
        raise ValueError(
            "algorithm.filter_groups.enable=True is incompatible with algorithm.adv_estimator=dipo: DAPO's dynamic "
            "sampling drops every zero-variance (all-correct / all-wrong) group before the advantage is computed, "
            "and those are exactly the groups DiPO reallocates (spec §6-§7). Set algorithm.filter_groups.enable=False."
        )


@dataclass(frozen=True)
class DiPOVerlOptions:
    """The DiPO configuration of a verl run: the core config plus the log-prob source."""

    core: DiPOCoreConfig
    log_probs: str = "auto"

    def key(self) -> tuple:
        """Hashable identity of the options (the estimator keeps one DiPO state per distinct configuration)."""
        return (*sorted(self.core.to_dict().items()), ("log_probs", self.log_probs))


def allowed_option_names() -> tuple[str, ...]:
    core_fields = [f.name for f in dataclasses.fields(DiPOCoreConfig) if f.name not in DERIVED_FIELDS]
    return (*core_fields, "log_probs")


def parse_dipo_options(algorithm_config: Any) -> DiPOVerlOptions:
    """Build :class:`DiPOVerlOptions` from verl's ``algorithm`` config (its ``dipo`` sub-config may be absent).

    Raises ``ValueError`` on unknown keys, on keys that verl's GRPO settings determine, on invalid values (via
    :class:`DiPOCoreConfig`), and if DAPO's group filter is on.
    """
    check_filter_groups_disabled(algorithm_config)
    raw = _plain(config_get(algorithm_config, "dipo"))
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ValueError(
            f"algorithm.dipo must be a mapping of DiPO options (e.g. +algorithm.dipo.alpha=0.1), got {raw!r}."
        )
    options = dict(raw)
    derived = sorted(set(options) & set(DERIVED_FIELDS))
    if derived:
        raise ValueError(
            f"algorithm.dipo.{derived[0]} cannot be set for verl: the advantage normalisation follows verl's GRPO "
            "(unbiased std per uid group, epsilon 1e-6); use algorithm.norm_adv_by_std_in_grpo=True|False instead."
        )
    unknown = sorted(set(options) - set(allowed_option_names()))
    if unknown:
        raise ValueError(
            f"unknown DiPO option(s) algorithm.dipo.{', algorithm.dipo.'.join(unknown)}; "
            f"valid options: {', '.join(allowed_option_names())}."
        )
    log_probs = options.pop("log_probs", "auto")
    if log_probs not in LOG_PROB_SOURCES:
        raise ValueError(
            f"unknown algorithm.dipo.log_probs={log_probs!r}; choose one of {', '.join(map(repr, LOG_PROB_SOURCES))}."
        )
    norm_by_std = bool(config_get(algorithm_config, "norm_adv_by_std_in_grpo", True))
    core = DiPOCoreConfig(
        **options,
        scale_rewards="group" if norm_by_std else "none",
        std="unbiased",
        std_eps=verl_grpo_epsilon(),
    )
    return DiPOVerlOptions(core=core, log_probs=log_probs)
