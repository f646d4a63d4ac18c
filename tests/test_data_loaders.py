"""Generic dataset loading: file formats, dotted fields, clear errors naming row and field, counted skips."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from dipo.tasks.data import (
    DataFieldError,
    TaskRow,
    completion_text,
    convert_rows,
    get_field,
    iter_batches,
    load_records,
    normalize_prompt,
)

ROWS = [{"q": "one", "meta": {"gold": "1"}}, {"q": "two", "meta": {"gold": "2"}}]


def test_load_records_formats(tmp_path) -> None:
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    (tmp_path / "b.json").write_text(json.dumps({"data": ROWS}))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in ROWS))
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    for name in ("a.jsonl", "b.json", "c.jsonl.gz", "d.parquet"):
        assert load_records(tmp_path / name) == ROWS, name
    assert load_records(tmp_path / "a.jsonl", limit=1) == ROWS[:1]
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "train.jsonl").write_text(json.dumps(ROWS[0]))
    (folder / "test.jsonl").write_text(json.dumps(ROWS[1]))
    assert load_records(folder, split="test") == [ROWS[1]]


def test_load_records_saved_hf_dataset(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "ds"))
    assert load_records(tmp_path / "ds", split="train") == ROWS
    with pytest.raises(ValueError, match="no split 'test'"):
        load_records(tmp_path / "ds", split="test")


def test_load_records_errors(tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n{oops\n")
    with pytest.raises(DataFieldError, match=r"row line 2, field '<json>': not valid JSON"):
        load_records(bad)
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_records(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_records(tmp_path / "x.csv")


def test_get_field_dotted_and_errors() -> None:
    row = {"reward_model": {"ground_truth": "7"}, "msgs": [{"content": "hi"}], "empty": " "}
    assert get_field(row, "reward_model.ground_truth", "src", 3) == "7"
    assert get_field(row, "msgs.0.content", "src", 3) == "hi"
    with pytest.raises(DataFieldError, match=r"src: row 3, field 'reward_model.answer': missing \(available: "):
        get_field(row, "reward_model.answer", "src", 3)
    with pytest.raises(DataFieldError, match="empty value"):
        get_field(row, "empty", "src", 3)


def test_normalize_prompt_and_completion_text() -> None:
    assert normalize_prompt("hi", "s", 0, "p") == "hi"
    assert normalize_prompt([{"content": "x"}], "s", 0, "p") == [{"role": "user", "content": "x"}]
    with pytest.raises(DataFieldError, match="field 'p'"):
        normalize_prompt(42, "s", 0, "p")
    assert completion_text([{"role": "assistant", "content": "ok"}]) == "ok"
    assert completion_text("ok") == "ok"
    with pytest.raises(TypeError):
        completion_text(3)


def test_convert_rows_raise_skip_and_ceiling(caplog) -> None:
    def convert(raw, index):
        return TaskRow(get_field(raw, "q", "src", index), "a", str(index), "src")

    rows = [{"q": "a"}] * 30 + [{"x": 1}]
    with pytest.raises(DataFieldError, match="row 30, field 'q'"):
        convert_rows(rows, convert, "src")
    with caplog.at_level(logging.WARNING):
        out = convert_rows(rows, convert, "src", on_error="skip")
    assert len(out) == 30 and "skipped 1 of 31 rows" in caplog.text
    with pytest.raises(ValueError, match="Check the field names"):
        convert_rows([{"x": 1}] * 3, convert, "src", on_error="skip")


def test_iter_batches() -> None:
    assert [list(b) for b in iter_batches([1, 2, 3, 4, 5], 2)] == [[1, 2], [3, 4], [5]]
    with pytest.raises(ValueError):
        list(iter_batches([1], 0))
