"""Readers: counts on the real files in ../shared/data, exact results on hand-made files in the
official formats, and one-line errors on bad input."""

from __future__ import annotations

import gzip
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from resemb_pl.data.interactions import Interactions
from resemb_pl.data.readers import read_amazon, read_interactions, read_movielens, read_source
from resemb_pl.errors import ConfigError, DataError


def real(*parts: str) -> Path:
    """A path under the shared data folder, or skip the test when it is absent."""
    default = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    path = Path(os.environ.get("RESEMB_SHARED_DATA") or default).joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: real-data tests need ../shared/data")
    return path


@contextmanager
def data_error(match: str) -> Iterator[None]:
    """Expect a one-line DataError matching ``match``."""
    with pytest.raises(DataError, match=match) as info:
        yield
    assert "\n" not in str(info.value)


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text, encoding=encoding)
    return path


def assert_sorted(frame: pd.DataFrame) -> None:
    users, times = frame["user_id"].to_numpy(), frame["timestamp"].to_numpy()
    assert (np.diff(users) >= 0).all()
    assert ((np.diff(users) > 0) | (np.diff(times) >= 0)).all()


def events(data: Interactions) -> list[tuple]:
    """The events with their original ids, sorted."""
    frame = data.frame
    users = data.user_vocab[frame["user_id"]]
    items = data.item_vocab[frame["item_id"] - 1]
    return sorted(zip(users, items, frame["timestamp"], frame["rating"], strict=True))


def review(user: str, asin: str, rating: float, time: int) -> str:
    record = {
        "reviewerID": user,
        "asin": asin,
        "reviewerName": "x",
        "helpful": [0, 0],
        "reviewText": "ok",
        "overall": rating,
        "summary": "s",
        "unixReviewTime": time,
    }
    return json.dumps(record) + "\n"


# ---------------------------------------------------------------------------------- Amazon


