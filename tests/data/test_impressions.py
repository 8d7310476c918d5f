import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.impressions import (
    impression_samples,
    impressions_data,
    read_impressions,
    time_bounds,
)
from resemb_pl.data.synthetic import (
    IMPRESSION_COLUMNS,
    START_TIME,
    generate_impressions,
    main,
    write_impressions,
)
from resemb_pl.errors import ConfigError, DataError

MAPPING = {"user_id": "u", "item_id": "i", "label": "y", "timestamp": "t"}


def write_log(path, rows, columns=("u", "i", "y", "t")):
    frame = pd.DataFrame(rows, columns=list(columns))
    if str(path).endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    return path


def samples_of(arrays, stage):
    """(user, target, label, history) of every sample of a stage, as Python values."""
    a = {k[len(stage) + 1:]: v for k, v in arrays.items() if k.startswith(f"{stage}.")}
    return [
        (int(a["user"][n]), int(a["target"][n]), float(a["label"][n]),
         tuple(a["seq"][a["hist_start"][n]: a["hist_start"][n] + a["hist_len"][n]].tolist()))
        for n in range(len(a["target"]))
    ]


def reference(frame, max_len, val_from, test_from):
    """Per split, the multiset of (user, item, label, history) by brute force, in original ids.

    The history of a row: the user's clicks with time < the row's, by time then item, the last
    max_len of them.
    """
    out = {"train": [], "val": [], "test": []}
    for row in frame.itertuples(index=False):
        clicks = frame[(frame.u == row.u) & (frame.t < row.t) & (frame.y == 1)]
        hist = tuple(clicks.sort_values(["t", "i"], kind="stable").i.tolist()[-max_len:] or [])
        stage = "train" if row.t < val_from else "val" if row.t < test_from else "test"
        out[stage].append((row.u, row.i, float(row.y), hist))
    return {k: sorted(v) for k, v in out.items()}


def in_original_ids(arrays, log, stage):
    items = log.item_vocab
    return sorted(
        (log.user_vocab[u].item(), items[t - 1].item(), y, tuple(items[i - 1].item() for i in h))
        for u, t, y, h in samples_of(arrays, stage)
    )


# -- histories ------------------------------------------------------------------------------------
def test_hand_made_histories_ties_cold_start_and_time_split(tmp_path):
    rows = [  # (user, item, label, time)
        (7, 10, 1, 1),   # a's first click: nothing before it
        (7, 11, 1, 2), (7, 12, 0, 2),  # same time: neither sees the other's click
        (7, 13, 0, 3),   # sees 10 and 11
        (7, 14, 1, 5),   # validation (t >= 5): sees the training clicks
        (7, 15, 0, 8),   # test: sees 10, 11, 14; max_len=2 keeps the last two
        (8, 12, 0, 4),   # b: a cold start, kept with an empty history
        (8, 10, 1, 6), (8, 11, 0, 9),
    ]
    path = write_log(tmp_path / "log.parquet", rows)
    arrays = impressions_data(path, columns=MAPPING, max_len=2, val_from=5, test_from=8,
                              top_k=1).to_arrays()
    log = read_impressions(path, MAPPING)
    assert in_original_ids(arrays, log, "train") == sorted([
        (7, 10, 1.0, ()), (7, 11, 1.0, (10,)), (7, 12, 0.0, (10,)), (7, 13, 0.0, (10, 11)),
        (8, 12, 0.0, ()),
    ])
    assert in_original_ids(arrays, log, "val") == sorted([(7, 14, 1.0, (10, 11)),
                                                          (8, 10, 1.0, ())])
    assert in_original_ids(arrays, log, "test") == sorted([(7, 15, 0.0, (11, 14)),
                                                           (8, 11, 0.0, (10,))])
    # The graph holds the training clicks 10 -> 11 only: not 14 (validation) nor b's 10.
    edges = set(zip(*(log.item_vocab[arrays["edge_index"] - 1].tolist()), strict=True))
    assert edges == {(10, 11), (11, 10)}
    assert arrays["edge_weight"].tolist() == [1.0, 1.0]


