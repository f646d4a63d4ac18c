"""The DiPO state file (spec §4: the PPL queue is saved with checkpoints), one format for every adapter.

One file name (:data:`DIPO_STATE_NAME`), one payload (:func:`state_payload`: the core's ``DiPO.state_dict()`` plus
``format``, ``ppl_source`` and ``global_step``; :func:`core_state` also reads the two formats of earlier releases),
:func:`save_dipo_state` / :func:`restore_dipo_state` for the adapters, one atomic writer (:func:`save_state_file`:
temporary file + ``os.replace``, so a crash never leaves a half-written state behind), one reader
(:func:`load_state_file`) whose errors name the file and say how to proceed, and :func:`check_resumed_config`, which
compares the core options a queue was built with to the resuming run's.
"""

from __future__ import annotations

import math
import os
import pickle
import tempfile
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch

#: File name of the DiPO state (the PPL queue) inside every checkpoint folder (TRL ``checkpoint-N``, verl
#: ``global_step_N``).
DIPO_STATE_NAME = "dipo_state.pt"

#: Core options that define what the queue's labels (and its length) mean: resuming with another value would mix
#: labels of two meanings in one queue, so it is refused.
QUEUE_MEANING_OPTIONS: tuple[str, ...] = ("reward_mode", "correct_threshold", "queue_batches")


#: Version of the payload written by :func:`state_payload`.
STATE_FORMAT = 1


def state_path(folder: str | os.PathLike[str]) -> str:
    """``<folder>/dipo_state.pt``."""
    return os.path.join(os.fspath(folder), DIPO_STATE_NAME)


