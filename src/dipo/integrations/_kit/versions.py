"""One version check for every adapter: refuse versions whose internals the adapter cannot work with, warn outside the
tested range (adapters override private framework hooks whose contracts change between releases)."""

from __future__ import annotations

import warnings

from packaging.version import InvalidVersion, Version


def check_version(
    package: str,
    installed: str,
    supported: tuple[str, str | None],
    tested: tuple[str, str],
    install: str,
    relies_on: str,
) -> Version:
    """Check ``installed`` (the version of ``package``) and return it parsed.

    Args:
        package: the framework's distribution name, e.g. ``"trl"``.
        installed: its installed version string.
        supported: ``[min, max)``; outside it an ``ImportError`` (``max`` ``None``: no upper bound).
        tested: ``[min, max)`` of the tested releases; outside it (release part only) a ``UserWarning``.
        install: the pip requirement that installs a tested version, e.g. ``"trl>=1.14,<1.17"``.
        relies_on: what of the framework the adapter touches (said in the warning).
    """
    try:
        parsed = Version(installed)
    except InvalidVersion as err:
        raise ImportError(f"dipo: cannot parse the installed {package} version {installed!r}.") from err
    release = Version(parsed.base_version)
    low, high = supported
    tested_text = f"tested {tested[0]} <= {package} < {tested[1]}"
    if release < Version(low) or (high is not None and release >= Version(high)):
        bound = f">= {low}" if high is None else f">= {low}, < {high}"
        raise ImportError(
            f"dipo: the {package} adapter supports {package} {bound} ({tested_text}), but {package} {installed} is "
            f"installed. Install a tested version: pip install '{install}'."
        )
    if not Version(tested[0]) <= release < Version(tested[1]):
        warnings.warn(
            f"dipo: {package} {installed} is outside the tested range [{tested[0]}, {tested[1]}); the adapter relies "
            f"on {relies_on}, check the dipo/* metrics of the first steps (pip install '{install}').",
            UserWarning,
            stacklevel=3,
        )
    return parsed
