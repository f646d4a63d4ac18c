"""One declaration per DiPO option (issue 17): :func:`option` declares a field of :class:`dipo.core.DiPOCoreConfig`
with its default, allowed values, help text and spec section; the core's validation, TRL's ``dipo_*`` fields, verl's
``algorithm.dipo.*`` parsing and the options table of ``docs/algorithm.md`` (:func:`markdown_table`, printed by
``python -m dipo.core --markdown``) all read it. Validation names the option as the caller spells it
(``membership``, ``dipo_membership``, ``algorithm.dipo.membership``), so no message is ever reworded."""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dipo.core._checks import unknown_choice

#: The key of a ``DiPOCoreConfig`` field's metadata that holds its :class:`Option`.
OPTION_KEY = "dipo_option"


@dataclass(frozen=True)
class Option:
    """The declaration of one DiPO option: its default, what it accepts, what it means and where the spec has it.

    ``kind`` is ``bool``, ``int``, ``float`` or ``str`` (``str`` options are choices); ``nullable`` also allows
    ``None``; ``at_least`` / ``above`` / ``below`` bound numbers; ``hint`` ends a range error (e.g. the paper's value).
    """

    default: Any
    spec: str
    help: str
    kind: type
    choices: tuple[str, ...] = ()
    nullable: bool = False
    at_least: float | None = None
    above: float | None = None
    below: float | None = None
    hint: str = ""

    @property
    def annotation(self) -> Any:
        """The Python type of the option's values (``float | None`` for a nullable float)."""
        return self.kind | None if self.nullable else self.kind

    def allowed(self) -> str:
        """What the option accepts, in words (the docs table, TRL's help)."""
        if self.choices:
            text = ", ".join(f'"{c}"' for c in self.choices)
        elif self.kind is bool:
            text = "True, False"
        else:
            text = ("an int" if self.kind is int else "a number") + self._range()
        return text + (", None" if self.nullable else "")

    def _range(self) -> str:
        if self.above is not None and self.below is not None:
            return f" in ({self.above:g}, {self.below:g})"
        bounds = [f">= {self.at_least:g}"] if self.at_least is not None else []
        bounds += [f"> {self.above:g}"] if self.above is not None else []
        bounds += [f"< {self.below:g}"] if self.below is not None else []
        return "".join(f" {b}" for b in bounds)

    def check(self, value: Any, name: str) -> Any:
        """``value`` if it is allowed, else a ValueError naming ``name``: ``bool`` switches must be real bools, numbers
        real and finite (bools refused) within the bounds, choices one of ``choices``."""
        if value is None and self.nullable:
            return value
        if self.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be a bool (True or False), got {value!r} ({type(value).__name__}).")
        elif self.kind is str:
            if value not in self.choices:
                raise unknown_choice(name, value, self.choices)
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int) or not self._in_range(value):
                raise ValueError(f"{name} must be an int{self._range()}{self._hint()}, got {value!r}.")
        else:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__}).")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}.")
            if not self._in_range(value):
                raise ValueError(f"{name} must be a finite number{self._range()}{self._hint()}, got {value!r}.")
        return value

    def _in_range(self, value: float) -> bool:
        return not (
            (self.at_least is not None and value < self.at_least)
            or (self.above is not None and value <= self.above)
            or (self.below is not None and value >= self.below)
        )

    def _hint(self) -> str:
        return ("" if not self.nullable else " or None") + (f" ({self.hint})" if self.hint else "")

    def parse(self, value: object, name: str) -> Any:
        """``value`` from a text config (a command-line override): a switch also accepts the strings "true"/"false"
        (any case; :func:`parse_bool`); then :meth:`check`. Returns the value to use."""
        if self.kind is bool and isinstance(value, str):
            value = parse_bool(name, value)
        return self.check(value, name)


def option(default: Any, spec: str, help: str, *, kind: type | None = None, **allowed: Any) -> Any:
    """A ``dataclasses.field`` with ``default`` whose metadata holds the option's :class:`Option` (``kind`` defaults
    to ``type(default)``; ``allowed``: ``choices``, ``nullable``, ``at_least``, ``above``, ``below``, ``hint``)."""
    declared = Option(default, spec, help, kind or type(default), **allowed)
    declared.check(default, "the default")
    return dataclasses.field(default=default, metadata={OPTION_KEY: declared})


def options_of(config_class: type) -> dict[str, Option]:
    """``field name -> Option`` of a dataclass declared with :func:`option` (fields without one are skipped)."""
    return {f.name: f.metadata[OPTION_KEY] for f in dataclasses.fields(config_class) if OPTION_KEY in f.metadata}


def parse_bool(name: str, value: object) -> bool:
    """A switch from a text config: ``True``/``False`` or the strings "true"/"false" (any case, as a command-line
    override can deliver them); anything else (``"no"``, ``1``, ``None``) is an error, never read as true."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name} must be true or false, got {value!r} ({type(value).__name__}).")


def format_value(value: Any) -> str:
    """A default as the docs write it: ``"error"``, ``0.1``, ``1e-6``, ``True``, ``None``."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, float) and value != 0 and abs(value) < 1e-3:
        mantissa, exponent = f"{value:.6e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return str(value)


def markdown_table(options: Mapping[str, Option]) -> str:
    """The options table of ``docs/algorithm.md``: one row per option, in declaration order."""
    rows = ["| option | default | allowed | spec | meaning |", "|---|---|---|---|---|"]
    for name, opt in options.items():
        cells = (f"`{name}`", format_value(opt.default), opt.allowed(), opt.spec, opt.help.replace("|", "\\|"))
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