rows_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 6), st.integers(0, 1), st.integers(0, 12)),
    min_size=1, max_size=40,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy, max_len=st.integers(1, 4))
def test_every_history_holds_only_strictly_earlier_clicks(tmp_path, rows, max_len):
    # Many ties in time and repeated (user, item) rows; user 9 makes every split non-empty.
    rows = [*rows, (9, 0, 1, 0), (9, 1, 0, 6), (9, 2, 1, 11)]
    frame = pd.DataFrame(rows, columns=["u", "i", "y", "t"])
    log = read_impressions(write_log(tmp_path / "h.parquet", rows), MAPPING)
    splits = impression_samples(log, max_len=max_len, val_from=6, test_from=11)
    arrays = {}
    for name, s in zip(("train", "val", "test"), splits, strict=True):
        arrays.update(s.to_arrays(f"{name}."))
    expected = reference(frame, max_len, 6, 11)
    for stage in ("train", "val", "test"):
        assert in_original_ids(arrays, log, stage) == expected[stage]
    # The graph sequences are the clicks before val_from, per user in time order.
    graph = frame[(frame.y == 1) & (frame.t < 6)].sort_values(["u", "t", "i"], kind="stable")
    assert log.item_vocab[splits.graph_items - 1].tolist() == graph.i.tolist()
    assert splits.graph_lengths.tolist() == graph.groupby("u").size().tolist()


def test_generated_log_histories_match_brute_force(tmp_path):
    table, _ = generate_impressions("impressions-tiny", seed=1)
    frame = table.select(["uid", "adgroup_id", "clk", "time_stamp"]).to_pandas()
    frame.columns = ["u", "i", "y", "t"]
    frame = frame[frame.u < frame.u.min() + 40]  # 40 users: brute force stays quick
    path = write_log(tmp_path / "g.parquet", frame)
    log = read_impressions(path, MAPPING)
    lo, hi = time_bounds(log.time, log.time_kind)
    arrays = {}
    for name, s in zip(("train", "val", "test"), impression_samples(log, max_len=5), strict=True):
        arrays.update(s.to_arrays(f"{name}."))
    expected = reference(frame, 5, lo, hi)
    for stage in ("train", "val", "test"):
        assert in_original_ids(arrays, log, stage) == expected[stage]
    assert sum(len(v) for v in expected.values()) == len(frame)


# -- the graph and leakage ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs") / "tiny"
    return write_impressions("impressions-tiny", folder, seed=0, rows_per_file=1000)


