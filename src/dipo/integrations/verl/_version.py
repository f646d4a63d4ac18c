"""The verl version this plugin is tested against (also pinned by the ``dipo[verl]`` extra)."""

from __future__ import annotations

import warnings

from packaging.version import Version

#: Tested version: verl 0.9.1. The shim and trainers touch verl internals (``compute_advantage``, the v1 trainer's
#: ``_compute_advantage`` / ``_save_checkpoint`` / ``_load_checkpoint`` and its trainer registry).
TESTED_VERSION = Version("0.9.1")


def check_verl_version(version: str | None = None) -> Version:
    """Raise for verl < 0.9 (no v1 trainer registry); warn for any version other than the tested one."""
    if version is None:
        import verl

        version = verl.__version__
    parsed = Version(version)
    if Version(parsed.base_version) < Version("0.9"):
        raise ImportError(
            f"dipo's verl plugin needs verl >= 0.9 (tested {TESTED_VERSION}), found verl {version}: "
            "pip install 'dipo[verl]'."
        )
    if Version(parsed.base_version) != TESTED_VERSION:
        warnings.warn(
            f"dipo's verl plugin is tested with verl {TESTED_VERSION}, found {version}; it wraps verl internals "
            "(compute_advantage, the v1 trainer hooks), check the dipo/* metrics of the first steps.",
            UserWarning,
            stacklevel=2,
        )
    return parsed
