"""Reading JSON, JSON lines and YAML files that users (or an interrupted run) wrote: every error is a ``ValueError``
that names the file and the line, never a ``UnicodeDecodeError`` without a file name or a ``RecursionError``.

- Text must be UTF-8: a byte that is not is reported with its line and column.
- A value nested deeper than Python's parsers can follow (``[[[[...]]]]`` 100,000 deep) is reported as such.

And the one output-folder guard of every command (:func:`check_output_dir`, with :func:`check_writable_dir`).
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# Imported inside functions: PyYAML, only for YAML files.

__all__ = [
    "FileFormatError",
    "check_output_dir",
    "check_writable_dir",
    "decode_utf8",
    "describe_error",
    "iter_json_lines",
    "load_yaml",
    "parse_json",
    "read_json",
    "read_lines",
]

#: The problem of a value nested deeper than Python's parsers follow.
TOO_DEEP = "a value nested too deeply to be read (over Python's recursion limit)"


class FileFormatError(ValueError):
    """A file (``where``) that cannot be read as the format it should have: "<where>: line <line>: <problem>"."""

    def __init__(self, where: str, line: int | None, problem: str) -> None:
        self.where, self.line, self.problem = where, line, problem
        super().__init__(f"{where}: line {line}: {problem}" if line is not None else f"{where}: {problem}")


def decode_utf8(data: bytes, where: str, first_line: int = 1) -> str:
    """``data`` decoded as UTF-8; :class:`FileFormatError` "<where>: line L: byte 0x.. at column C is not UTF-8
    text" otherwise (``first_line``: the line number of the first line of ``data`` in its file)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        problem = f"byte 0x{data[err.start]:02x} at column {column} is not UTF-8 text; save the file as UTF-8"
        raise FileFormatError(where, line, problem) from None


def parse_json(text: str, where: str, line: int | None = None) -> Any:
    """``json.loads(text)``; :class:`FileFormatError` naming ``where`` (and ``line``) if it is not JSON or nests too
    deeply to be read."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise FileFormatError(where, line, f"not valid JSON ({err})") from None
    except RecursionError:
        raise FileFormatError(where, line, TOO_DEEP) from None


def read_lines(path: str | Path) -> tuple[list[bytes], bool]:
    """The lines of ``path`` (``.gz``: decompressed) as bytes without their line ends, and whether the file ends
    with a line end (False: the last line may have been cut by an interrupted write)."""
    path = Path(path)
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return data.splitlines(), data.endswith((b"\n", b"\r"))


def iter_json_lines(path: str | Path, lines: list[bytes] | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of a JSON-lines file (or of its ``lines``, as
    :func:`read_lines` gives them); :class:`FileFormatError` at the first line that is not UTF-8 JSON."""
    for lineno, raw in enumerate(read_lines(path)[0] if lines is None else lines, start=1):
        if raw.strip():
            yield lineno, parse_json(decode_utf8(raw, str(path), lineno), str(path), lineno)


def read_json(path: str | Path) -> Any:
    """The JSON value in file ``path``; errors name the file (and the line of a non-UTF-8 byte)."""
    return parse_json(decode_utf8(Path(path).read_bytes(), str(path)), str(path))


def load_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of file ``path``; errors name the file (YAML syntax errors their line, as PyYAML does)."""
    import yaml

    text = decode_utf8(Path(path).read_bytes(), str(path))
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise FileFormatError(str(path), None, f"not valid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise FileFormatError(str(path), None, TOO_DEEP) from None


def describe_error(err: BaseException) -> str:
    """One line for ``err``: an ``OSError`` as "<what>: <path>" (e.g. "no such file or directory: 'x.yaml'"),
    a YAML error with its file position, anything else as its message."""
    if isinstance(err, OSError) and err.strerror:
        paths = [p for p in (err.filename, err.filename2) if p is not None]
        where = " -> ".join(repr(os.fsdecode(p)) for p in paths)
        return f"{err.strerror.lower()}: {where}" if where else err.strerror.lower()
    text = " ".join(str(err).split())  # multi-line messages (YAML errors) on one line
    return text or type(err).__name__


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


def check_output_dir(
    out: str | Path,
    earlier: Sequence[str],
    *,
    what: str,
    option: str = "--output_dir",
    overwrite: bool = False,
    overwrite_flag: str = "--overwrite",
    resume: bool = False,
    resume_flag: str | None = None,
    resume_hint: str | None = None,
) -> list[str]:
    """The output-folder guard of every command (``dipo train`` / ``eval`` / ``probe`` / ``demo``), called before a
    model is loaded or a result is written. Returns what an earlier run left in ``out`` (for the caller to replace,
    keep or warn about) after checking, with ``ValueError`` naming ``option`` and the fix:

    - ``overwrite`` and ``resume`` exclude each other when the command has a ``resume_flag`` (one that continues an
      earlier run in ``out``);
    - ``out`` must be a folder, not a file;
    - if ``out`` holds what an earlier run writes (``earlier``: file / folder names or glob patterns, listed in this
      order) it is refused unless ``overwrite`` (start again) or ``resume`` (continue it; ``resume_hint`` says how);
    - ``out`` is created if needed and must be writable (:func:`check_writable_dir`).
    """
    out = Path(out).expanduser()
    if resume_flag and overwrite and resume:
        raise ValueError(f"choose either {overwrite_flag} (start again) or {resume_flag} (continue), not both")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{option} {str(out)!r} is a file, not a folder; choose another {option}")
    found = [str(p.relative_to(out)) for pattern in earlier for p in sorted(out.glob(pattern))] if out.is_dir() else []
    if found and not (overwrite or resume):
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        hint = f"{resume_hint}, " if resume_hint else ""
        raise ValueError(
            f"{option} {str(out)!r} already holds {what} ({shown}); {hint}choose another {option}, or pass "
            f"{overwrite_flag} to replace it"
        )
    check_writable_dir(out, option)
    return found
