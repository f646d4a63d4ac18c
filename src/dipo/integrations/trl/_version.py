"""The TRL versions this adapter is tested against; an untested major version fails with a clear message."""

from __future__ import annotations

import warnings

from packaging.version import Version

#: Tested range (also pinned in pyproject.toml's ``trl`` extra): trl>=1.14,<1.17.
TESTED_MIN = Version("1.14")
TESTED_MAX_EXCLUSIVE = Version("1.17")


def check_trl_version(version: str | None = None) -> Version:
    """Raise on a TRL major version other than 1; warn outside the tested range ``[1.14, 1.17)``.

    ``DiPOTrainer`` overrides private GRPOTrainer hooks (``_calculate_rewards``, ``_generate_and_score_completions``,
    ``_save_checkpoint``, ``_load_optimizer_and_scheduler``) whose contracts may change between releases.
    """
    if version is None:
        import trl

        version = trl.__version__
    try:
        parsed = Version(version)
    except Exception as err:
        raise ImportError(f"dipo: cannot parse the installed TRL version {version!r}.") from err
    if parsed.major != TESTED_MIN.major:
        raise ImportError(
            f"dipo: DiPOTrainer supports TRL {TESTED_MIN.major}.x (tested {TESTED_MIN} <= trl < "
            f"{TESTED_MAX_EXCLUSIVE}), but trl {version} is installed. "
            "Install a tested version: pip install 'trl>=1.14,<1.17'."
        )
    if not TESTED_MIN <= Version(parsed.base_version) < TESTED_MAX_EXCLUSIVE:
        warnings.warn(
            f"dipo: trl {version} is outside the tested range [{TESTED_MIN}, {TESTED_MAX_EXCLUSIVE}); DiPOTrainer "
            "relies on private GRPOTrainer hooks, check the results (pip install 'trl>=1.14,<1.17').",
            UserWarning,
            stacklevel=2,
        )
    return parsed