def test_amazon_real_musical_instruments():
    path = real("raw", "amazon-musical-instruments", "reviews_Musical_Instruments_5.json.gz")
    data = read_amazon(path)
    assert (data.num_events, data.num_users, data.num_items) == (10_261, 1_429, 900)
    assert data.num_categories == 0
    assert (data.frame["category_id"] == 0).all()
    assert_sorted(data.frame)
    assert set(data.frame["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert data.frame["item_id"].min() == 1
    assert data.frame["item_id"].max() == 900
    # The same events as the processed folder made from the same file.
    assert events(data) == events(read_interactions(real("amazon-musical-instruments-5core")))


META = (
    "{'asin': 'B1', 'categories': [['Electronics', 'Computers & Accessories', 'Cables'], "
    "['Other']], 'title': 'x', 'price': 9.99, 'related': {'also_bought': ['B2']}}\n"
    "{'asin': 'B2', 'categories': [['Electronics', 'Camera & Photo', 'Lenses']]}\n"
    "\n"
    "{'asin': 'B3', 'categories': [], 'title': \"it's\"}\n"
    '{"asin": "B5", "categories": [["Electronics", "Audio"]], "in_stock": true}\n'
    "{'asin': 'B9', 'categories': [['Books', 'Unused']]}\n"
)


def test_amazon_meta_din_category(tmp_path):
    reviews = write(
        tmp_path / "reviews_X_5.json",
        "".join(
            [
                review("U2", "B2", 4.0, 200),
                review("U1", "B1", 5.0, 100),
                review("U2", "B4", 1.0, 100),
                review("U1", "B3", 2.0, 50),
                review("U1", "B5", 3.0, 300),
            ]
        ),
    )
    meta = write(tmp_path / "meta_X.json", META)
    data = read_amazon(reviews, meta)
    assert data.user_vocab.tolist() == ["U2", "U1"]
    assert data.item_vocab.tolist() == ["B4", "B2", "B3", "B1", "B5"]
    # DIN: last entry of the last path (B1 -> 'Other'); no meta (B4) or no path (B3) -> 0.
    assert data.category_vocab.tolist() == ["Lenses", "Other", "Audio"]
    assert data.frame["user_id"].tolist() == [0, 0, 1, 1, 1]
    assert data.frame["item_id"].tolist() == [1, 2, 3, 4, 5]
    assert data.frame["category_id"].tolist() == [0, 1, 0, 2, 3]
    assert data.frame["timestamp"].tolist() == [100, 200, 50, 100, 300]
    assert data.frame["rating"].tolist() == [1.0, 4.0, 2.0, 5.0, 3.0]
    # The paper's wording: last entry of the first path (B1 -> 'Cables').
    first = read_amazon(reviews, meta, category_path="first")
    assert first.category_vocab[first.frame["category_id"].to_numpy()[3] - 1] == "Cables"
    gz = tmp_path / "meta_X.json.gz"
    gz.write_bytes(gzip.compress(META.encode()))
    assert read_amazon(reviews, gz).frame.equals(data.frame)


def test_amazon_meta_is_never_evaluated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reviews = write(tmp_path / "r.json", review("U1", "B1", 5.0, 1))
    meta = write(tmp_path / "m.json", "{'asin': 'B0'}\n{'asin': open('PWNED', 'w').name}\n")
    with data_error(r"m\.json: line 2 is not a valid Python literal \(malformed node"):
        read_amazon(reviews, meta)
    assert not (tmp_path / "PWNED").exists()
    with data_error(r"m2\.json: line 1 has no key 'asin'"):
        read_amazon(reviews, write(tmp_path / "m2.json", "{'title': 'x'}\n"))
    with data_error(r"m3\.json: line 1: 'categories' is not a list of category paths"):
        read_amazon(reviews, write(tmp_path / "m3.json", "{'asin': 'B1', 'categories': 'x'}\n"))


def test_amazon_bad_meta_line_skip(tmp_path, caplog):
    reviews = write(tmp_path / "r.json", review("U1", "B1", 5.0, 1) + review("U1", "B2", 4.0, 2))
    meta = write(tmp_path / "m.json", "{'asin': 'B1', 'categories': [['A']]}\nnot a literal\n")
    with caplog.at_level(logging.WARNING, logger="resemb_pl.data.readers"):
        data = read_amazon(reviews, meta, on_bad_line="skip")
    assert data.frame["category_id"].tolist() == [1, 0]
    assert "m.json: skipped 1 malformed line(s)" in caplog.text


def test_amazon_malformed_json_line(tmp_path, caplog):
    broken = '{"reviewerID": "U1", "asin": \n'
    text = review("U1", "B1", 5.0, 1) + broken + review("U1", "B2", 4.0, 2) + "[1, 2]\n"
    reviews = write(tmp_path / "reviews.json", text)
    with data_error(r"reviews\.json: line 2 is not a valid JSON object \(Expecting value"):
        read_amazon(reviews)
    with caplog.at_level(logging.WARNING, logger="resemb_pl.data.readers"):
        data = read_amazon(reviews, on_bad_line="skip")
    assert data.num_events == 2
    assert "reviews.json: skipped 2 malformed line(s)" in caplog.text
    with pytest.raises(ConfigError, match="on_bad_line='ignore' is not one of: error, skip"):
        read_amazon(reviews, on_bad_line="ignore")


def test_amazon_missing_key_file_and_truncated_gzip(tmp_path):
    bad = json.dumps({"reviewerID": "U1", "asin": "B1", "unixReviewTime": 3})
    reviews = write(tmp_path / "r.json", review("U1", "B1", 5.0, 1) + bad + "\n")
    with data_error(r"r\.json: line 2 has no key 'overall'"):
        read_amazon(reviews)
    with data_error(r"nope\.json: no such file or directory"):
        read_amazon(tmp_path / "nope.json")
    good = write(tmp_path / "ok.json", review("U1", "B1", 5.0, 1))
    with data_error(r"meta\.json: no such file or directory"):
        read_amazon(good, tmp_path / "meta.json")
    truncated = tmp_path / "r.json.gz"
    text = "".join(review("U", "B", 5.0, t) for t in range(50))
    truncated.write_bytes(gzip.compress(text.encode())[:-30])
    with data_error(r"cannot read .*r\.json\.gz: Compressed file ended"):
        read_amazon(truncated)
    with data_error(r"e\.json: the table is empty"):
        read_amazon(write(tmp_path / "e.json", "\n"))


# ------------------------------------------------------------------------------- MovieLens


def test_movielens_real_100k():
    data = read_movielens(real("raw", "ml-100k"))
    assert (data.num_events, data.num_users, data.num_items) == (100_000, 943, 1_682)
    assert_sorted(data.frame)
    # 18 named genres; the genre 'unknown' is category 0.
    assert data.num_categories == 18
    assert "unknown" not in data.category_vocab.tolist()
    names = np.r_[["?"], data.category_vocab][data.item_category()[1:]]
    by_movie = dict(zip(data.item_vocab.tolist(), names, strict=True))
    assert by_movie[1] == "Animation"  # Toy Story: Animation|Children's|Comedy
    assert by_movie[2] == "Action"  # GoldenEye: Action|Adventure|Thriller
    assert by_movie[267] == by_movie[1373] == "?"  # flagged 'unknown'
    # The processed folder was made from the same files.
    assert events(data) == events(read_interactions(real("movielens-100k")))


def test_movielens_1m_format(tmp_path):
    write(
        tmp_path / "ratings.dat",
        "2::20::3::300\n1::10::5::100\n1::30::4::50\n2::10::1::300\n1::40::2::200\n",
    )
    write(
        tmp_path / "movies.dat",
        '10::Café: "A" Story (1995)::Comedy|Drama\n'
        "20::Heat (1995)::Action|Crime|Thriller\n30::Toy Story (1995)::Animation|Children's\n",
        encoding="latin-1",
    )
    data = read_movielens(tmp_path)
    assert data.source.endswith("ratings.dat")
    assert data.user_vocab.tolist() == [2, 1]
    assert data.item_vocab.tolist() == [20, 10, 30, 40]
    assert data.category_vocab.tolist() == ["Action", "Comedy", "Animation"]
    frame = data.frame
    assert frame["user_id"].tolist() == [0, 0, 1, 1, 1]
    assert frame["item_id"].tolist() == [1, 2, 3, 2, 4]  # ties (user 2, t=300) keep file order
    assert frame["category_id"].tolist() == [1, 2, 3, 2, 0]  # movie 40 is not in movies.dat
    assert frame["timestamp"].tolist() == [300, 300, 50, 100, 200]
    assert frame["rating"].tolist() == [3.0, 1.0, 4.0, 5.0, 2.0]


def test_movielens_20m_format(tmp_path):
    write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n5,100,4.5,1000\n5,200,3.0,900\n7,300,2.5,800\n",
    )
    write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n100,"American President, The (1995)",'
        "Comedy|Drama|Romance\n200,Jumanji (1995),Adventure|Children|Fantasy\n"
        "300,Some Film (2015),(no genres listed)\n",
    )
    data = read_movielens(tmp_path)
    assert data.user_vocab.tolist() == [5, 7]
    assert data.item_vocab.tolist() == [200, 100, 300]
    assert data.category_vocab.tolist() == ["Adventure", "Comedy"]
    assert data.frame["category_id"].tolist() == [1, 2, 0]
    assert data.frame["timestamp"].tolist() == [900, 1000, 800]
    assert data.frame["rating"].tolist() == [3.0, 4.5, 2.5]


