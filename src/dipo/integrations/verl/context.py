"""Leaf module of the verl plugin: the estimator's registry name and the verl batch of the call in progress.

``estimator.py`` (the ``dipo`` estimator) and ``shim.py`` (the wrapper around verl's ``compute_advantage``) both need
these names; keeping them here, in a module that imports nothing from this package, means neither of the two imports
the other.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Name of the advantage estimator in verl's registry (``algorithm.adv_estimator=dipo``).
ESTIMATOR_NAME = "dipo"

_CURRENT_DATA: contextvars.ContextVar[Any] = contextvars.ContextVar("dipo_verl_current_data", default=None)


def is_dipo_estimator(adv_estimator: Any) -> bool:
    """Whether verl's ``adv_estimator`` argument (a string or an ``AdvantageEstimator`` enum) names DiPO."""
    return getattr(adv_estimator, "value", adv_estimator) == ESTIMATOR_NAME


@contextmanager
def exposing_data(data: Any) -> Iterator[None]:
    """Make verl's ``DataProto`` ``data`` visible to :func:`current_batch` / :func:`current_non_tensor_batch`."""
    token = _CURRENT_DATA.set(data)
    try:
        yield
    finally:
        _CURRENT_DATA.reset(token)


def current_batch() -> Any:
    """``data.batch`` (tensors) of the ``compute_advantage`` call in progress (``None`` outside the shim)."""
    data = _CURRENT_DATA.get()
    return None if data is None else data.batch


def current_non_tensor_batch() -> Any:
    """``data.non_tensor_batch`` (per-row numpy arrays: ``uid``, reward extras such as ``acc``) of the call in
    progress (``None`` outside the shim)."""
    data = _CURRENT_DATA.get()
    return None if data is None else getattr(data, "non_tensor_batch", None)
