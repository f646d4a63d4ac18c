"""Presets of :class:`~dipo.integrations.trl.DiPOConfig`: one field selects GRPO, DAPO or DiPO (spec §7, §11).

A preset only fills the *preset-controlled* fields that the user left at ``None`` (see :data:`PRESET_FIELDS`); any
value the user set explicitly wins. Every other option keeps its own default whatever the preset.
"""

from __future__ import annotations

from typing import Any

#: Fields whose default (``None``) means "take the preset's value".
PRESET_FIELDS: tuple[str, ...] = ("loss_type", "epsilon_high", "mask_truncated_completions", "dipo_alpha")

#: The values a preset gives to its preset-controlled fields. ``epsilon_high=None`` keeps TRL's meaning
#: "same as ``epsilon``" (symmetric clipping). All presets keep TRL's defaults ``beta=0.0``, ``epsilon=0.2``,
#: ``scale_rewards="group"``.
PRESETS: dict[str, dict[str, Any]] = {
    # Spec §11 GRPO: group-normalised advantages, symmetric clipping ε=0.2, sequence-averaged loss, no overlong
    # filtering; DiPO off.
    "grpo": {"loss_type": "grpo", "epsilon_high": None, "mask_truncated_completions": False, "dipo_alpha": 0.0},
    # Spec §11 DAPO: clip-higher 0.2/0.28, token-level loss, overlong filtering
    # (truncated completions masked out of the loss); DiPO off. Dynamic sampling is the separate option
    # `dynamic_sampling=True` (off in every preset, so the preset stays TRL's batch for batch).
    "dapo": {"loss_type": "dapo", "epsilon_high": 0.28, "mask_truncated_completions": True, "dipo_alpha": 0.0},
    # Spec §7: DiPO = DAPO + PSD/BRR with α = 0.1.
    "dipo": {"loss_type": "dapo", "epsilon_high": 0.28, "mask_truncated_completions": True, "dipo_alpha": 0.1},
    # No preset: TRL's GRPOConfig defaults for the TRL fields, DiPO on with α = 0.1 (used when a plain GRPOConfig is
    # passed to DiPOTrainer).
    "none": {"loss_type": "dapo", "epsilon_high": None, "mask_truncated_completions": False, "dipo_alpha": 0.1},
}


def resolve_preset(name: str, explicit: dict[str, Any]) -> dict[str, Any]:
    """Values of the preset-controlled fields: the user's explicit (non-``None``) values win over the preset's.

    Args:
        name: preset name, one of :data:`PRESETS`.
        explicit: the current values of the preset-controlled fields (``None`` = not set by the user).

    Raises:
        ValueError: unknown preset name.
    """
    if name not in PRESETS:
        raise ValueError(
            f"DiPOConfig: unknown preset={name!r}; choose one of {', '.join(repr(p) for p in PRESETS)} "
            "('grpo' and 'dapo' are the baselines, 'dipo' is DAPO + PSD/BRR, 'none' keeps TRL's defaults)."
        )
    return {key: (explicit[key] if explicit.get(key) is not None else value) for key, value in PRESETS[name].items()}