def test_movielens_bad_folders(tmp_path):
    with data_error(r"not a MovieLens folder \(looked for u\.data, ratings\.dat, ratings\.csv\)"):
        read_movielens(tmp_path)
    write(tmp_path / "ratings.dat", "1::10::5::100::7\n")
    with data_error(r"ratings\.dat: expected UserID::MovieID::Rating::Timestamp lines"):
        read_movielens(tmp_path)
    write(tmp_path / "ratings.dat", "1::10::5::100\n1::11::5::100::7\n")
    with data_error(r"cannot read .*ratings\.dat: Error tokenizing data.* Expected 7 fields"):
        read_movielens(tmp_path)
    write(tmp_path / "ratings.dat", "1::10::5::100\n")
    with data_error(r"movies\.dat: no such file or directory"):
        read_movielens(tmp_path)
    write(tmp_path / "movies.dat", "10::Title::Drama\n11::Title::Drama::extra\n")
    with data_error(r"movies\.dat: line 2 is not MovieID::Title::Genres"):
        read_movielens(tmp_path)
    other = tmp_path / "csv"
    other.mkdir()
    write(other / "ratings.csv", "user,movie,rating,timestamp\n1,2,3,4\n")
    write(other / "movies.csv", "movieId,title,genres\n2,x,Drama\n")
    with data_error(r"cannot read .*ratings\.csv: .*columns expected but not found: .*userId"):
        read_movielens(other)
    with data_error(r"nope: no such file or directory"):
        read_movielens(tmp_path / "nope")


