"""Spec §3 [choice]: where the per-token log-probs of the sampling policy come from — one policy, one set of names.

Both adapters read the option with :func:`ppl_source_option` and pick the tensor with :func:`choose_log_probs`:

=============  ====================================================  ===================================
value          meaning                                               TRL / verl tensor
=============  ====================================================  ===================================
``auto``       ``old`` if the framework computed it, else            (default)
               ``sampling``, else ``forward`` where the adapter can
``old``        π_old recomputed by the trainer before the update     ``old_per_token_logps`` /
                                                                     ``old_log_probs``
``sampling``   the inference engine's sampler log-probs              ``sampling_per_token_logps`` /
                                                                     ``rollout_log_probs``
``forward``    one extra no-grad forward of the current policy       TRL only (verl always has ``old``)
=============  ====================================================  ===================================

The verl names of earlier releases (``old_log_probs``, ``rollout_log_probs``) are still accepted; they warn once.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

from torch import Tensor

#: The log-prob sources, in ``auto``'s order of preference after ``auto`` itself.
PPL_SOURCES: tuple[str, ...] = ("auto", "old", "sampling", "forward")

#: Earlier (verl) value names -> their name now.
LEGACY_PPL_SOURCES: dict[str, str] = {"old_log_probs": "old", "rollout_log_probs": "sampling"}

_warned: set[tuple[str, str]] = set()


def ppl_source_option(value: object, option: str, sources: tuple[str, ...] = PPL_SOURCES) -> str:
    """The log-prob source ``value`` of the user's option ``option`` (e.g. ``dipo_ppl_source``), checked.

    A legacy name is mapped to its new one with a ``FutureWarning`` (once per process and name); a value outside
    ``sources`` (the ones this framework supports) raises a ``ValueError`` naming ``option``."""
    if isinstance(value, str) and value in LEGACY_PPL_SOURCES:
        new = LEGACY_PPL_SOURCES[value]
        if (option, value) not in _warned:
            _warned.add((option, value))
            warnings.warn(
                f"dipo: {option}={value!r} is deprecated, use {option}={new!r} (the same log-probs; one set of "
                "names for TRL and verl).",
                FutureWarning,
                stacklevel=3,
            )
        value = new
    if value not in sources:
        raise ValueError(f"unknown {option}={value!r}; choose one of {', '.join(map(repr, sources))}.")
    return str(value)


def choose_log_probs(
    source: str, available: Mapping[str, Tensor | None], forward: Callable[[], Tensor] | None = None
) -> tuple[Tensor | None, str]:
    """The per-token log-probs for ``source`` and the source they came from.

    Args:
        source: a value of :data:`PPL_SOURCES` (from :func:`ppl_source_option`).
        available: ``{"old": ..., "sampling": ...}``, ``None`` where the framework did not compute them.
        forward: computes the log-probs by one extra pass (``None``: the adapter cannot).

    Returns:
        ``(tensor, name)``; the tensor is ``None`` when the chosen source is missing (the adapter raises, saying how
        to make its framework compute it).
    """
    if source == "forward" or (source == "auto" and all(available.get(k) is None for k in ("old", "sampling"))):
        if forward is not None:
            return forward(), "forward"
        return None, "sampling" if source == "auto" else source
    if source == "auto":
        name = "old" if available.get("old") is not None else "sampling"
        return available[name], name
    return available.get(source), source
