"""One option spelling across the CLI: underscores, as ``TrlParser`` forces for ``dipo train`` (``--prompt_field``).

:func:`add_option` declares ``--name_with_underscores`` and keeps the hyphenated spelling (``--name-with-underscores``)
as a deprecated alias for one release: it still works, and its first use in a process warns (``FutureWarning``, which
Python shows by default) naming the new spelling.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

#: Deprecated spellings already warned about in this process (each warns once).
_WARNED: set[str] = set()
_ACTION_CLASSES: dict[type[argparse.Action], type[argparse.Action]] = {}


def underscore_spelling(option: str) -> str:
    """``--prompt-field`` → ``--prompt_field`` (short options and one-word options are unchanged)."""
    return "--" + option[2:].replace("-", "_") if option.startswith("--") else option


def add_option(parser: argparse.ArgumentParser, *flags: str, **kwargs: Any) -> argparse.Action:
    """``parser.add_argument`` with every multi-word long option spelled with underscores, and its hyphenated
    spelling accepted as a deprecated alias. Pass the option in either spelling: ``add_option(p, "--prompt_field")``.
    """
    names: list[str] = []
    deprecated: list[str] = []
    for flag in flags:
        new = underscore_spelling(flag)
        names.append(new)
        if flag.startswith("--") and "_" in new:
            deprecated.append(new.replace("_", "-"))
    if not deprecated:
        return parser.add_argument(*names, **kwargs)
    action = kwargs.pop("action", "store")
    base = parser._registry_get("action", action, action)  # argparse's own lookup of "store", "store_true", ...
    kwargs["action"] = _warning_action(base)
    return parser.add_argument(*names, *deprecated, **kwargs)


def _warning_action(base: type[argparse.Action]) -> type[argparse.Action]:
    """A subclass of argparse action ``base`` that warns once per deprecated (hyphenated) spelling it is given by."""
    if base not in _ACTION_CLASSES:

        class DeprecatedSpellingAction(base):  # type: ignore[valid-type, misc]
            def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
                if option_string and "-" in option_string[2:] and option_string.startswith("--"):
                    warn_deprecated_spelling(option_string)
                super().__call__(parser, namespace, values, option_string)

        _ACTION_CLASSES[base] = DeprecatedSpellingAction
    return _ACTION_CLASSES[base]


def warn_deprecated_spelling(option: str) -> None:
    """Warn (once per process) that ``option`` is the deprecated hyphenated spelling."""
    if option in _WARNED:
        return
    _WARNED.add(option)
    warnings.warn(
        f"{option} is deprecated and will be removed in dipo 0.2; use {underscore_spelling(option)} (the same option, "
        "spelled as dipo train spells it)",
        FutureWarning,
        stacklevel=3,
    )
