"""Generic dataset loading with configurable field names (JSONL, JSON, Parquet, saved HF datasets, Hub ids).

Users bring their own data: :func:`load_records` reads rows from any of those sources and :func:`get_field`
reads a field by a dotted path (``reward_model.ground_truth``), so that e.g. DAPO-Math-17k in its verl layout
(``prompt`` = chat messages, ``reward_model.ground_truth`` = answer) needs only
``FieldMap(prompt="prompt", answer="reward_model.ground_truth")``.

Broken rows raise :class:`DataFieldError` (a ``ValueError`` that names the source, the row and the field), or —
with ``on_error="skip"`` — are counted, logged and skipped, with a ceiling (``max_skip_fraction``) so that a wrong
field name cannot silently drop the whole dataset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dipo.fileio import FileFormatError, decode_utf8, iter_json_lines, parse_json, read_lines

# Imported inside functions: pyarrow and datasets, only for Parquet files and Hub datasets.

logger = logging.getLogger(__name__)

OnError = Literal["raise", "skip"]


class DataFieldError(ValueError):
    """A dataset row lacks a field or has a value that cannot be used."""

    def __init__(self, source: str, row: int | str, field_name: str, problem: str) -> None:
        self.source, self.row, self.field_name, self.problem = source, row, field_name, problem
        super().__init__(f"{source}: row {row}, field {field_name!r}: {problem}")


@dataclass
class TaskRow:
    """One task example in the form trainers and evaluators consume.

    ``prompt`` is a list of chat messages (TRL's conversational format) or a plain string; ``answer`` is the
    ground truth as a string (math: the answer; tool calls: JSON of the gold calls); ``meta`` holds extra columns.
    """

    prompt: list[dict[str, str]] | str
    answer: str
    id: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat row for ``datasets.Dataset.from_list`` (``meta`` values become columns)."""
        return {"prompt": self.prompt, "answer": self.answer, "id": self.id, "source": self.source, **self.meta}


@dataclass
class FieldMap:
    """Which fields of a raw row hold the prompt, the answer and an id (dotted paths reach into nested dicts).

    A prompt field may hold a string or a list of chat messages.
    """

    prompt: str = "prompt"
    answer: str = "answer"
    id: str | None = None


_MISSING = object()


def get_field(row: dict[str, Any], path: str, source: str, index: int) -> Any:
    """Value at dotted ``path`` of ``row``; raises :class:`DataFieldError` (listing the keys present) if absent."""
    value: Any = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            keys = sorted(value) if isinstance(value, dict) else type(value).__name__
            raise DataFieldError(source, index, path, f"missing (available: {keys}); set the field name in the config")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataFieldError(source, index, path, "empty value")
    return value


def completion_text(completion: Any) -> str:
    """Text of a TRL completion: a string, or a list of messages (the last assistant message's content)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    raise TypeError(f"cannot read completion of type {type(completion).__name__}: {completion!r:.80}")


def normalize_prompt(value: Any, source: str, index: int, field_name: str) -> list[dict[str, str]] | str:
    """A prompt value as a string or a validated list of ``{"role", "content"}`` messages."""
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        return [{"role": str(m.get("role", "user")), "content": str(m["content"])} for m in value]
    raise DataFieldError(source, index, field_name, f"expected a string or a list of chat messages, got {value!r:.80}")


# ---------------------------------------------------------------------------------------------------------------------
# Reading sources


def _read_json_lines(path: Path, lines: list[bytes] | None = None) -> list[dict[str, Any]]:
    """Rows of a JSON-lines file; a line that is not UTF-8 JSON (or nests too deeply) raises :class:`DataFieldError`
    naming the file and the line."""
    try:
        return [row for _, row in iter_json_lines(path, lines)]
    except FileFormatError as err:
        raise DataFieldError(str(path), f"line {err.line}", "<json>", err.problem) from None


def _read_file(path: Path) -> list[dict[str, Any]]:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
        return _read_json_lines(path)
    if name.endswith(".json"):
        lines, _ = read_lines(path)
        try:
            text = decode_utf8(path.read_bytes(), str(path))
            data = parse_json(text, str(path))
        except FileFormatError as err:
            if err.problem.startswith("not valid JSON") and len(lines) > 1:
                return _read_json_lines(path, lines)  # JSON lines saved with a .json suffix (as BFCL does)
            raise DataFieldError(str(path), f"line {err.line or 1}", "<json>", err.problem) from None
        if isinstance(data, dict):
            for key in ("data", "rows", "train", "test"):
                if isinstance(data.get(key), list):
                    return data[key]
            raise DataFieldError(str(path), 0, "<json>", "a JSON file must hold a list of rows (or {'data': [...]})")
        return list(data)
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"{path}: unsupported file type; use .jsonl, .json, .jsonl.gz or .parquet")


def load_records(
    source: str | Path,
    split: str = "train",
    config_name: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Raw rows from a file (``.jsonl``/``.json``/``.parquet``), a folder (a ``save_to_disk`` dataset, or data files
    inside it) or a Hugging Face Hub id (``datasets.load_dataset(source, config_name, split=split)``).
    ``limit``: only the first ``limit`` rows (>= 1; None for all)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (None for all rows), got {limit}")
    path = Path(source).expanduser()
    if path.is_file():
        rows = _read_file(path)
    elif path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            import datasets

            ds = datasets.load_from_disk(str(path))
            if isinstance(ds, datasets.DatasetDict):
                if split not in ds:
                    raise ValueError(f"{path}: no split {split!r} (splits: {list(ds)})")
                ds = ds[split]
            rows = ds.select(range(min(limit, len(ds)))).to_list() if limit else ds.to_list()
        else:
            files = sorted(
                p for p in path.iterdir() if p.name.lower().endswith((".jsonl", ".json", ".parquet", ".jsonl.gz"))
            )
            split_files = [p for p in files if p.name.startswith(split)] or files
            if not split_files:
                raise ValueError(f"{path}: no .jsonl/.json/.parquet files")
            rows = [row for p in split_files for row in _read_file(p)]
    elif str(source).count("/") == 1 and not str(source).startswith((".", "/", "~")):
        import datasets

        ds = datasets.load_dataset(str(source), config_name, split=split)
        rows = ds.select(range(min(limit, len(ds)))).to_list() if limit else ds.to_list()
    else:
        raise FileNotFoundError(f"dataset {source!r} is neither a file, a folder nor a Hub id (owner/name)")
    return rows[:limit] if limit else rows


def convert_rows(
    rows: Sequence[dict[str, Any]],
    convert: Callable[[dict[str, Any], int], TaskRow],
    source: str,
    on_error: OnError = "raise",
    max_skip_fraction: float = 0.05,
) -> list[TaskRow]:
    """Apply ``convert`` to every row. ``on_error="raise"``: the first :class:`DataFieldError` propagates.
    ``"skip"``: broken rows are counted and logged; more than ``max_skip_fraction`` of them raises (a wrong
    field name, not a few broken rows)."""
    out: list[TaskRow] = []
    skipped: list[DataFieldError] = []
    for index, row in enumerate(rows):
        try:
            out.append(convert(row, index))
        except DataFieldError as err:
            if on_error == "raise":
                raise
            skipped.append(err)
    if skipped:
        fraction = len(skipped) / max(len(rows), 1)
        logger.warning("%s: skipped %d of %d rows; first: %s", source, len(skipped), len(rows), skipped[0])
        if fraction > max_skip_fraction:
            raise ValueError(
                f"{source}: {len(skipped)} of {len(rows)} rows are broken ({fraction:.0%} > max_skip_fraction="
                f"{max_skip_fraction:.0%}); first: {skipped[0]}. Check the field names."
            )
    return out


@dataclass(frozen=True)
class RawRow:
    """One raw row of a dataset and where it stands (``source``, ``index``), so that every error names both.

    The task loaders' ``convert`` functions read it through :meth:`field`, :meth:`prompt` and :meth:`row_id` (the
    errors of :func:`get_field` / :func:`normalize_prompt`) and report other problems with :meth:`error`.
    """

    values: dict[str, Any]
    source: str
    index: int

    def field(self, path: str) -> Any:
        """:func:`get_field` of this row (missing or empty: :class:`DataFieldError` listing the keys present)."""
        return get_field(self.values, path, self.source, self.index)

    def prompt(self, path: str) -> list[dict[str, str]] | str:
        """The prompt at ``path``: a string or validated chat messages (:func:`normalize_prompt`)."""
        return normalize_prompt(self.field(path), self.source, self.index, path)

    def row_id(self, path: str | None) -> str:
        """The id at ``path``; without a ``path``, ``<file stem>-<index>``."""
        return str(self.field(path)) if path else f"{Path(self.source).stem}-{self.index}"

    def error(self, field_name: str, problem: str) -> DataFieldError:
        """A :class:`DataFieldError` naming this row's source and index, ``field_name`` and ``problem``."""
        return DataFieldError(self.source, self.index, field_name, problem)


def load_dataset_rows(
    source: str | Path,
    convert: Callable[[RawRow], TaskRow],
    *,
    name: str | None = None,
    split: str = "train",
    config_name: str | None = None,
    limit: int | None = None,
    on_error: OnError = "raise",
    max_skip_fraction: float = 0.05,
) -> list[TaskRow]:
    """The shared part of the task loaders: read ``source`` (:func:`load_records`: a file, a folder or a Hub id;
    a line that is not JSON raises naming the file and the line) and turn each row into a :class:`TaskRow` with
    ``convert`` (:func:`convert_rows`: a broken row raises naming the source, the row and the field, or with
    ``on_error="skip"`` is counted and skipped up to ``max_skip_fraction``). ``name``: the source as errors and
    logs name it (default ``str(source)``). An empty file gives no rows (the callers say so)."""
    label = str(source) if name is None else name
    rows = load_records(source, split=split, config_name=config_name, limit=limit)
    return convert_rows(
        rows,
        lambda values, index: convert(RawRow(values, label, index)),
        label,
        on_error=on_error,
        max_skip_fraction=max_skip_fraction,
    )


def iter_batches(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``items`` of length ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
