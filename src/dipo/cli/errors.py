"""Input checks and one-line error messages shared by ``dipo train`` and ``dipo eval``.

A command validates everything it can before it loads a model or touches a file, and reports a bad input as one
line on stderr (what is wrong, which path, how to fix it) with a non-zero exit code instead of a traceback.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

#: Exceptions that mean "bad input or environment" (a missing/unreadable file, a read-only folder, a YAML syntax
#: error, an invalid value, a missing asset package) rather than a bug: reported as one line. ``yaml.YAMLError`` is
#: added when available.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ModuleNotFoundError)
try:  # PyYAML comes with transformers / TRL; the commands that read YAML need it anyway
    import yaml

    INPUT_ERRORS = (*INPUT_ERRORS, yaml.YAMLError)
except ModuleNotFoundError:  # pragma: no cover
    pass


def describe_error(err: BaseException) -> str:
    """One line for ``err``: an ``OSError`` as "<what>: <path>" (e.g. "no such file or directory: 'x.yaml'"),
    a YAML error with its file position, anything else as its message."""
    if isinstance(err, OSError) and err.strerror:
        paths = [p for p in (err.filename, err.filename2) if p is not None]
        where = " -> ".join(repr(os.fsdecode(p)) for p in paths)
        return f"{err.strerror.lower()}: {where}" if where else err.strerror.lower()
    text = " ".join(str(err).split())  # multi-line messages (YAML errors) on one line
    return text or type(err).__name__


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def looks_like_path(value: str) -> bool:
    """True if ``value`` names a local folder rather than a Hub id (``owner/name``) or the SmolLM2 alias: it starts
    with ``.``, ``~`` or a path separator, holds a platform path separator other than ``/``, or has more than one
    ``/`` (a Hub id has exactly one)."""
    seps = {os.sep, os.altsep or os.sep}
    return value.startswith((".", "~", *seps)) or any(s in value for s in seps - {"/"}) or value.count("/") > 1


def check_model_source(value: str, option: str = "--model") -> None:
    """Raise ``FileNotFoundError`` with a clear message if ``value`` looks like a local folder that does not exist
    (transformers would report it as a malformed Hub repo id), or ``NotADirectoryError`` if it is a file."""
    path = Path(value).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise NotADirectoryError(f"{option} {value!r} is a file; give the model folder (the one with config.json)")
    if looks_like_path(value):
        raise FileNotFoundError(
            f"{option}: model folder {value!r} does not exist (resolved to {path.resolve()}); check the path, or give "
            "a Hub id (owner/name) or 'smollm2-135m-instruct'"
        )


def check_writable_dir(path: Path, option: str) -> None:
    """Create folder ``path`` (and its parents) if needed and check that a file can be written in it; raises
    ``ValueError`` naming ``option`` and the path otherwise."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {str(path)!r} is a file, not a folder; choose another {option}")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ValueError(
            f"{option} {str(path)!r} is not writable ({describe_error(err)}); choose another {option}"
        ) from err


def model_load_error(value: str, option: str, err: OSError) -> OSError:
    """``err`` (raised while loading model ``value``) restated to say that ``value`` was not found locally and was
    therefore tried as a Hub id; ``err`` itself if ``value`` is a local path."""
    if Path(value).expanduser().exists():
        return err
    return OSError(
        f"{option} {value!r} is not a local folder, and loading it as a Hub id failed: {describe_error(err)}"
    )
