"""The hold-out set of `modelserver validate`: fetched and verified like a model, read from
CSV, JSON lines or Parquet, and every bad file named with what is wrong."""

import hashlib
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from arro3.core import Array, DataType, Table
from arro3.io import write_parquet

from modelserver.validate import features_for
from modelserver.validate_client import ModelInfo
from modelserver.validate_data import Dataset, fetch_dataset, read_dataset
from modelserver.validate_errors import ValidateError
from tests.server.artifact_server import ArtifactServer

CSV = "a,b,y\n1,2.5,0\n3,,1\n"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def parquet(tmp_path: Path, columns: Mapping[str, Array], name: str = "data.parquet") -> Path:
    path = tmp_path / name
    write_parquet(Table.from_pydict(dict(columns)), path)
    return path


def read(path: Path, data_format: str, label: str = "y", max_rows: int | None = None) -> Dataset:
    return read_dataset(path, data_format, label, max_rows)  # type: ignore[arg-type]


def problem(path: Path, data_format: str, label: str = "y") -> str:
    with pytest.raises(ValidateError) as raised:
        read(path, data_format, label)
    assert raised.value.kind == "dataset"
    return raised.value.message


def values(dataset: Dataset) -> dict[str, list[float]]:
    return {column.name: column.values.tolist() for column in dataset.columns}


def same(left: dict[str, list[float]], right: dict[str, list[float]]) -> bool:
    """Equal, NaN matching NaN."""
    return left.keys() == right.keys() and all(
        np.array_equal(left[name], right[name], equal_nan=True) for name in left
    )


# --- reading ----------------------------------------------------------------------------------


def test_the_three_formats_read_alike(tmp_path: Path):
    csv = read(write(tmp_path, "d.csv", CSV), "csv")
    jsonl = read(
        write(tmp_path, "d.jsonl", '{"a": 1, "b": 2.5, "y": 0}\n\n{"a": 3, "b": null, "y": 1}\n'),
        "jsonl",
    )
    table = parquet(
        tmp_path,
        {
            "a": Array([1, 3], type=DataType.int64()),
            "b": Array([2.5, None], type=DataType.float64()),
            "y": Array([0, 1], type=DataType.int64()),
        },
    )
    columns = {"a": [1.0, 3.0], "b": [2.5, math.nan]}
    for dataset in (csv, jsonl, read(table, "parquet")):
        assert same(values(dataset), columns)
        assert all(column.problem is None for column in dataset.columns)
        assert dataset.rows == 2
    assert csv.labels == ["0", "1"]  # as written: matched to the model's classes later
    assert jsonl.labels == [0, 1]


def test_max_rows_takes_the_first_rows(tmp_path: Path):
    csv = write(tmp_path, "d.csv", "a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(10)))
    lines = "".join(f'{{"a": {i}, "y": {i % 2}}}\n' for i in range(10))
    jsonl = write(tmp_path, "d.jsonl", lines)
    table = parquet(
        tmp_path,
        {"a": Array(np.arange(10.0)), "y": Array(np.arange(10) % 2)},
    )
    for path, data_format in ((csv, "csv"), (jsonl, "jsonl"), (table, "parquet")):
        dataset = read(path, data_format, max_rows=3)
        assert dataset.rows == 3
        assert dataset.column("a").values.tolist() == [0.0, 1.0, 2.0]


def test_a_byte_order_mark_is_not_part_of_the_first_name(tmp_path: Path):
    dataset = read(write(tmp_path, "d.csv", "\ufeff" + CSV), "csv")
    assert [column.name for column in dataset.columns] == ["a", "b"]


def test_json_lines_may_leave_keys_out(tmp_path: Path):
    path = write(tmp_path, "d.jsonl", '{"a": 1, "y": 0}\n{"b": 2, "y": 1, "a": 5}\n')
    dataset = read(path, "jsonl")
    assert same(values(dataset), {"a": [1.0, 5.0], "b": [math.nan, 2.0]})


def test_values_that_are_not_numbers_are_remembered_per_column(tmp_path: Path):
    csv = read(write(tmp_path, "d.csv", "id,a,y\nx1,1,0\nx2,2,1\n"), "csv")
    assert csv.column("id").problem == "row 1 holds 'x1'"
    assert csv.column("a").problem is None
    jsonl = read(write(tmp_path, "d.jsonl", '{"a": 1, "y": 0}\n{"a": [1, 2], "y": 1}\n'), "jsonl")
    assert jsonl.column("a").problem == "row 2 holds [1, 2]"
    table = read(
        parquet(
            tmp_path,
            {
                "s": Array(["p", None], type=DataType.string()),
                "flag": Array([True, None], type=DataType.bool()),
                "y": Array([0, 1], type=DataType.int64()),
            },
        ),
        "parquet",
    )
    assert table.column("s").problem == "row 1 holds 'p'"
    assert same(values(table), {"s": [math.nan, math.nan], "flag": [1.0, math.nan]})


def test_a_pandas_index_column_is_not_a_feature(tmp_path: Path):
    path = parquet(
        tmp_path,
        {
            "__index_level_0__": Array(["r1", "r2"], type=DataType.string()),
            "a": Array(np.array([1.0, 2.0])),
            "y": Array(np.array([0, 1])),
        },
    )
    assert [column.name for column in read(path, "parquet").columns] == ["a"]


# --- bad files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "data_format", "expected"),
    [
        ("e.csv", "", "csv", "the dataset is empty: no header row (CSV)"),
        ("h.csv", "a,b,y\n", "csv", "the dataset has no rows"),
        ("e.jsonl", "\n\n", "jsonl", "the dataset has no rows"),
        ("r.csv", "a,b,y\n1,2,0\n1,2\n", "csv", "line 3 has 2 values, the header has 3 columns"),
        ("q.csv", 'a,y\n"1,0\n', "csv", "not valid CSV"),
        ("n.csv", "a,,y\n1,2,0\n", "csv", "column 2 of the dataset has no name"),
        ("d.csv", "a,a,y\n1,2,0\n", "csv", "the dataset has two columns named 'a'"),
        ("l.csv", "a,y\n1,0\n2,\n", "csv", "row 2 has no label: column 'y' is empty there"),
        ("j.jsonl", '{"a": 1, "y": 0}\n{"a": 2\n', "jsonl", "line 2 is not valid JSON"),
        ("o.jsonl", "[1, 0]\n", "jsonl", "line 1 is a JSON list, not an object"),
        (
            "k.jsonl",
            '{"a": 1, "y": 0}\n{" ": 2, "y": 1}\n',
            "jsonl",
            "line 2 has a key with no name",
        ),
        ("m.jsonl", '{"a": 1, "y": 0}\n{"a": 2}\n', "jsonl", "row 2 has no label"),
        (
            "x.csv",
            "a,b\n1,2\n",
            "csv",
            "label column 'y' not found; the dataset's columns are: a, b",
        ),
        ("x.jsonl", '{"a": 1}\n', "jsonl", "label column 'y' not found"),
        ("u.csv", b"a,y\n\xff,0\n", "csv", "the dataset is not UTF-8 text (csv)"),
        ("p.csv", b"PAR1\x00\x00PAR1", "csv", "the dataset is a Parquet file, not csv"),
        ("c.parquet", b"PAR1 not really PAR1", "parquet", "not a readable Parquet file"),
        ("t.parquet", "a,y\n1,0\n", "parquet", "not a readable Parquet file"),
    ],
)
def test_a_bad_file_is_named_with_what_is_wrong(
    tmp_path: Path, name, content, data_format, expected
):
    assert expected in problem(write(tmp_path, name, content), data_format)


