"""verl plugin: the ``dipo`` advantage estimator, the batch shim and the ``dipo_*`` v1 trainer modes.

Loaded by ``import verl`` through the ``verl.plugins`` entry point (or
``VERL_USE_EXTERNAL_MODULES=dipo.integrations.verl``), so ``algorithm.adv_estimator=dipo`` works in every process
that imports verl, including Ray actors. Importing it registers, in order:

1. ``@register_adv_est("dipo")`` → :func:`compute_dipo_outcome_advantage` (``estimator.py``), which runs ``dipo.core``;
2. the version-gated shim that passes the batch (log-probs) to the estimator (``shim.py``);
3. the trainer modes ``dipo_sync``, ``dipo_colocate_async``, ``dipo_separate_async`` (``trainer.py``), which log the
   ``dipo/*`` diagnostics and checkpoint the PPL queue.
"""

import logging

try:
    import verl  # noqa: F401  (inside ``import verl`` this is the partly initialised package: fine)
except ImportError as err:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "dipo.integrations.verl needs verl (tested: verl 0.9.1). Install it with: pip install 'dipo[verl]'"
    ) from err

from dipo.integrations.verl._version import TESTED_VERSION, check_verl_version

check_verl_version()

from dipo.integrations.verl.estimator import (  # noqa: E402
    ESTIMATOR_NAME,
    ESTIMATOR_STATES,
    EstimatorState,
    GroupLayout,
    compute_dipo_outcome_advantage,
    get_estimator_state,
    group_rows_by_uid,
    register_estimator,
    reset_estimator_states,
)
from dipo.integrations.verl.options import DiPOVerlOptions, parse_dipo_options  # noqa: E402
from dipo.integrations.verl.shim import current_batch, install_shim, shim_status, verl_passes_batch  # noqa: E402

register_estimator()
try:
    install_shim()
except ImportError as err:  # verl installed without its trainer stack (e.g. `pip install verl` without extras)
    raise ImportError(
        f"dipo.integrations.verl needs verl's trainer modules, which failed to import ({err}). Install verl with "
        "its core extra: pip install 'dipo[verl]' (verl[verl-core]==0.9.1)."
    ) from err
except Exception as err:  # verl swallows plugin errors at DEBUG level: say it where users look
    logging.getLogger(__name__).warning("dipo: cannot install the verl batch shim: %r", err)
    raise

from dipo.integrations.verl.trainer import (  # noqa: E402
    DIPO_STATE_NAME,
    DIPO_TRAINERS,
    DiPOTrainerColocateAsync,
    DiPOTrainerMixin,
    DiPOTrainerSeparateAsync,
    DiPOTrainerSync,
    load_dipo_state,
    register_trainers,
    save_dipo_state,
)

register_trainers()

__all__ = [
    "DIPO_STATE_NAME",
    "DIPO_TRAINERS",
    "ESTIMATOR_NAME",
    "ESTIMATOR_STATES",
    "TESTED_VERSION",
    "DiPOTrainerColocateAsync",
    "DiPOTrainerMixin",
    "DiPOTrainerSeparateAsync",
    "DiPOTrainerSync",
    "DiPOVerlOptions",
    "EstimatorState",
    "GroupLayout",
    "compute_dipo_outcome_advantage",
    "current_batch",
    "get_estimator_state",
    "group_rows_by_uid",
    "install_shim",
    "load_dipo_state",
    "parse_dipo_options",
    "reset_estimator_states",
    "save_dipo_state",
    "shim_status",
    "verl_passes_batch",
]
