"""The canonical table: ids in one form (shared with requests) and events in real time order."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.interactions import canonicalize, normalize_ids, time_values
from resemb_pl.data.protocols import din_samples
from resemb_pl.data.readers import read_interactions
from resemb_pl.errors import DataError


@pytest.mark.parametrize(
    ("values", "ids", "valid"),
    [
        ([6, 7], [6, 7], [True, True]),
        (np.array([6.0, np.nan, 7.0]), [6, 7], [True, False, True]),
        (pd.array([6, None], dtype="Int64"), [6], [True, False]),
        (np.array([2**63 + 1], dtype=np.uint64), ["9223372036854775809"], [True]),
        ([6.5, 6.0], ["6.5", "6"], [True, True]),
        (["6", None, "é"], ["6", "é"], [True, False, True]),
        (np.array([True, False]), ["True", "False"], [True, True]),
        ([6, "6", 6.0, Decimal("6"), np.int8(6)], ["6", "6", "6", "6", "6"], [True] * 5),
        (pd.Series(pd.to_datetime(["2024-01-31", None])), ["2024-01-31 00:00:00"], [True, False]),
        ([dt.date(2024, 1, 31), float("nan")], ["2024-01-31 00:00:00"], [True, False]),
        ([], [], []),
    ],
    ids=["int", "float_with_null", "nullable_int", "big_uint", "fraction", "str", "bool",
         "mixed", "datetime", "date", "empty"],
)
def test_normalize_ids(values, ids, valid):
    got, mask = normalize_ids(values, source="f", column="item_id")
    assert got.tolist() == ids
    assert mask.tolist() == valid
    if ids:
        assert got.dtype == (np.int64 if all(type(i) is int for i in ids) else object)


def test_normalize_ids_refuses_lists_naming_the_row():
    with pytest.raises(DataError, match=r"f: column 'item_id' holds a list at row 7, not a single"):
        normalize_ids([6, np.array([1, 2])], source="f", column="item_id", rows=np.array([3, 7]))


def test_fractional_times_keep_their_order():
    # One user, all events within one second: the newest (item 10) is the test target.
    frame = pd.DataFrame({"user_id": [1] * 5 + [2] * 2, "item_id": [11, 10, 12, 13, 14, 15, 16],
                          "timestamp": [0.3, 0.9, 0.1, 0.5, 0.7, 0.2, 0.4]})
    data = canonicalize(frame, category=None)
    items = data.item_vocab[data.frame["item_id"].to_numpy() - 1].tolist()
    assert items[:5] == [12, 11, 13, 14, 10]
    assert data.frame["timestamp"].tolist()[:5] == [0.1, 0.3, 0.5, 0.7, 0.9]
    test = din_samples(data, max_len=10).test
    assert data.item_vocab[test.target[test.label == 1] - 1].tolist() == [10, 16]


@pytest.mark.parametrize(
    "times",
    [
        pd.to_datetime(["2024-01-01 00:00:00.3", "2024-01-01 00:00:00.9", "2024-01-01 00:00:00.1"],
                       format="ISO8601"),
        pd.to_datetime(["2024-01-01T01:00:00.3+01:00", "2024-01-01T00:00:00.9Z",
                        "2024-01-01T00:00:00.1Z"], format="ISO8601", utc=True),
        ["2024-01-01T00:00:00.3", "2024-01-01T00:00:00.9", "2024-01-01T00:00:00.1"],
        pd.to_timedelta([0.3, 0.9, 0.1], unit="s"),
        [True, True, False],
    ],
    ids=["datetime", "datetime_tz", "iso_strings", "timedelta", "bool"],
)
def test_times_of_any_type_sort_by_real_value(times):
    frame = pd.DataFrame({"user_id": ["u"] * 3, "item_id": [1, 2, 3], "timestamp": times})
    data = canonicalize(frame, category=None)
    order = data.item_vocab[data.frame["item_id"].to_numpy() - 1].tolist()
    assert order == [3, 1, 2]


def test_time_values_errors():
    with pytest.raises(DataError, match=r"f: column 't' is not numeric or a date \(or is missing\) "
                                        r"at row 1"):
        time_values(pd.Series(["2024-01-01", "yesterday"]), source="f", column="t")
    with pytest.raises(DataError, match=r"f: column 't' has a missing time at row 0"):
        time_values(pd.Series(pd.to_datetime([None, "2024-01-01"])), source="f", column="t")
    with pytest.raises(DataError, match=r"f: column 't' is out of range at row 0"):
        time_values(pd.Series([np.inf]), source="f", column="t")
    with pytest.raises(DataError, match=r"f: column 't' holds a list at row 1, not a single value"):
        time_values(pd.Series([5, [2, 3]], dtype=object), source="f", column="t")


def test_float_and_int_ids_are_one_item(tmp_path):
    # An int column with a null elsewhere is read as floats: 6.0 is item 6, as in requests.
    frame = pd.DataFrame({"user_id": [1.0, 1.0, 2.0], "item_id": [6.0, 7.0, 6.0],
                          "timestamp": [1, 2, 1]})
    data = canonicalize(frame, category=None)
    assert data.item_vocab.tolist() == [6, 7]
    assert data.user_vocab.tolist() == [1, 2]
    assert type(data.item_vocab[0]) is int
    mixed = canonicalize(pd.DataFrame({"user_id": ["u", "u"], "item_id": [6, "6"],
                                       "timestamp": [1, 2]}, dtype=object), category=None)
    assert mixed.num_items == 1


def test_list_valued_columns_are_named(tmp_path):
    for column in ("user_id", "item_id", "timestamp", "category_id"):
        frame = pd.DataFrame({"user_id": [1, 1], "item_id": [6, 7], "timestamp": [1, 2],
                              "category_id": [1, 1]})
        frame[column] = pd.Series([[1, 2], [3]], dtype=object)
        frame.to_parquet(tmp_path / f"{column}.parquet")
        with pytest.raises(DataError, match=rf"{column}\.parquet: column '{column}' holds a list "
                                            r"at row 0, not a single value"):
            read_interactions(tmp_path / f"{column}.parquet")


def test_missing_id_names_the_file_row_before_duplicates_go(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("user_id,item_id,timestamp\n1,10,5\n1,10,5\n1,,6\n")
    with pytest.raises(DataError, match=r"d\.csv: column 'item_id' has a missing value at row 2"):
        read_interactions(path)


def test_item_table_matches_ids_in_their_one_form(tmp_path):
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\n1,10,1\n1,11,2\n")
    pd.DataFrame({"item_id": [10.0, 11.0, np.nan][:2], "cat": ["x", "y"]}).to_parquet(
        tmp_path / "i.parquet")
    data = read_interactions(tmp_path / "e.csv", items_path=tmp_path / "i.parquet",
                             columns={"category_id": "cat"})
    assert data.category_vocab.tolist() == ["x", "y"]
    assert data.frame["category_id"].tolist() == [1, 2]


def test_fit_refuses_a_table_without_training_samples(tmp_path):
    # Split 'last' trains on the events before each user's last two: 3 events give none.
    pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2], "item_id": [5, 6, 7, 7, 8, 9],
                  "timestamp": [1, 2, 3, 1, 2, 3]}).to_parquet(tmp_path / "e.parquet")
    dm = CTRDataModule(source="interactions", path=str(tmp_path / "e.parquet"), cache_dir=None,
                       top_k=1)
    dm.setup("validate")  # evaluating such data is fine
    with pytest.raises(DataError, match=r"e\.parquet: no training samples; a user needs 4 or "
                                        r"more events"):
        dm.setup("fit")
