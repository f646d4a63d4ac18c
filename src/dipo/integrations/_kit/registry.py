"""Plugins register DiPO's entry points in a framework's name → object registry; importing the plugin again (a
reloaded module, a second import path) must not fail, and another plugin's entry under the same name must not be
overwritten."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def free_registry_slot(registry: MutableMapping[str, Any], name: str, obj: Any, what: str) -> None:
    """Make ``registry[name]`` free for ``obj``: an entry that is ``obj`` or its copy from a reloaded module (same
    module and qualified name) is removed; any other entry raises a ``ValueError`` (``what`` names the registry,
    e.g. ``"verl advantage estimator"``)."""
    existing = registry.get(name)
    if existing is None:
        return
    same = existing is obj or (
        getattr(existing, "__module__", None) == getattr(obj, "__module__", None)
        and getattr(existing, "__qualname__", None) == getattr(obj, "__qualname__", None)
    )
    if not same:
        raise ValueError(
            f"{what} {name!r} is already registered to {existing!r}, which is not DiPO's; remove the other plugin or "
            "rename it."
        )
    del registry[name]
