"""The TRL versions this adapter is tested against; an untested major version fails with a clear message."""

from __future__ import annotations

from packaging.version import Version

from dipo.integrations._kit.versions import check_version

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
    tested = (str(TESTED_MIN), str(TESTED_MAX_EXCLUSIVE))
    return check_version("trl", version, ("1", "2"), tested, "trl>=1.14,<1.17", "private GRPOTrainer hooks")
