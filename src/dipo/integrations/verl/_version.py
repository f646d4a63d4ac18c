"""The verl version this plugin is tested against (also pinned by the ``dipo[verl]`` extra)."""

from __future__ import annotations

from packaging.version import Version

from dipo.integrations._kit.versions import check_version

#: Tested version: verl 0.9.1. The shim and trainers touch verl internals (``compute_advantage``, the v1 trainer's
#: ``_compute_advantage`` / ``_save_checkpoint`` / ``_load_checkpoint`` and its trainer registry).
TESTED_VERSION = Version("0.9.1")


def check_verl_version(version: str | None = None) -> Version:
    """Raise for verl < 0.9 (no v1 trainer registry); warn for any version other than the tested one."""
    if version is None:
        import verl

        version = verl.__version__
    relies_on = "verl internals (compute_advantage, the v1 trainer hooks)"
    return check_version("verl", version, ("0.9", None), ("0.9.1", "0.9.2"), "dipo[verl]", relies_on)
