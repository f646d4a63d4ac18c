"""Reading JSON, JSON lines and YAML files that users (or an interrupted run) wrote: every error is a ``ValueError``
that names the file and the line, never a ``UnicodeDecodeError`` without a file name or a ``RecursionError``.

- Text must be UTF-8: a byte that is not is reported with its line and column.
- A value nested deeper than Python's parsers can follow (``[[[[...]]]]`` 100,000 deep) is reported as such.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "FileFormatError",
    "decode_utf8",
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
