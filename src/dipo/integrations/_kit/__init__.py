"""The adapter kit: everything a framework adapter (TRL, verl, a third one) shares, framework-free (torch + stdlib;
``dipo.core``).

* :mod:`.step` — :class:`StepInputs` the adapter fills, :func:`run_step`, :func:`step_metrics` (one ``dipo/*`` set);
* :mod:`.logprobs` — the log-prob source option (``auto`` / ``old`` / ``sampling`` / ``forward``) and its policy;
* :mod:`.rewards` — the verifier reward R, with DAPO's overlong shaping taken out (:class:`~.rewards.OverlongPenalty`),
  and which verifier column makes R unusable; :mod:`.reward_funcs` — reward functions' outputs checked;
* :mod:`.state` — the ``dipo_state.pt`` format (save / restore, earlier formats still read);
* :mod:`.versions` — the framework version check (needs ``packaging``, which every framework installs);
* :mod:`.layout` — the framework's rows to contiguous groups and back; :mod:`.dynamic_sampling` — the DiPO-aware
  keep rule, the batch selection and the queue of the kept groups; :mod:`.registry` — idempotent plugin registration.

The contract is written up in ``docs/integrating.md``; ``tests/test_adapter_conformance.py`` checks every adapter.
"""

from dipo.integrations._kit.logprobs import LEGACY_PPL_SOURCES, PPL_SOURCES, choose_log_probs, ppl_source_option
from dipo.integrations._kit.rewards import (
    VerifierRewards,
    compose_verifier_rewards,
    infinite_verifier_value,
    non_binary_verifier_reward,
)
from dipo.integrations._kit.state import (
    DIPO_STATE_NAME,
    core_state,
    restore_dipo_state,
    save_dipo_state,
    state_payload,
)
from dipo.integrations._kit.step import (
    DS_METRICS,
    StepInputs,
    StepResult,
    base_advantages,
    ds_metrics,
    run_step,
    step_metrics,
)

__all__ = [
    "DIPO_STATE_NAME",
    "DS_METRICS",
    "LEGACY_PPL_SOURCES",
    "PPL_SOURCES",
    "StepInputs",
    "StepResult",
    "VerifierRewards",
    "base_advantages",
    "choose_log_probs",
    "compose_verifier_rewards",
    "core_state",
    "ds_metrics",
    "infinite_verifier_value",
    "non_binary_verifier_reward",
    "ppl_source_option",
    "restore_dipo_state",
    "run_step",
    "save_dipo_state",
    "state_payload",
    "step_metrics",
]
