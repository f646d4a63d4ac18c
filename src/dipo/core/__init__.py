"""``dipo.core``: the DiPO algorithm on plain tensors (no TRL/verl imports), CPU or GPU.

Spec sections refer to ``docs/algorithm.md`` (the project's DiPO spec):

- §3 :func:`sequence_log_ppl`
- §4 :class:`PPLQueue`
- §5 :func:`find_threshold`, :func:`judge`, :func:`quadrant_labels`
- §6 :func:`reallocate` (returns a :class:`Reallocation`; ``reallocate_detailed`` is a deprecated alias); its choice
  tables ``MEMBERSHIP_RULES`` (:func:`in_space`), ``SELECTION_RULES`` (:func:`select_max_ppl`, :func:`select_random`)
- §7 :func:`group_advantages`, :func:`fold_advantages`, :func:`realloc_scale`
- §7 (DAPO's dynamic sampling, DiPO-aware) :func:`groups_to_keep`
- §11 (baselines) :func:`perplexity_bonus`, :func:`perplexity_bonus_delta`
- the whole step: :class:`DiPO` with :class:`DiPOCoreConfig` (validates its inputs once, at entry)
"""

from dipo.core.advantages import fold_advantages, group_advantages, realloc_scale
from dipo.core.baselines import PerplexityBonusDelta, perplexity_bonus, perplexity_bonus_delta
from dipo.core.brr import (
    MEMBERSHIP_RULES,
    SELECTION_RULES,
    Reallocation,
    in_space,
    reallocate,
    reallocate_detailed,
    select_max_ppl,
    select_random,
)
from dipo.core.config import DiPOCoreConfig
from dipo.core.dipo import DiPO, DiPOStepOutput
from dipo.core.dynamic_sampling import groups_to_keep
from dipo.core.groups import GroupType, classify_groups, correctness, zero_variance_groups
from dipo.core.judgment import Judgment, judge, wilson_interval
from dipo.core.perplexity import sequence_log_ppl
from dipo.core.quadrants import Quadrant, quadrant_labels
from dipo.core.queue import PPLQueue
from dipo.core.threshold import THRESHOLD_RULES, find_threshold, threshold_error

__all__ = [
    "MEMBERSHIP_RULES",
    "SELECTION_RULES",
    "THRESHOLD_RULES",
    "DiPO",
    "DiPOCoreConfig",
    "DiPOStepOutput",
    "GroupType",
    "Judgment",
    "PPLQueue",
    "PerplexityBonusDelta",
    "Quadrant",
    "Reallocation",
    "classify_groups",
    "correctness",
    "find_threshold",
    "fold_advantages",
    "group_advantages",
    "groups_to_keep",
    "in_space",
    "judge",
    "perplexity_bonus",
    "perplexity_bonus_delta",
    "quadrant_labels",
    "realloc_scale",
    "reallocate",
    "reallocate_detailed",
    "select_max_ppl",
    "select_random",
    "sequence_log_ppl",
    "threshold_error",
    "wilson_interval",
    "zero_variance_groups",
]
