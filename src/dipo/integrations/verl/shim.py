"""Pass verl's batch (with ``old_log_probs``) to the ``dipo`` estimator until verl does it itself.

verl's ``compute_advantage`` (``verl/trainer/ppo/ray_trainer.py``) is the single call site of advantage estimators for
the v0 and v1 trainers. Up to verl 0.9.1 it forwards only ``token_level_rewards``, ``response_mask``, ``config``,
``index`` and ``reward_baselines`` to a custom estimator — the batch (and so the log-probs DiPO needs for the
perplexity, spec §3) reaches only the built-in GDPO / OTB estimators. Open PR verl-project/verl#7473 forwards
``batch`` / ``non_tensor_batch`` to every estimator that accepts them.

The gate is a behavioural probe, not a version guess: :func:`verl_passes_batch` calls verl's own ``compute_advantage``
with a throw-away estimator and checks whether it received the batch. Only if it did not is the shim installed: it
wraps ``compute_advantage`` so that, for ``adv_estimator == "dipo"``, the ``DataProto`` is visible to the estimator
through :func:`current_batch` (and its per-row extras through ``current_non_tensor_batch``; both live in the leaf
module ``context.py``) during the call. Everything else in verl's code path is unchanged. Modules that imported
``compute_advantage`` by name (``verl.trainer.ppo.v1.utils``) are re-pointed to the wrapper.
"""

from __future__ import annotations

import functools
import logging
import sys
import uuid
from collections.abc import Callable
from typing import Any

from dipo.integrations.verl.context import current_batch, exposing_data, is_dipo_estimator  # noqa: F401 (re-export)

logger = logging.getLogger(__name__)

_SHIM_ATTR = "__dipo_shim__"
_SHIM_STATE: dict[str, Any] = {"installed": False, "verl_passes_batch": None, "patched_modules": []}


def wrap_compute_advantage(compute_advantage: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap verl's ``compute_advantage(data, adv_estimator, ...)`` to expose ``data`` to the dipo estimator."""
    if getattr(compute_advantage, _SHIM_ATTR, False):
        return compute_advantage

    @functools.wraps(compute_advantage)
    def compute_advantage_with_batch(data: Any, adv_estimator: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_dipo_estimator(adv_estimator):
            return compute_advantage(data, adv_estimator, *args, **kwargs)
        with exposing_data(data):
            return compute_advantage(data, adv_estimator, *args, **kwargs)

    setattr(compute_advantage_with_batch, _SHIM_ATTR, True)
    return compute_advantage_with_batch


def verl_passes_batch(compute_advantage: Callable[..., Any] | None = None) -> bool:
    """Whether ``compute_advantage`` forwards ``batch`` to a custom estimator that accepts it (verl PR #7473).

    Runs verl's function once on a two-row ``DataProto`` with a temporary estimator, then removes that estimator.
    """
    import numpy as np
    import torch
    from verl import DataProto
    from verl.trainer.ppo import core_algos

    if compute_advantage is None:
        from verl.trainer.ppo import ray_trainer

        compute_advantage = ray_trainer.compute_advantage
    compute_advantage = getattr(compute_advantage, "__wrapped__", compute_advantage)
    received: dict[str, bool] = {}
    name = f"_dipo_probe_{uuid.uuid4().hex}"

    def probe(token_level_rewards, response_mask, config=None, batch=None, non_tensor_batch=None, **kwargs):
        received["batch"] = batch is not None
        zeros = torch.zeros_like(token_level_rewards)
        return zeros, zeros

    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": torch.zeros(2, 1),
            "response_mask": torch.ones(2, 1),
            "old_log_probs": torch.zeros(2, 1),
        },
        non_tensors={"uid": np.array(["a", "a"], dtype=object)},
    )
    core_algos.ADV_ESTIMATOR_REGISTRY[name] = probe
    try:
        compute_advantage(data, name, config=None)
    except Exception as err:  # a future verl may reject the probe: then assume it does not pass the batch
        logger.debug("dipo: probing verl's compute_advantage failed (%s); installing the batch shim", err)
        return False
    finally:
        core_algos.ADV_ESTIMATOR_REGISTRY.pop(name, None)
    return received.get("batch", False)


def install_shim(force: bool = False) -> bool:
    """Install the shim unless verl already passes the batch; returns whether it is installed.

    Patches ``verl.trainer.ppo.ray_trainer.compute_advantage`` and every loaded module that imported it by name.
    """
    from verl.trainer.ppo import ray_trainer

    if _SHIM_STATE["installed"]:
        return True
    original = ray_trainer.compute_advantage
    passes = verl_passes_batch(original)
    _SHIM_STATE["verl_passes_batch"] = passes
    if passes and not force:
        return False
    wrapped = wrap_compute_advantage(original)
    patched = []
    for module_name, module in list(sys.modules.items()):
        if module_name.startswith("verl.") and getattr(module, "compute_advantage", None) is original:
            module.compute_advantage = wrapped
            patched.append(module_name)
    _SHIM_STATE.update(installed=True, patched_modules=patched)
    return True


def uninstall_shim() -> None:
    """Undo :func:`install_shim` in every loaded verl module (tests)."""
    for module_name, module in list(sys.modules.items()):
        fn = getattr(module, "compute_advantage", None) if module_name.startswith("verl.") else None
        if fn is not None and getattr(fn, _SHIM_ATTR, False):
            module.compute_advantage = fn.__wrapped__
    _SHIM_STATE.update(installed=False, patched_modules=[])


def shim_status() -> dict[str, Any]:
    """``installed``, ``verl_passes_batch`` (the probe's answer) and ``patched_modules``."""
    return dict(_SHIM_STATE)
