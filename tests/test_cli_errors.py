"""Bad input to the ``resemb-pl`` command: one line naming the problem, exit code 2, no traceback.

Every case runs the real command in a subprocess. The runs stop while the data is read or the
configuration is parsed, so each takes a few seconds.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.interactions import canonicalize, drop_short_users
from resemb_pl.data.readers import read_interactions
from resemb_pl.errors import DataError
from resemb_pl.task import CTRTask

_SCRIPT = Path(sys.executable).with_name("resemb-pl")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "resemb_pl.cli"]


def events(num_users: int = 8, per_user: int = 6, num_items: int = 20) -> pd.DataFrame:
    """A clean canonical table: every user clicks ``per_user`` items in time order."""
    rng = np.random.default_rng(0)
    rows = [
        (u, int(i), int(i) % 4, t, 4.0)
        for u in range(num_users)
        for t, i in enumerate(rng.choice(np.arange(1, num_items + 1), per_user, replace=False))
    ]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "timestamp", "rating"])


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    base = [
        "fit",
        "--data.cache_dir", str(tmp_path / "cache"),
        "--data.preset", "tiny",
        "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false",
        "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
    ]
    return subprocess.run(
        [*COMMAND, *base, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2, no traceback, one ``resemb-pl: error:`` line holding every word."""
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("resemb-pl: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def assert_no_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    files = cache.iterdir() if cache.exists() else []
    assert [p.name for p in files if not p.name.endswith(".lock")] == []


def interactions_args(path: Path | str) -> list[str]:
    return ["--data.source", "interactions", "--data.path", str(path)]


@pytest.fixture
def table(tmp_path: Path):
    """Write a variant of the clean table as csv; returns the path."""

    def write(frame: pd.DataFrame, name: str = "events.csv") -> Path:
        path = tmp_path / name
        frame.to_csv(path, index=False)
        return path

    return write


# -- files ---------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    result = run(tmp_path, *interactions_args(tmp_path / "nowhere.parquet"))
    assert_one_line_error(result, "nowhere.parquet", "no such file")
    assert_no_cache(tmp_path)


def test_missing_folder(tmp_path):
    result = run(tmp_path, "--data.source", "movielens", "--data.path", str(tmp_path / "ml-1m"))
    assert_one_line_error(result, "ml-1m", "no such file or directory")


def test_not_a_table(tmp_path):
    (tmp_path / "events.txt").write_text("user_id,item_id\n1,2\n")
    assert_one_line_error(run(tmp_path, *interactions_args(tmp_path / "events.txt")),
                          "events.txt", "not a parquet or csv")


def test_truncated_parquet(tmp_path):
    path = tmp_path / "events.parquet"
    events().to_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert_one_line_error(run(tmp_path, *interactions_args(path)), "cannot read", "events.parquet")
    assert_no_cache(tmp_path)


def test_missing_column(tmp_path, table):
    path = table(events().drop(columns="item_id"))
    assert_one_line_error(run(tmp_path, *interactions_args(path)), "events.csv", "'item_id'",
                          "missing column")


@pytest.mark.parametrize(
    ("column", "dtype", "row", "value", "fragments"),
    [
        ("timestamp", object, 3, "yesterday", ("'timestamp'", "not numeric", "row 3")),
        ("user_id", None, 5, -1, ("'user_id'", "negative id", "row 5")),
        ("item_id", float, 2, 2.5, ("'item_id'", "non-integer id 2.5", "row 2")),
        ("rating", None, 4, np.nan, ("'rating'", "NaN", "row 4")),
        ("rating", None, 7, -3.0, ("'rating'", "out of range", "row 7")),
        ("timestamp", None, 1, -5, ("'timestamp'", "out of range", "row 1")),
    ],
    ids=["wrong_dtype", "negative_id", "non_integer_id", "nan_rating", "out_of_range_rating",
         "out_of_range_timestamp"],
)
def test_bad_value_names_column_and_row(tmp_path, table, column, dtype, row, value, fragments):
    frame = events() if dtype is None else events().astype({column: dtype})
    frame.loc[row, column] = value
    assert_one_line_error(run(tmp_path, *interactions_args(table(frame))), *fragments)


def test_empty_after_filtering(tmp_path, table):
    frame = events(num_users=5, per_user=1)
    line = assert_one_line_error(run(tmp_path, *interactions_args(table(frame))), "empty",
                                 "fewer than 2 events")
    assert "5 user(s)" in line
    assert_no_cache(tmp_path)


def test_malformed_amazon_line(tmp_path):
    path = tmp_path / "reviews_Toys_5.json.gz"
    record = {"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": 1}
    with gzip.open(path, "wt") as fh:
        fh.write(json.dumps(record) + "\n" + '{"reviewerID": "A2", "asin": \n')
    result = run(tmp_path, "--data.source", "amazon", "--data.path", str(path))
    assert_one_line_error(result, "reviews_Toys_5.json.gz", "line 2", "not a valid JSON")


def test_meta_line_not_a_literal(tmp_path):
    reviews, meta = tmp_path / "reviews_Toys_5.json", tmp_path / "meta_Toys.json"
    lines = [{"reviewerID": f"A{u}", "asin": f"B{i}", "overall": 5.0, "unixReviewTime": i}
             for u in range(3) for i in range(3)]
    reviews.write_text("".join(json.dumps(r) + "\n" for r in lines))
    meta.write_text("{'asin': 'B0', 'categories': [['Toys']]}\n__import__('os').getcwd()\n")
    result = run(tmp_path, "--data.source", "amazon", "--data.path", str(reviews),
                 "--data.meta_path", str(meta))
    assert_one_line_error(result, "meta_Toys.json", "line 2", "not a valid Python literal")


# -- configuration -------------------------------------------------------------------------------
def test_unknown_config_key(tmp_path):
    assert_one_line_error(run(tmp_path, "--data.windw", "3"), "data.windw")


def test_unknown_key_in_config_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("trainer:\n  max_epoch: 3\n")
    assert_one_line_error(run(tmp_path, "--config", "bad.yaml"), "max_epoch")


def test_argument_of_wrong_type(tmp_path):
    assert_one_line_error(run(tmp_path, "--trainer.max_epochs", "many"), "trainer.max_epochs",
                          "many")


def test_unknown_source(tmp_path):
    assert_one_line_error(run(tmp_path, "--data.source", "kaggle"), "data.source", "kaggle")


@pytest.mark.parametrize("key", ["top_k", "window"])
def test_graph_parameter_below_one(tmp_path, key):
    assert_one_line_error(run(tmp_path, f"--data.{key}", "0"), f"data.{key}", ">= 1")


def test_fewer_items_than_top_k(tmp_path, table):
    path = table(events(num_items=10))
    result = run(tmp_path, *interactions_args(path), "--data.top_k", "50")
    assert_one_line_error(result, "items is fewer than data.top_k=50")
    assert_no_cache(tmp_path)


# -- checkpoints ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A checkpoint trained one step on a small table, and that table."""
    root = tmp_path_factory.mktemp("trained")
    path = root / "events.csv"
    events().to_csv(path, index=False)
    dm = CTRDataModule(source="interactions", path=str(path), cache_dir=None, top_k=2,
                       batch_size=8)
    task = CTRTask(dm.num_items, dm.num_categories, embedding_dim=4)
    trainer = Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(root / "model.ckpt")
    return root / "model.ckpt", path


def test_checkpoint_of_another_vocabulary(tmp_path, trained_checkpoint):
    ckpt, _ = trained_checkpoint
    frame = events()
    frame["item_id"] += 1000  # the same number of items, other ids
    path = tmp_path / "other.csv"
    frame.to_csv(path, index=False)
    result = run(tmp_path, *interactions_args(path), "--data.top_k", "2", "--ckpt_path", str(ckpt))
    first = int(events()["item_id"].iloc[0])  # dense item 1
    assert_one_line_error(result, "model.ckpt", "another item vocabulary",
                          f"item 1 is '{first}' there but '{first + 1000}' here")


def test_checkpoint_of_another_item_count(tmp_path, trained_checkpoint):
    ckpt, _ = trained_checkpoint
    path = tmp_path / "bigger.csv"
    events(num_users=30, num_items=40).to_csv(path, index=False)
    result = run(tmp_path, *interactions_args(path), "--data.top_k", "2", "--ckpt_path", str(ckpt))
    assert_one_line_error(result, "model.ckpt", "another item vocabulary", "model.num_items")


def test_checkpoint_of_another_model(tmp_path):
    ckpt = tmp_path / "other_model.ckpt"
    torch.save({"hyper_parameters": {"hidden_size": 32},
                "state_dict": {"layer.weight": torch.zeros(2, 2)}}, ckpt)
    result = run(tmp_path, "--ckpt_path", str(ckpt))
    assert_one_line_error(result, "other_model.ckpt", "another model", "hidden_size")


def test_missing_checkpoint(tmp_path):
    result = run(tmp_path, "--ckpt_path", str(tmp_path / "gone.ckpt"))
    assert_one_line_error(result, "gone.ckpt", "no such checkpoint")


def test_truncated_checkpoint(tmp_path, trained_checkpoint):
    ckpt = tmp_path / "cut.ckpt"
    ckpt.write_bytes(trained_checkpoint[0].read_bytes()[:1000])
    assert_one_line_error(run(tmp_path, "--ckpt_path", str(ckpt)), "cut.ckpt",
                          "not a readable checkpoint")


# -- what is dropped with a count rather than refused --------------------------------------------
def test_short_users_are_dropped_with_a_count(tmp_path, caplog):
    frame = pd.concat([events(num_users=6), events(num_users=9, per_user=1).iloc[6:]])
    path = tmp_path / "events.csv"
    frame.to_csv(path, index=False)
    dm = CTRDataModule(source="interactions", path=str(path), cache_dir=None, top_k=2)
    with caplog.at_level("WARNING"):
        dm.prepare_data()
    assert "dropped 3 user(s) with fewer than 2 events" in caplog.text
    assert dm.num_items == frame["item_id"].nunique()  # their items stay in the vocabulary
    assert set(dm.samples("test").user) == set(range(6))


def test_drop_short_users_renumbers_and_keeps_vocabularies():
    data = canonicalize(pd.DataFrame({
        "user_id": ["a", "b", "b", "c", "c", "c"], "item_id": [7, 8, 9, 7, 8, 9],
        "timestamp": [1, 1, 2, 1, 2, 3],
    }), category=None)
    kept, dropped = drop_short_users(data)
    assert dropped == 1
    assert list(kept.user_vocab) == ["b", "c"]
    assert kept.frame["user_id"].tolist() == [0, 0, 1, 1, 1]
    assert list(kept.item_vocab) == list(data.item_vocab)
    with pytest.raises(DataError, match="empty after dropping the 3 user"):
        drop_short_users(data, min_events=4)


def test_duplicates_are_dropped_with_a_count(tmp_path, caplog):
    frame = events()
    path = tmp_path / "events.csv"
    pd.concat([frame, frame.iloc[:4]]).to_csv(path, index=False)
    with caplog.at_level("WARNING"):
        data = read_interactions(path)
    assert "dropped 4 duplicate event(s)" in caplog.text
    assert data.num_events == len(frame)


def test_malformed_amazon_lines_can_be_skipped(tmp_path, caplog):
    path = tmp_path / "reviews_Toys_5.json"
    good = [{"reviewerID": f"A{u}", "asin": f"B{(u + k) % 6}", "overall": 5.0,
             "unixReviewTime": k} for u in range(4) for k in range(3)]
    path.write_text("".join(json.dumps(r) + "\n" for r in good) + "{broken\nnot json\n")
    dm = CTRDataModule(source="amazon", path=str(path), on_bad_line="skip", cache_dir=None,
                       top_k=2)
    with caplog.at_level("WARNING"):
        dm.prepare_data()
    assert "skipped 2 malformed line(s)" in caplog.text
    assert dm.num_items == 6
    with pytest.raises(DataError, match="line 13 is not a valid JSON object"):
        CTRDataModule(source="amazon", path=str(path), cache_dir=None, top_k=2).prepare_data()
