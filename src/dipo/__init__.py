"""DiPO: Disentangled Perplexity Policy Optimization (arXiv 2604.13902) for GRPO/DAPO-style RLVR.

``dipo.core`` is the framework-free algorithm. ``DiPOConfig`` / ``DiPOTrainer`` (TRL) are imported lazily so
that ``import dipo`` does not pull in TRL.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "DiPOConfig": "dipo.integrations.trl",
    "DiPOTrainer": "dipo.integrations.trl",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dipo' has no attribute {name!r}")


__all__ = ["DiPOConfig", "DiPOTrainer", "__version__"]