def test_no_validation_or_test_click_is_in_the_graph(tiny_log, tmp_path):
    dm = CTRDataModule(source="impressions", path=str(tiny_log), columns=IMPRESSION_COLUMNS,
                       split="time", window=2, top_k=8, cache_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    frame = pq.read_table(tiny_log).to_pandas()
    frame = frame.sort_values(["uid", "time_stamp", "adgroup_id", "clk"], kind="stable")
    val_from = np.sort(frame.time_stamp.to_numpy())[int(0.8 * len(frame))]
    vocab = {v: k + 1 for k, v in enumerate(np.asarray(dm.catalogue.item_vocab).astype(np.int64))}

    def graph_of(clicks):
        items = clicks.adgroup_id.map(vocab).to_numpy()
        lengths = clicks.groupby("uid", sort=False).size().to_numpy()
        g = build_interest_graph(items, lengths, dm.num_items, window=2, top_k=8)
        return set(zip(*g.edge_index.tolist(), g.edge_weight.tolist(), strict=True))

    got = set(zip(*dm.graph.edge_index.tolist(), dm.graph.edge_weight.tolist(), strict=True))
    clicks = frame[frame.clk == 1]
    assert got == graph_of(clicks[clicks.time_stamp < val_from])
    assert got != graph_of(clicks)  # with the later clicks the graph would differ
    assert (clicks.time_stamp >= val_from).sum() > 100


def test_user_split_graph_comes_from_training_users(tiny_log):
    log = read_impressions(tiny_log, IMPRESSION_COLUMNS)
    splits = impression_samples(log, split="user", seed=3)
    train_users = set(splits.train.user.tolist())
    assert not train_users & set(splits.val.user.tolist())
    assert not train_users & set(splits.test.user.tolist())
    clicked = (log.label == 1) & np.isin(log.user, list(train_users))
    assert len(splits.graph_items) == clicked.sum()
    assert sorted(splits.graph_items.tolist()) == sorted(log.item[clicked].tolist())


# -- reading: mapping, partitions, files ----------------------------------------------------------
def test_column_mapping_and_hive_partitions_round_trip(tiny_log, tmp_path):
    table = pq.read_table(tiny_log)  # dt comes back as a column from the partition folders
    assert "dt" in table.column_names
    original = table.to_pandas()
    original["dt"] = original.dt.astype(str)
    assert set(original.dt) == {str(np.datetime64(START_TIME + 86_400 * d, "s"))[:10]
                                for d in range(8)}
    log = read_impressions(tiny_log, IMPRESSION_COLUMNS)
    back = pd.DataFrame({
        "uid": log.user_vocab[log.user].astype(np.int64),
        "adgroup_id": log.item_vocab[log.item - 1].astype(np.int64),
        "clk": log.label.astype(np.int8),
        "time_stamp": log.time,
        "cate_id": log.category_vocab[log.item_category[log.item] - 1].astype(np.int64),
    })
    key = ["uid", "time_stamp", "adgroup_id", "clk", "cate_id"]
    pd.testing.assert_frame_equal(
        back[key].sort_values(key).reset_index(drop=True),
        original[key].sort_values(key).reset_index(drop=True), check_dtype=False,
    )
    # The partition column as the time: dates, split at given days.
    by_day = read_impressions(tiny_log, {**IMPRESSION_COLUMNS, "timestamp": "dt"})
    assert by_day.time_kind == "datetime"
    splits = impression_samples(by_day, val_from="2026-01-07", test_from="2026-01-08")
    days = original.groupby("dt").size()
    assert [len(s) for s in splits] == [days.iloc[:6].sum(), days.iloc[6], days.iloc[7]]
    # A whole day is one time, so a day's clicks are in no history of that day: on 2026-01-07
    # each history is the user's clicks of the six days before (at most 50).
    uid = by_day.user_vocab[splits.val.user].astype(np.int64)
    before = original[(original.dt < "2026-01-07") & (original.clk == 1)].groupby("uid").size()
    expected = np.minimum(before.reindex(uid, fill_value=0).to_numpy(), 50)
    np.testing.assert_array_equal(splits.val.hist_len, expected)
    assert expected.max() > 0


def test_folder_and_single_file_give_identical_samples(tiny_log, tmp_path):
    table = pq.read_table(tiny_log).drop_columns(["dt"])
    shuffled = table.take(np.random.default_rng(0).permutation(len(table)))  # any row order
    pq.write_table(shuffled, tmp_path / "one.parquet")
    shuffled.to_pandas().to_csv(tmp_path / "one.csv", index=False)
    folder = impressions_data(tiny_log, columns=IMPRESSION_COLUMNS).to_arrays()
    for single in ("one.parquet", "one.csv"):
        other = impressions_data(tmp_path / single, columns=IMPRESSION_COLUMNS).to_arrays()
        assert folder.keys() == other.keys()
        for key in folder:
            np.testing.assert_array_equal(folder[key], other[key], err_msg=f"{single}: {key}")


def test_spark_markers_are_skipped_and_only_mapped_columns_are_read(tiny_log, tmp_path,
                                                                    monkeypatch):
    import shutil

    folder = tmp_path / "spark"
    shutil.copytree(tiny_log, folder)
    (folder / "_SUCCESS").write_text("")
    (folder / "dt=2026-01-01" / ".part-00000.parquet.crc").write_bytes(b"\x00crc")
    import resemb_pl.data.impression_log as impressions

    read, real = [], impressions._dataset

    class Spy:
        def __init__(self, dataset):
            self.dataset, self.schema = dataset, dataset.schema

        def scanner(self, columns, **kwargs):
            read.append(columns)
            return self.dataset.scanner(columns=columns, **kwargs)

    monkeypatch.setattr(impressions, "_dataset", lambda path: Spy(real(path)))
    log = read_impressions(folder, {"user_id": "uid", "item_id": "adgroup_id", "label": "clk"})
    assert read == [["uid", "adgroup_id", "clk"]]  # neither pid, cate_id, time_stamp nor dt
    assert log.time_kind == "row" and (log.item_category == 0).all()


def test_interactions_source_takes_a_column_mapping(tmp_path):
    rows = [(u, i, t) for u in range(30) for t, i in enumerate(np.arange(5) + u % 7 + 1)]
    canonical = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    canonical.to_csv(tmp_path / "a.csv", index=False)
    canonical.set_axis(["member", "sku", "ts"], axis=1).to_csv(tmp_path / "b.csv", index=False)
    a = CTRDataModule(source="interactions", path=str(tmp_path / "a.csv"), cache_dir=None)
    b = CTRDataModule(source="interactions", path=str(tmp_path / "b.csv"), cache_dir=None,
                      columns={"user_id": "member", "item_id": "sku", "timestamp": "ts"})
    arrays_a, arrays_b = a.processed.to_arrays(), b.processed.to_arrays()
    assert arrays_a.keys() == arrays_b.keys()
    for key in arrays_a:
        np.testing.assert_array_equal(arrays_a[key], arrays_b[key])
    c = CTRDataModule(source="interactions", path=str(tmp_path / "b.csv"), cache_dir=None,
                      columns={"user_id": "member", "item_id": "item"})
    with pytest.raises(DataError, match=r"b\.csv: missing column\(s\) 'item' "
                                        r"\(data\.columns\.item_id\), 'timestamp' "
                                        r"\(map it with data\.columns\.timestamp\)"):
        c.prepare_data()


# -- negatives, cache ----------------------------------------------------------------------------
def test_sample_negatives_for_a_log_of_clicks(tmp_path):
    rows = [(u, i, 1, t) for u in range(20) for t, i in enumerate(range(u % 5, u % 5 + 6))]
    path = write_log(tmp_path / "clicks.parquet", rows)
    log = read_impressions(path, MAPPING)
    splits = impression_samples(log, max_len=3, negatives=2, val_from=4, test_from=5, seed=1)
    seen = {(u, i) for u, i in zip(log.user.tolist(), log.item.tolist(), strict=True)}
    for s in splits:
        assert len(s) == 3 * (s.label == 1).sum()
        pos = np.flatnonzero(s.label == 1)
        for k in (1, 2):  # each click is followed by two negatives sharing its history
            neg = pos + k
            assert (s.label[neg] == 0).all()
            assert (s.hist_start[neg] == s.hist_start[pos]).all()
            assert (s.hist_len[neg] == s.hist_len[pos]).all()
            assert (s.user[neg] == s.user[pos]).all()
            assert not any((u, i) in seen for u, i in zip(s.user[neg], s.target[neg], strict=True))


def test_interrupted_preparation_leaves_no_cache(tiny_log, tmp_path, monkeypatch):
    import resemb_pl.data.product as product

    cache = tmp_path / "cache"

    def make():
        return CTRDataModule(source="impressions", path=str(tiny_log),
                             columns=IMPRESSION_COLUMNS, split="time", cache_dir=str(cache))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(product, "build_interest_graph", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make().prepare_data()
    monkeypatch.undo()
    leftovers = [p.name for p in cache.iterdir() if not p.name.endswith(".lock")]
    assert leftovers == []
    # Interrupted while the cache is written: after the first array file.
    written = []
    real_save = np.save

    def save_then_stop(file, array, *args, **kwargs):
        if written:
            raise KeyboardInterrupt
        written.append(file)
        return real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        make().prepare_data()
    monkeypatch.undo()
    assert written  # the writer did start
    assert [p.name for p in cache.iterdir() if not p.name.endswith(".lock")] == []
    dm = make()
    dm.prepare_data()
    assert len(dm.samples("train")) > 0
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".")] != []


