"""MovieLens folders (ML-100K, ML-1M, ML-20M / ml-latest) -> :class:`Interactions`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from resemb_pl.data.files import RATING_COLUMNS as _RATING_COLUMNS
from resemb_pl.data.files import existing as _existing
from resemb_pl.data.files import read_csv as _read_csv
from resemb_pl.data.files import reading as _reading
from resemb_pl.data.interactions import Interactions, canonicalize
from resemb_pl.errors import DataError


def _movielens_100k(folder: Path) -> tuple[pd.DataFrame, dict]:
    """``u.data`` ratings; category = first flagged genre in ``u.genre`` order ('unknown' = 0)."""
    data_path = _existing(folder / "u.data")
    ratings = _read_csv(data_path, sep="\t", header=None)
    if ratings.shape[1] != 4:
        raise DataError(f"{data_path}: expected 4 tab-separated fields, found {ratings.shape[1]}")
    ratings.columns = _RATING_COLUMNS
    genre_path = _existing(folder / "u.genre")
    genres = _read_csv(genre_path, sep="|", header=None, encoding="latin-1", quoting=csv.QUOTE_NONE)
    item_path = _existing(folder / "u.item")
    items = _read_csv(item_path, sep="|", header=None, encoding="latin-1", quoting=csv.QUOTE_NONE)
    if items.shape[1] != 5 + len(genres):
        raise DataError(
            f"{item_path}: expected {5 + len(genres)} columns (5 fields and one flag per genre "
            f"of {genre_path.name}), found {items.shape[1]}"
        )
    flags = items.iloc[:, 5:].to_numpy() == 1
    names = genres[0].astype(object).to_numpy()
    first = np.where(flags.any(axis=1), names[flags.argmax(axis=1)], None)
    first[first == "unknown"] = None
    return ratings, dict(zip(items[0], first, strict=True))


def _movielens_1m(folder: Path) -> tuple[pd.DataFrame, dict]:
    """``ratings.dat``/``movies.dat`` (``::``-separated); category = first listed genre."""
    # Splitting on ':' keeps the fast C parser; the empty fields between the colons are dropped.
    ratings_path = _existing(folder / "ratings.dat")
    ratings = _read_csv(ratings_path, sep=":", header=None)
    if ratings.shape[1] != 7:
        raise DataError(f"{ratings_path}: expected UserID::MovieID::Rating::Timestamp lines")
    ratings = ratings[[0, 2, 4, 6]].set_axis(_RATING_COLUMNS, axis=1)
    path = _existing(folder / "movies.dat")
    categories = {}
    with _reading(path), path.open(encoding="latin-1") as lines:
        for lineno, line in enumerate(lines, 1):
            fields = line.rstrip("\r\n").split("::")
            if len(fields) != 3 or not fields[0].isdigit():
                raise DataError(f"{path}: line {lineno} is not MovieID::Title::Genres")
            categories[int(fields[0])] = fields[2].split("|")[0] or None
    return ratings, categories


def _movielens_20m(folder: Path) -> tuple[pd.DataFrame, dict]:
    """``ratings.csv``/``movies.csv``; category = first genre, '(no genres listed)' = 0."""
    names = ["userId", "movieId", "rating", "timestamp"]
    ratings = _read_csv(_existing(folder / "ratings.csv"), usecols=names)[names]
    movies = _read_csv(_existing(folder / "movies.csv"), usecols=["movieId", "genres"])
    first = movies["genres"].str.split("|").str[0].astype(object)
    first[first == "(no genres listed)"] = None
    categories = dict(zip(movies["movieId"], first, strict=True))
    return ratings.set_axis(_RATING_COLUMNS, axis=1), categories


_MOVIELENS_LAYOUTS = {
    "u.data": _movielens_100k,
    "ratings.dat": _movielens_1m,
    "ratings.csv": _movielens_20m,
}


def read_movielens(directory: str | Path) -> Interactions:
    """Read a MovieLens folder, recognising its layout by the ratings file it holds.

    - ML-100K: ``u.data``, ``u.item``, ``u.genre``; category = first flagged genre in
      ``u.genre`` order, where the genre 'unknown' is category 0.
    - ML-1M: ``ratings.dat``, ``movies.dat``; category = first listed genre.
    - ML-20M / ml-latest: ``ratings.csv``, ``movies.csv``; category = first genre, with
      '(no genres listed)' as category 0.

    Category names are in ``category_vocab``; rated movies missing from the catalogue get
    category 0.

    Raises:
        DataError: If the folder holds no known ratings file, or a file is missing or malformed.
    """
    folder = _existing(directory)
    for ratings_name, layout in _MOVIELENS_LAYOUTS.items():
        if (folder / ratings_name).is_file():
            ratings, categories = layout(folder)
            ratings["category"] = ratings["item"].map(categories)
            source = str(folder / ratings_name)
            return canonicalize(
                ratings, user="user", item="item", category="category", source=source
            )
    raise DataError(
        f"{folder}: not a MovieLens folder (looked for {', '.join(_MOVIELENS_LAYOUTS)})"
    )