def save_state_file(payload: Mapping[str, Any], folder: str | os.PathLike[str]) -> str:
    """Write ``payload`` to ``<folder>/dipo_state.pt`` atomically and return the path.

    The bytes go to a temporary file in the same folder first, which then replaces the target with ``os.replace``
    (atomic on POSIX and Windows): a job killed while saving leaves either the previous file or the new one.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    path = state_path(folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{DIPO_STATE_NAME}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(dict(payload), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def state_file_error(path: str, problem: str) -> ValueError:
    """A ``ValueError`` naming ``path``, what is wrong with it and the two ways forward."""
    return ValueError(
        f"DiPO state file {path} {problem}. It is written once per checkpoint; a job killed while saving, a full "
        "disk or a partial copy leaves it empty or truncated. To proceed, either resume from another (earlier) "
        f"checkpoint, or delete {path} to resume with an empty PPL queue (with TRL also set "
        "dipo_resume_empty_queue=True; a warning says so; the queue refills within `queue_batches` steps and DiPO is "
        "the base method until the threshold has data)."
    )


def load_state_file(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Read ``<folder>/dipo_state.pt``; ``None`` if there is no such file.

    Raises:
        ValueError: the file is empty, truncated, corrupt or not a DiPO state (a dict); the message names the file and
            says how to proceed.
    """
    path = state_path(folder)
    if not os.path.exists(path):
        return None
    if os.path.getsize(path) == 0:
        raise state_file_error(path, "is empty (0 bytes)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, ValueError, OSError) as err:
        raise state_file_error(path, f"cannot be read ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict):
        raise state_file_error(path, f"does not hold a DiPO state (a dict), but a {type(payload).__name__}")
    return payload


def restore_from_file(path: str, load: Callable[[Any], None], state: Any) -> None:
    """Call ``load(state)``; a ``ValueError``/``KeyError``/``TypeError``/``RuntimeError`` (a malformed state) is
    re-raised naming ``path`` and how to proceed."""
    try:
        load(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise state_file_error(path, f"holds a malformed DiPO state ({err})") from err


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _same_binary_labels(key: str, saved: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """A changed ``correct_threshold`` keeps the labels of 0/1 rewards when both runs are binary and both thresholds
    lie in (0, 1] (then "correct" means reward 1 either way)."""
    if key != "correct_threshold" or saved.get("reward_mode") != "binary" or current.get("reward_mode") != "binary":
        return False
    try:
        return 0 < float(saved[key]) <= 1 and 0 < float(current[key]) <= 1
    except (TypeError, ValueError):
        return False


def check_resumed_config(
    saved: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    path: str,
    option_name: Callable[[str], str] = str,
    refuse: tuple[str, ...] = QUEUE_MEANING_OPTIONS,
) -> list[str]:
    """Compare the core config a saved queue was built with (``DiPO.state_dict()["config"]``) to the resuming run's.

    * Options in ``refuse`` (default: ``reward_mode``, ``correct_threshold``, ``queue_batches``) decide what the
      queue's correct/wrong labels mean: a difference raises a ``ValueError`` naming both values and how to proceed
      (except a ``correct_threshold`` change within (0, 1] between two binary runs, which keeps every label).
    * Any other difference (``alpha``, ``membership``, ``judgment``, ...) only changes what DiPO does with the queue
      from now on: a ``UserWarning`` lists the changes.

    Args:
        saved: the saved config dict (``None``: states written before the config was saved; nothing is checked).
        current: ``DiPO.config.to_dict()`` of the resuming run.
        path: the state file (named in the messages).
        option_name: maps a core option name to the name users set (e.g. ``alpha`` -> ``dipo_alpha``).
        refuse: the options whose change is refused.

    Returns:
        The names (as ``option_name`` gives them) of the options that changed and were accepted.
    """
    if saved is None:
        return []
    changed = [key for key in current if key in saved and not _same(saved[key], current[key])]
    refused = [key for key in changed if key in refuse and not _same_binary_labels(key, saved, current)]
    if refused:
        details = "; ".join(f"{option_name(k)}={saved[k]!r} when saved, {current[k]!r} now" for k in refused)
        raise ValueError(
            f"cannot resume the DiPO PPL queue from {path}: {details}. The queue holds correct/wrong labels decided "
            "with the saved setting, so mixing them with new ones would make the threshold and the judgment "
            "meaningless. To proceed, either resume with the saved value(s) "
            f"({', '.join(f'{option_name(k)}={saved[k]!r}' for k in refused)}), or delete {path} to resume with an "
            "empty PPL queue under the new setting (it refills within `queue_batches` steps)."
        )
    accepted = [option_name(k) for k in changed]
    if accepted:
        details = ", ".join(f"{option_name(k)}: {saved[k]!r} -> {current[k]!r}" for k in changed)
        message = (
            f"dipo: resuming from {path} with changed DiPO options ({details}). The PPL queue is kept (its labels "
            "mean the same); the new options apply from the next step."
        )
        warnings.warn(message, UserWarning, stacklevel=3)
    return accepted


def state_payload(core_state: Mapping[str, Any], ppl_source: str, global_step: int | None) -> dict[str, Any]:
    """The saved state: ``DiPO.state_dict()`` (``queue``, ``config``, ``generator``) and the step's metadata."""
    return {**core_state, "format": STATE_FORMAT, "ppl_source": ppl_source, "global_step": global_step}


def core_state(payload: Mapping[str, Any], path: str) -> dict[str, Any]:
    """The core's part of a payload: the current format and TRL's earlier one (the core's state dict itself), or
    verl's earlier one (``{"dipo": <core state>, "log_probs": ..., "global_step": ...}``)."""
    if "queue" not in payload and isinstance(payload.get("dipo"), dict):
        return payload["dipo"]
    if "queue" not in payload:
        raise state_file_error(path, "is not a DiPO state (it has no 'queue')")
    return dict(payload)


def save_dipo_state(core: Any, folder: str | os.PathLike[str], ppl_source: str, global_step: int | None) -> str:
    """Spec §4: write ``core``'s (a ``dipo.core.DiPO``) PPL queue to ``<folder>/dipo_state.pt`` atomically."""
    return save_state_file(state_payload(core.state_dict(), ppl_source, global_step), folder)


def restore_dipo_state(
    core: Any, folder: str | os.PathLike[str], option_name: Callable[[str], str] = str
) -> str | None:
    """Spec §4: restore ``core``'s PPL queue from ``<folder>/dipo_state.pt``; the path, or ``None`` if absent.

    An unreadable file, or a changed option that gives the queue's labels another meaning, raises a ``ValueError``
    naming the file and how to proceed (:func:`check_resumed_config`; ``option_name`` spells options as the user
    sets them); other changed options warn."""
    payload = load_state_file(folder)
    if payload is None:
        return None
    path = state_path(folder)
    state = core_state(payload, path)
    saved_config = state.get("config")
    check_resumed_config(
        saved_config if isinstance(saved_config, dict) else None, core.config.to_dict(), path, option_name
    )
    restore_from_file(path, core.load_state_dict, state)
    return path


__all__ = [
    "DIPO_STATE_NAME",
    "QUEUE_MEANING_OPTIONS",
    "STATE_FORMAT",
    "check_resumed_config",
    "core_state",
    "load_state_file",
    "restore_dipo_state",
    "restore_from_file",
    "save_dipo_state",
    "save_state_file",
    "state_file_error",
    "state_path",
    "state_payload",
]
