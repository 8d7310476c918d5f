"""scripts/category_levels.py on a hand-made S3-Rec item table."""

from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("category_levels")


def test_levels_by_hand(script, tmp_path, capsys):
    # brand first, then root 2, department, ..., leaf = category_id; item 3's path is short.
    items = pd.DataFrame({"item_id": [1, 2, 3], "category_id": [6, 9, 5],
                          "attribute_ids": [[1, 2, 3, 4, 6], [7, 2, 8, 9], [1, 5]]})
    items.to_parquet(tmp_path / "items.parquet")
    out = tmp_path / "levels.parquet"
    script.main(["--data", str(tmp_path), "--out", str(out)])
    table = pd.read_parquet(out)
    assert table["category_top"].tolist() == [3, 8, 5]
    assert table["category_leaf"].tolist() == [6, 9, 5]
    assert table["category_none"].tolist() == [1, 1, 1]
    assert "categories: category_leaf 3, category_top 3, category_none 1" in capsys.readouterr().out
    script.main(["--data", str(tmp_path), "--out", str(out), "--depth", "3"])
    assert pd.read_parquet(out)["category_top"].tolist() == [4, 9, 5]


def test_not_a_category_path_is_one_line(script, tmp_path, capsys):
    pd.DataFrame({"item_id": [1], "category_id": [6], "attribute_ids": [[1, 2, 3]]}).to_parquet(
        tmp_path / "items.parquet")
    with pytest.raises(SystemExit) as stop:
        script.main(["--data", str(tmp_path), "--out", str(tmp_path / "o.parquet")])
    assert stop.value.code == 2
    assert "the last attribute is not the category" in capsys.readouterr().err
    assert not (tmp_path / "o.parquet").exists()