# ---------------------------------------------------------------------------- Interactions


@pytest.mark.parametrize(
    ("folder", "users", "items", "rows", "categories"),
    [
        ("amazon-beauty-5core-seq", 22_363, 12_101, 198_502, 195),
        ("amazon-sports-5core-seq", 35_598, 18_357, 296_337, 959),
        ("movielens-100k", 943, 1_682, 100_000, 19),
    ],
)
def test_interactions_real_folders(folder, users, items, rows, categories):
    data = read_interactions(real(folder))
    assert (data.num_users, data.num_items, data.num_events) == (users, items, rows)
    assert data.num_categories == categories
    assert_sorted(data.frame)
    raw = pd.read_parquet(real(folder, "interactions.parquet"))
    assert (data.user_vocab[data.frame["user_id"]] == raw["user_id"].to_numpy()).all()
    assert (data.item_vocab[data.frame["item_id"] - 1] == raw["item_id"].to_numpy()).all()


def test_interactions_items_path_names_categories():
    data = read_interactions(
        real("movielens-1m-sample100k"), items_path=real("movielens-1m-sample100k", "items.parquet")
    )
    assert data.num_categories == 18
    assert "Action" in data.category_vocab.tolist()
    assert (data.frame["category_id"] > 0).all()


def test_interactions_seq_pos_columns_and_no_category(tmp_path):
    frame = pd.DataFrame(
        {"user_id": [3, 3, 1], "item_id": [7, 8, 7], "seq_pos": [1, 0, 0], "category_id": [2, 0, 2]}
    )
    frame.to_parquet(tmp_path / "t.parquet")
    data = read_interactions(tmp_path / "t.parquet")
    assert data.frame["item_id"].tolist() == [1, 2, 2]  # user 3: item 8 then 7
    assert data.frame["timestamp"].tolist() == [0, 1, 0]
    assert data.category_vocab.tolist() == [0, 2]  # raw category 0 is a real category
    write(tmp_path / "t.csv", "uid,iid,when,stars\na,x,5,1.5\nb,y,3,2\n")
    data = read_interactions(
        tmp_path / "t.csv",
        columns={"user_id": "uid", "item_id": "iid", "timestamp": "when", "rating": "stars"},
    )
    assert data.user_vocab.tolist() == ["a", "b"]
    assert data.num_categories == 0
    assert data.frame["rating"].tolist() == [1.5, 2.0]
    assert data.frame["category_id"].tolist() == [0, 0]
    assert read_source(
        "interactions",
        tmp_path / "t.csv",
        columns={"user_id": "uid", "item_id": "iid", "timestamp": "when"},
    ).frame.equals(data.frame.drop(columns="rating"))


def test_interactions_items_path_in_tmp(tmp_path):
    write(tmp_path / "e.csv", "user_id,item_id,timestamp\n1,10,1\n1,11,2\n2,12,1\n")
    write(tmp_path / "i.csv", "item_id,cat,category_name\n10,5,Shoes\n11,6,Hats\n")
    data = read_interactions(
        tmp_path / "e.csv", items_path=tmp_path / "i.csv", columns={"category_id": "cat"}
    )
    assert data.category_vocab.tolist() == ["Shoes", "Hats"]
    assert data.frame["category_id"].tolist() == [1, 2, 0]
    write(tmp_path / "i2.csv", "item_id,cat\n10,5\n10,6\n")
    with data_error(r"i2\.csv: row 1 repeats item 10"):
        read_interactions(
            tmp_path / "e.csv", items_path=tmp_path / "i2.csv", columns={"category_id": "cat"}
        )