# -- errors ---------------------------------------------------------------------------------------
def test_bad_logs_are_one_line_errors_naming_file_row_column_and_key(tmp_path):
    good = [(1, 2, 0, 10), (1, 3, 1, 11), (2, 2, 1, 12)]
    path = write_log(tmp_path / "good.parquet", good)
    with pytest.raises(ConfigError, match=r"data\.columns\.lable: unknown role 'lable'"):
        read_impressions(path, {**MAPPING, "lable": "y"})
    with pytest.raises(DataError, match=r"good\.parquet: no column 'clk' \(data\.columns\.label\)"
                                        r"; the columns are u, i, y, t"):
        read_impressions(path, {**MAPPING, "label": "clk"})
    with pytest.raises(DataError, match=r"no column 'label' \(map your column with "
                                        r"data\.columns\.label\)"):
        read_impressions(path, {"user_id": "u", "item_id": "i"})
    with pytest.raises(DataError, match=r"no column 'ts' \(data\.columns\.timestamp\)"):
        read_impressions(path, {**MAPPING, "timestamp": "ts"})
    write_log(tmp_path / "two.parquet", [(1, 2, 2, 10), (1, 3, 1, 11)])
    with pytest.raises(DataError, match=r"two\.parquet: row 0: column 'y' \(data\.columns\.label\)"
                                        r" has the label 2; expected 0 or 1"):
        read_impressions(tmp_path / "two.parquet", MAPPING)
    # A null in the second part file is reported with that file's own row number.
    folder = tmp_path / "parts" / "dt=2026-01-01"
    folder.mkdir(parents=True)
    write_log(folder / "part-00000.parquet", good)
    pq.write_table(pa.table({"u": [4, None], "i": [1, 1], "y": [0, 1], "t": [1, 2]}),
                   folder / "part-00001.parquet")
    with pytest.raises(DataError, match=r"part-00001\.parquet: row 1: column 'u' "
                                        r"\(data\.columns\.user_id\) has a missing value"):
        read_impressions(tmp_path / "parts", MAPPING)
    write_log(tmp_path / "f.csv", [(1, 2.5, 0, 1)])
    with pytest.raises(DataError, match=r"f\.csv: row 0: column 'i' .* non-integer id 2\.5"):
        read_impressions(tmp_path / "f.csv", MAPPING)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: the folder holds no parquet part files"):
        read_impressions(tmp_path / "empty", MAPPING)
    (tmp_path / "cut.parquet").write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"cannot read .*cut\.parquet"):
        read_impressions(tmp_path / "cut.parquet", MAPPING)
    with pytest.raises(DataError, match=r"nothing\.parquet: no such file or directory"):
        read_impressions(tmp_path / "nothing.parquet", MAPPING)
    log = read_impressions(path, MAPPING)
    with pytest.raises(DataError, match=r"good\.parquet: no validation impressions "
                                        r"\(val_from=11\.2, test_from=11\.5\)"):
        impression_samples(log, val_from=11.2, test_from=11.5)


