"""Generic dataset loading: file formats, dotted fields, clear errors naming row and field, counted skips."""

from __future__ import annotations

import gzip
import json
import logging

import pytest

from dipo.tasks.data import (
    DataFieldError,
    RawRow,
    TaskRow,
    completion_text,
    convert_rows,
    get_field,
    iter_batches,
    load_dataset_rows,
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


# ---------------------------------------------------------------------------------------------------------------------
# load_dataset_rows: the part every task loader shares (read, convert, name the file / row / field on an error)


def _question_row(row: RawRow) -> TaskRow:
    """A minimal ``convert``: prompt ``q``, answer ``a`` (must be a digit), optional id."""
    answer = str(row.field("a"))
    if not answer.isdigit():
        raise row.error("a", f"{answer!r} is not a number; give the answer as digits")
    return TaskRow(row.prompt("q"), answer, row.row_id(None), row.source)


def test_load_dataset_rows_reads_and_converts(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"q": "one", "a": "1"}) + "\n\n" + json.dumps({"q": "two", "a": 2}) + "\n")
    rows = load_dataset_rows(path, _question_row)
    assert [(r.prompt, r.answer, r.id, r.source) for r in rows] == [
        ("one", "1", "qa-0", str(path)),
        ("two", "2", "qa-1", str(path)),
    ]
    assert [r.id for r in load_dataset_rows(path, _question_row, name="my/data.jsonl", limit=1)] == ["data-0"]
    assert load_dataset_rows(path, _question_row, name="my data")[0].source == "my data"


def test_load_dataset_rows_bad_file_names_the_file_and_line(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"q": "one", "a": "1"}) + "\n" + '{"q": "two", "a": \n')
    with pytest.raises(DataFieldError, match=rf"^{path}: row line 2, field '<json>': not valid JSON"):
        load_dataset_rows(path, _question_row)
    (tmp_path / "qa.csv").write_text("q,a\none,1\n")
    with pytest.raises(ValueError, match=r"qa.csv: unsupported file type; use .jsonl, .json, .jsonl.gz or .parquet"):
        load_dataset_rows(tmp_path / "qa.csv", _question_row)


def test_load_dataset_rows_missing_column_names_row_field_and_the_keys_present(tmp_path) -> None:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [{"q": "one", "a": "1"}, {"question": "two", "a": "2"}]))
    with pytest.raises(
        DataFieldError, match=r"qa.jsonl: row 1, field 'q': missing \(available: \['a', 'question'\]\); set the field"
    ):
        load_dataset_rows(path, _question_row)


def test_load_dataset_rows_bad_row_raises_or_is_skipped_up_to_the_ceiling(tmp_path, caplog) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [{"q": f"q{i}", "a": str(i)} for i in range(3)] + [{"q": "bad", "a": "three"}]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataFieldError, match=r"qa.jsonl: row 3, field 'a': 'three' is not a number; give the answer"):
        load_dataset_rows(path, _question_row)
    with pytest.raises(ValueError, match=r"1 of 4 rows are broken \(25% > max_skip_fraction=5%\).*row 3"):
        load_dataset_rows(path, _question_row, on_error="skip")
    with caplog.at_level(logging.WARNING):
        kept = load_dataset_rows(path, _question_row, on_error="skip", max_skip_fraction=0.5)
    assert [r.answer for r in kept] == ["0", "1", "2"] and "skipped 1 of 4 rows" in caplog.text
    path.write_text(json.dumps({"q": [{"role": "user"}], "a": "1"}))  # a message without content
    with pytest.raises(DataFieldError, match=r"row 0, field 'q': expected a string or a list of chat messages"):
        load_dataset_rows(path, _question_row)


def test_load_dataset_rows_empty_file_gives_no_rows(tmp_path) -> None:
    """An empty (or blank) JSON-lines file has no rows; the callers (dipo train / probe / eval) say "no rows"."""
    for text in ("", "\n\n"):
        (tmp_path / "empty.jsonl").write_text(text)
        assert load_dataset_rows(tmp_path / "empty.jsonl", _question_row) == []
    (tmp_path / "empty.json").write_text("")
    with pytest.raises(DataFieldError, match=r"empty.json: row line 1, field '<json>': not valid JSON"):
        load_dataset_rows(tmp_path / "empty.json", _question_row)


def test_raw_row_reads_dotted_fields_and_ids() -> None:
    row = RawRow({"m": {"id": 7, "p": [{"content": "hi"}]}}, "data/set.jsonl", 4)
    assert row.field("m.id") == 7 and row.row_id("m.id") == "7" and row.row_id(None) == "set-4"
    assert row.prompt("m.p") == [{"role": "user", "content": "hi"}]
    err = row.error("m.x", "what is wrong; how to fix")
    assert (err.source, err.row, err.field_name) == ("data/set.jsonl", 4, "m.x")
    assert str(err) == "data/set.jsonl: row 4, field 'm.x': what is wrong; how to fix"