def test_interactions_duplicates(tmp_path, caplog):
    path = write(tmp_path / "d.csv", "user_id,item_id,timestamp\n1,10,5\n1,11,6\n1,10,5\n1,10,7\n")
    with caplog.at_level(logging.WARNING, logger="resemb_pl.data.readers"):
        data = read_interactions(path)
    assert data.num_events == 3
    assert "d.csv: dropped 1 duplicate event(s)" in caplog.text
    with data_error(r"d\.csv: row 2 repeats an earlier \(user_id, item_id, timestamp\) event"):
        read_interactions(path, duplicates="error")


def test_interactions_bad_input(tmp_path):
    with data_error(r"t\.txt: not a parquet or csv file"):
        read_interactions(write(tmp_path / "t.txt", "user_id,item_id\n"))
    with data_error(r"none\.parquet: no such file or directory"):
        read_interactions(tmp_path / "none.parquet")
    with data_error(r"empty: folder has no interactions\.parquet"):
        (tmp_path / "empty").mkdir()
        read_interactions(tmp_path / "empty")
    good = pd.DataFrame({"user_id": range(100), "item_id": range(100), "timestamp": range(100)})
    good.to_parquet(tmp_path / "g.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "g.parquet").read_bytes()[:-40])
    with data_error(r"cannot read .*cut\.parquet: "):
        read_interactions(tmp_path / "cut.parquet")
    with data_error(r"cannot read .*blank\.csv: No columns to parse"):
        read_interactions(write(tmp_path / "blank.csv", ""))
    with data_error(r"m\.csv: missing column\(s\) 'item_id'"):
        read_interactions(write(tmp_path / "m.csv", "user_id,timestamp\n1,2\n"))
    with data_error(r"m2\.csv: missing column\(s\) 'r'"):
        read_interactions(
            write(tmp_path / "m2.csv", "user_id,item_id,timestamp\n1,2,3\n"),
            columns={"rating": "r"},
        )
    with data_error(r"n\.csv: column 'item_id' has a negative id at row 1"):
        read_interactions(write(tmp_path / "n.csv", "user_id,item_id,timestamp\n1,2,3\n1,-2,4\n"))
    with data_error(r"nan\.csv: column 'user_id' has a missing value at row 1"):
        read_interactions(write(tmp_path / "nan.csv", "user_id,item_id,timestamp\n1,2,3\n,2,4\n"))
    with data_error(r"nt\.csv: column 'timestamp' is not numeric or a date \(or is missing\) "
                    r"at row 0"):
        read_interactions(write(tmp_path / "nt.csv", "user_id,item_id,timestamp\n1,2,\n"))
    with pytest.raises(ConfigError, match="unknown name"):
        read_interactions(tmp_path / "g.parquet", columns={"user": "u"})


def test_movielens_100k_bad_u_data(tmp_path):
    write(tmp_path / "u.data", "1\t2\t3\t4\t5\n")
    with data_error(r"u\.data: expected 4 tab-separated fields, found 5"):
        read_movielens(tmp_path)
    write(tmp_path / "u.data", "1\t2\t3\t4\n")
    write(tmp_path / "u.genre", "unknown|0\nDrama|1\n")
    write(tmp_path / "u.item", "2|T|01-Jan-1995||http://x|0|1|0\n")
    with data_error(r"u\.item: expected 7 columns \(5 fields and one flag per genre of u\.genre\)"):
        read_movielens(tmp_path)


def test_read_source_dispatch(tmp_path):
    reviews = write(tmp_path / "r.json", review("U1", "B1", 5.0, 1))
    meta = write(tmp_path / "m.json", "{'asin': 'B1', 'categories': [['A', 'B']]}\n")
    assert read_source("amazon", reviews, meta_path=meta).category_vocab.tolist() == ["B"]
    write(tmp_path / "u.data", "1\t2\t3\t4\n")
    write(tmp_path / "u.genre", "unknown|0\nDrama|1\n\n")
    write(tmp_path / "u.item", "2|T|01-Jan-1995||http://x|0|1\n", encoding="latin-1")
    assert read_source("movielens", tmp_path).category_vocab.tolist() == ["Drama"]
    with pytest.raises(ConfigError, match="kind='json' is not one of: amazon, movielens, inter"):
        read_source("json", tmp_path)
