"""Deprecated alias of :mod:`dipo.demo.report` (the demo's report moved next to its owner); removed in 0.2."""

from __future__ import annotations

import warnings

from dipo.demo.report import *  # noqa: F403
from dipo.demo.report import __all__  # noqa: F401

warnings.warn(
    "dipo.reports.demo_report is deprecated; import from dipo.demo.report instead.", DeprecationWarning, stacklevel=2
)