def test_time_bounds_from_quantiles_numbers_and_dates():
    times = np.arange(100, dtype=np.int64) + START_TIME
    assert time_bounds(times, "number") == (START_TIME + 80, START_TIME + 90)
    assert time_bounds(times, "number", (0.5, 0.25)) == (START_TIME + 50, START_TIME + 75)
    # Dates on a numeric column are Unix seconds; numbers on a date column too.
    assert time_bounds(times, "number", val_from="2026-01-01", test_from="2026-01-02") == (
        START_TIME, START_TIME + 86_400)
    ns = times * 10**9
    assert time_bounds(ns, "datetime", val_from=START_TIME, test_from="2026-01-01 00:01") == (
        START_TIME * 10**9, (START_TIME + 60) * 10**9)
    with pytest.raises(ConfigError, match=r"data\.test_from: required with data\.val_from"):
        time_bounds(times, "number", val_from=5)
    with pytest.raises(ConfigError, match=r"data\.val_from: must be before data\.test_from"):
        time_bounds(times, "number", val_from=9, test_from=5)
    with pytest.raises(ConfigError, match=r"data\.time_fractions: need train > 0"):
        time_bounds(times, "number", (0.9, 0.2))
    with pytest.raises(ConfigError, match=r"data\.val_from: the log has no time column"):
        time_bounds(times, "row", val_from="2026-01-01", test_from="2026-01-02")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "impressions", "path": "x", "split": "last"},
         r"data\.split: an impression log splits by 'time' or 'user'"),
        ({"source": "interactions", "path": "x", "split": "time"},
         r"data\.split: 'time' is for source 'impressions'"),
        ({"source": "synthetic", "columns": {"user_id": "u"}},
         r"data\.columns: for sources 'interactions' and 'impressions'"),
        ({"source": "impressions", "path": "x", "split": "time", "sample_negatives": -1},
         r"data\.sample_negatives: must be >= 0"),
        ({"source": "synthetic", "sample_negatives": 2},
         r"data\.sample_negatives: for source 'impressions'"),
        ({"source": "impressions", "path": "x", "split": "user", "val_from": 3},
         r"data\.val_from: only with data\.split 'time'"),
        ({"source": "impressions", "path": "x", "split": "time", "columns": {"usr": "u"}},
         r"data\.columns\.usr: unknown role 'usr'"),
        ({"source": "impressions", "path": "x", "split": "time", "val_from": "soon",
          "test_from": 1}, r"data\.val_from: cannot read 'soon' as a date"),
    ],
)
def test_bad_options_are_refused_before_reading(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        CTRDataModule(**kwargs)


# -- the synthetic impression log -----------------------------------------------------------------
def test_synthetic_log_is_seeded_and_follows_the_interest_delay_model():
    a, dom = generate_impressions("impressions-tiny", seed=0)
    b, _ = generate_impressions("impressions-tiny", seed=0)
    c, _ = generate_impressions("impressions-tiny", seed=1)
    assert a.equals(b) and not a.equals(c)
    assert a.column_names == ["uid", "adgroup_id", "cate_id", "pid", "clk", "time_stamp"]
    f = a.to_pandas()
    assert (np.diff(f.time_stamp) >= 0).all()  # a log in time order
    assert f.groupby(["uid", "time_stamp"]).size().max() == 4  # a page: 4 items at one second
    # A click is far likelier on an item of the domain the user clicked last in the session.
    f["domain"] = dom[f.adgroup_id - 500_000]
    f = f.sort_values(["uid", "time_stamp"], kind="stable")
    session = (f.uid != f.uid.shift()) | (f.time_stamp - f.time_stamp.shift() > 60)
    f["session"] = session.cumsum()
    clicked = f.domain.where(f.clk == 1)
    f["last"] = clicked.groupby(f.session).transform(lambda s: s.ffill().shift())
    same = f[f["last"].notna() & (f.domain == f["last"])].clk.mean()
    other = f[f["last"].notna() & (f.domain != f["last"])].clk.mean()
    assert same > 3 * other


def test_write_impressions_cli_and_replacement(tmp_path, capsys):
    folder = tmp_path / "log"
    assert main(["impressions-tiny", str(folder), "--rows-per-file", "500"]) == 0
    assert "impressions to" in capsys.readouterr().out
    parts = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.parquet"))
    assert parts[0] == "dt=2026-01-01/part-00000.parquet"
    assert all(pq.ParquetFile(folder / p).metadata.num_rows <= 500 for p in parts)
    first = pq.read_table(folder).to_pandas()
    write_impressions("impressions-tiny", folder, seed=5)  # replaced as a whole
    assert not pq.read_table(folder).to_pandas().equals(first)
    assert sorted(os.listdir(tmp_path)) == ["log"]  # no temp folder left
    under_a_file = folder / "dt=2026-01-01" / "part-00000.parquet" / "x"
    assert main(["impressions-tiny", str(under_a_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("resemb-pl: error: ") and err.count("\n") == 1
    assert "part-00000.parquet: File exists" in err