def test_a_parquet_file_without_the_label_column_or_rows(tmp_path: Path):
    no_label = parquet(tmp_path, {"a": Array(np.array([1.0]))}, "a.parquet")
    assert "label column 'y' not found; the dataset's columns are: a" in problem(
        no_label, "parquet"
    )
    empty = parquet(tmp_path, {"a": Array(np.zeros(0)), "y": Array(np.zeros(0))}, "b.parquet")
    assert problem(empty, "parquet") == "the dataset has no rows"


# --- features ---------------------------------------------------------------------------------


def info(n_features: int, feature_names: list[str] | None = None) -> ModelInfo:
    return ModelInfo("m", "binary", n_features, feature_names, [0, 1], True, "input-0")


def test_features_are_the_columns_but_the_label_in_file_order(tmp_path: Path):
    dataset = read(write(tmp_path, "d.csv", "b,y,a\n1,0,2\n3,1,4\n"), "csv")
    assert features_for(dataset, info(2), "candidate").tolist() == [[1.0, 2.0], [3.0, 4.0]]
    named = features_for(dataset, info(2, ["a", "b"]), "candidate")
    assert named.tolist() == [[2.0, 1.0], [4.0, 3.0]]


def test_a_non_numeric_feature_is_named(tmp_path: Path):
    dataset = read(write(tmp_path, "d.csv", "a,city,y\n1,Oslo,0\n"), "csv")
    with pytest.raises(ValidateError) as raised:
        features_for(dataset, info(2), "candidate")
    assert raised.value.kind == "dataset"
    assert raised.value.message.startswith(
        "feature column 'city' is not numeric: row 1 holds 'Oslo'"
    )


def test_a_feature_count_the_model_does_not_take(tmp_path: Path):
    dataset = read(write(tmp_path, "d.csv", "a,b,y\n1,2,0\n"), "csv")
    with pytest.raises(ValidateError) as raised:
        features_for(dataset, info(3, ["a", "b", "c"]), "stable")
    assert raised.value.kind == "model"
    assert raised.value.message == (
        "the dataset has 2 feature columns (every column but the label 'y'), and the stable "
        "model takes 3 features; columns named after its features are missing: c"
    )


# --- fetching ---------------------------------------------------------------------------------


def fetch(uri: str, cache_dir: Path, sha256: str | None = None) -> Path:
    return fetch_dataset(
        uri, sha256=sha256, cache_dir=cache_dir, timeout_seconds=5, max_bytes=10**6, retries=1
    )


def test_a_pinned_download_is_verified(tmp_path: Path):
    source = write(tmp_path, "holdout.csv", CSV)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with ArtifactServer(tmp_path) as server:
        path = fetch(f"{server.url}/holdout.csv", tmp_path / "cache", digest)
        assert path.read_text() == CSV
        with pytest.raises(ValidateError) as raised:
            fetch(f"{server.url}/holdout.csv", tmp_path / "cache", "0" * 64)
        assert raised.value.kind == "dataset"
        assert raised.value.message.startswith(
            f"dataset sha256 mismatch: {server.url}/holdout.csv has sha256 {digest}, "
            f"the pin is {'0' * 64}"
        )
        with pytest.raises(ValidateError, match=r"download of .*/gone\.csv failed: HTTP 404"):
            fetch(f"{server.url}/gone.csv", tmp_path / "cache", digest)


def test_a_local_file_is_verified_when_pinned(tmp_path: Path):
    source = write(tmp_path, "holdout.csv", CSV)
    assert fetch(source.as_uri(), tmp_path, None) == source
    with pytest.raises(ValidateError, match="dataset sha256 mismatch"):
        fetch(str(source), tmp_path, "ab" * 32)
    with pytest.raises(ValidateError, match=r"dataset file not found: .*/missing\.csv"):
        fetch(str(tmp_path / "missing.csv"), tmp_path, None)
