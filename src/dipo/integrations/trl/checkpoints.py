"""Which ``checkpoint-N`` folders of a TRL run are complete, and the newest complete one (crash-consistent resume).

A ``DiPOTrainer`` checkpoint is written in this order: ``dipo_state.pt`` (atomically) → model files → optimizer,
scheduler, scaler, RNG states → ``trainer_state.json`` (transformers writes it last) → rotation of older
checkpoints. A folder is **complete** when its ``trainer_state.json`` is readable and, while DiPO runs, its
``dipo_state.pt`` too: a job killed at any moment of a save leaves the folder incomplete, never complete with
missing parts, and the previous checkpoint untouched (rotation runs only after the new one is complete).
"""

from __future__ import annotations

import json
import os
import re

from dipo.integrations._kit.state import DIPO_STATE_NAME, load_state_file

#: transformers' ``TRAINER_STATE_NAME``: written last by ``Trainer._save_checkpoint``.
TRAINER_STATE_NAME = "trainer_state.json"

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")  # transformers.trainer_utils._re_checkpoint


def checkpoint_problem(folder: str | os.PathLike[str], needs_dipo_state: bool) -> str | None:
    """Why ``folder`` is not a complete checkpoint (a phrase to follow "it"), or ``None`` if it is complete.

    Args:
        folder: a ``checkpoint-N`` folder.
        needs_dipo_state: DiPO runs in the resuming job (and ``dipo_resume_empty_queue`` is off): the folder must
            hold a readable ``dipo_state.pt``.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        return "does not exist"
    state_file = os.path.join(folder, TRAINER_STATE_NAME)
    if not os.path.isfile(state_file):
        return f"has no {TRAINER_STATE_NAME} (a save that did not finish)"
    try:
        with open(state_file, encoding="utf-8") as handle:
            state = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"has an unreadable {TRAINER_STATE_NAME} ({type(err).__name__}: a save that did not finish)"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"has a {TRAINER_STATE_NAME} without global_step"
    if not needs_dipo_state:
        return None
    try:
        payload = load_state_file(folder)
    except ValueError as err:
        return f"has a damaged {DIPO_STATE_NAME} ({err})"
    if payload is None:
        return (
            f"has no {DIPO_STATE_NAME} (DiPO's PPL queue: a save that did not finish, or a run without DiPO; set "
            "dipo_resume_empty_queue=True to resume from it with an empty queue)"
        )
    return None


def checkpoint_folders(output_dir: str | os.PathLike[str]) -> list[str]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (largest N) first; ``[]`` if there is no such folder."""
    output_dir = os.fspath(output_dir)
    if not os.path.isdir(output_dir):
        return []
    found = [
        (int(match.group(1)), os.path.join(output_dir, name))
        for name in os.listdir(output_dir)
        if (match := _CHECKPOINT.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    ]
    return [path for _, path in sorted(found, reverse=True)]


def newest_complete_checkpoint(
    output_dir: str | os.PathLike[str], needs_dipo_state: bool
) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-N`` of ``output_dir`` (``None`` if there is none) and the newer incomplete
    ones that were skipped, as ``(folder, problem)`` pairs (see :func:`checkpoint_problem`)."""
    skipped: list[tuple[str, str]] = []
    for folder in checkpoint_folders(output_dir):
        problem = checkpoint_problem(folder, needs_dipo_state)
        if problem is None:
            return folder, skipped
        skipped.append((folder, problem))
    return None, skipped


def no_complete_checkpoint_message(output_dir: str, skipped: list[tuple[str, str]], fresh_start: str) -> str:
    """One line: ``output_dir`` has no complete checkpoint; names each incomplete one and how to proceed
    (``fresh_start``: how to start a new run instead)."""
    if not skipped:
        return f"no checkpoint-N folder in output_dir {output_dir!r}; {fresh_start}"
    details = "; ".join(f"{os.path.basename(folder)} {problem}" for folder, problem in skipped)
    return (
        f"no complete checkpoint-N folder in output_dir {output_dir!r} ({details}); give a complete checkpoint "
        f"folder, or {fresh_start}"
    )


__all__ = [
    "TRAINER_STATE_NAME",
    "checkpoint_folders",
    "checkpoint_problem",
    "newest_complete_checkpoint",
    "no_complete_checkpoint_message",
]
