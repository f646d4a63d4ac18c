"""Moved to :mod:`dipo.integrations._kit.state` (the adapter kit); this import path keeps working."""

from dipo.integrations._kit.state import *  # noqa: F403
from dipo.integrations._kit.state import __all__  # noqa: F401
