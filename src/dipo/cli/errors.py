"""Input checks and one-line error messages shared by ``dipo train`` and ``dipo eval``.

A command validates everything it can before it loads a model or touches a file, and reports a bad input as one
line on stderr (what is wrong, which path, how to fix it) with a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

# The output-folder guard and the one-line error text live in dipo.fileio (the demo and the probe use them too).
from dipo.fileio import check_output_dir, check_writable_dir, describe_error  # noqa: F401

#: Exceptions that mean "bad input or environment" (a missing/unreadable file, a read-only folder, a YAML syntax
#: error, an invalid value, a missing asset package) rather than a bug: reported as one line. ``yaml.YAMLError`` is
#: added when available.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ModuleNotFoundError)
try:  # PyYAML comes with transformers / TRL; the commands that read YAML need it anyway
    import yaml

    INPUT_ERRORS = (*INPUT_ERRORS, yaml.YAMLError)
except ModuleNotFoundError:  # pragma: no cover
    pass


@dataclass(frozen=True)
class Range:
    """The valid values of a numeric option, one rule for every command: ``dipo eval`` / ``dipo probe`` check their
    options with :meth:`parse` (an argparse ``type``), ``dipo train`` checks its parsed TRL config with :meth:`check`;
    both say "must be >= 1, got 0". ``low`` / ``high``: bounds (inclusive unless ``low_open`` / ``high_open``);
    ``integer``: whole numbers only; ``also``: values accepted besides the range (``-1`` = "off"). NaN and infinities
    are refused."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False
    also: tuple[float, ...] = ()

    def problem(self, value: float) -> str | None:
        """What is wrong with ``value`` ("must be >= 1, got 0"), or None if it is valid."""
        if value in self.also:
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value}"
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        if low_ok and high_ok:
            return None
        return f"must be {self.describe()}, got {value}"

    def describe(self) -> str:
        """The rule in words: ">= 1", "> 0", "in (0, 1]", "-1 or >= 1"."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        else:
            text = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        return " or ".join([*(_num(v) for v in self.also), text])

    def check(self, value: float | None, name: str) -> None:
        """``ValueError`` "<name> must be ..., got ..." if ``value`` is invalid (None: unset, accepted)."""
        problem = None if value is None else self.problem(value)
        if problem:
            raise ValueError(f"{name} {problem}")

    def parse(self, text: str) -> float:
        """argparse ``type``: the number in ``text``, or ``ArgumentTypeError`` (argparse then exits with code 2)."""
        try:
            value: float = int(text) if self.integer else float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if self.integer else 'a number'}, got {text!r}"
            ) from None
        problem = self.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


POSITIVE_INT = Range(low=1, integer=True)
NON_NEGATIVE_INT = Range(low=0, integer=True)
POSITIVE = Range(low=0, low_open=True)
NON_NEGATIVE = Range(low=0)
#: A probability that must leave something: top_p, a Wilson confidence level.
UNIT_OPEN_LOW = Range(low=0, high=1, low_open=True)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return int(POSITIVE_INT.parse(text))


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return int(NON_NEGATIVE_INT.parse(text))


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    return POSITIVE.parse(text)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    return NON_NEGATIVE.parse(text)


def top_p_value(text: str) -> float:
    """argparse type: nucleus sampling mass, in (0, 1]."""
    return UNIT_OPEN_LOW.parse(text)


def confidence_value(text: str) -> float:
    """argparse type: a confidence level in (0, 1), or 0 for point estimates."""
    return Range(low=0, high=1, low_open=True, high_open=True, also=(0,)).parse(text)


def looks_like_path(value: str) -> bool:
    """True if ``value`` names a local folder rather than a Hub id (``owner/name``) or the SmolLM2 alias: it starts
    with ``.``, ``~`` or a path separator, holds a platform path separator other than ``/``, or has more than one
    ``/`` (a Hub id has exactly one)."""
    seps = {os.sep, os.altsep or os.sep}
    return value.startswith((".", "~", *seps)) or any(s in value for s in seps - {"/"}) or value.count("/") > 1


#: Files of which a model folder holds at least one (a full model, or a PEFT adapter).
MODEL_CONFIG_FILES = ("config.json", "adapter_config.json")


def check_model_source(value: str, option: str = "--model") -> None:
    """Raise ``FileNotFoundError`` with a clear message if ``value`` looks like a local folder that does not exist
    (transformers would report it as a malformed Hub repo id) or is a folder without a model (no ``config.json``),
    or ``NotADirectoryError`` if it is a file."""
    path = Path(value).expanduser()
    if path.is_dir():
        if not any((path / name).is_file() for name in MODEL_CONFIG_FILES):
            raise FileNotFoundError(
                f"{option}: folder {value!r} holds no model (no config.json); give the folder that save_pretrained "
                "wrote, a Hub id (owner/name) or 'smollm2-135m-instruct'"
            )
        return
    if path.exists():
        raise NotADirectoryError(f"{option} {value!r} is a file; give the model folder (the one with config.json)")
    if looks_like_path(value):
        raise FileNotFoundError(
            f"{option}: model folder {value!r} does not exist (resolved to {path.resolve()}); check the path, or give "
            "a Hub id (owner/name) or 'smollm2-135m-instruct'"
        )


def model_load_error(value: str, option: str, err: OSError) -> OSError:
    """``err`` (raised while loading model ``value``) restated to say that ``value`` was not found locally and was
    therefore tried as a Hub id; ``err`` itself if ``value`` is a local path."""
    if Path(value).expanduser().exists():
        return err
    return OSError(
        f"{option} {value!r} is not a local folder, and loading it as a Hub id failed: {describe_error(err)}"
    )
