"""TRL integration: ``DiPOConfig(GRPOConfig)`` and ``DiPOTrainer(GRPOTrainer)`` (tested with trl>=1.14,<1.17)."""

from dipo.integrations.trl._version import check_trl_version

check_trl_version()

from dipo.integrations.trl.config import DiPOConfig  # noqa: E402
from dipo.integrations.trl.presets import PRESET_FIELDS, PRESETS  # noqa: E402
from dipo.integrations.trl.trainer import DIPO_STATE_NAME, DiPOBatchRecord, DiPOTrainer  # noqa: E402

__all__ = ["DIPO_STATE_NAME", "PRESETS", "PRESET_FIELDS", "DiPOBatchRecord", "DiPOConfig", "DiPOTrainer"]
