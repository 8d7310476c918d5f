import numpy as np
import pandas as pd
import pytest

from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.interactions import canonicalize
from resemb_pl.data.protocols import din_samples, movielens_samples, sample_negatives
from resemb_pl.data.readers import read_interactions
from resemb_pl.data.synthetic import generate
from resemb_pl.errors import ConfigError, DataError


def toy():
    # user a: 1 2 3 4 ; user b: 3 5 6 ; 8 items in the catalogue (7 and 8 never clicked)
    frame = pd.DataFrame(
        {"user_id": list("aaaabbb"), "item_id": [1, 2, 3, 4, 3, 5, 6], "timestamp": range(7),
         "category_id": [1, 1, 2, 2, 2, 3, 3]}
    )
    data = canonicalize(frame)
    data.item_vocab = np.append(data.item_vocab, [7, 8])
    return data


def test_din_last_split_hand_made():
    data = toy()
    splits = din_samples(data, max_len=2, split="last", seed=0)
    train, val, test = splits
    # a: train k=1 (target s2), val k=2 (s3), test k=3 (s4); b: val k=1, test k=2, no train.
    assert train.target[train.label == 1].tolist() == [2]
    assert val.target[val.label == 1].tolist() == [3, 5]  # a's s3 and b's s2
    assert test.target[test.label == 1].tolist() == [4, 6]
    assert [test.history(i).tolist() for i in range(len(test))] == [[2, 3], [2, 3], [3, 5], [3, 5]]
    assert (train.label == [1, 0]).all()
    # graph: s_1..s_{n-2} of each user
    assert splits.graph_items.tolist() == [1, 2, 3]
    assert splits.graph_lengths.tolist() == [2, 1]


def test_train_on_val_trains_on_every_pair_but_the_test_one():
    # As the DIN repository, BARS and the peers: a trains on k=1, 2 (targets s2, s3), b on k=1.
    splits = din_samples(toy(), max_len=2, split="last", seed=0, train_on_val=True)
    train, val, test = splits
    assert train.target[train.label == 1].tolist() == [2, 3, 5]
    assert val.target[val.label == 1].tolist() == [3, 5]  # the same pairs, now in-sample
    assert test.target[test.label == 1].tolist() == [4, 6]  # the test pairs do not move
    # graph: s_1..s_{n-1}, so the test targets (4 and 6) stay out of it
    assert splits.graph_items.tolist() == [1, 2, 3, 3, 5]
    assert splits.graph_lengths.tolist() == [3, 2]
    held_out = din_samples(toy(), max_len=2, split="last", seed=0)
    assert len(train) == len(held_out.train) + len(held_out.val)
    with pytest.raises(ConfigError, match="train_on_val: only with data.split 'last', not 'user'"):
        din_samples(toy(), split="user", train_on_val=True)


def test_train_on_val_is_a_data_option_and_part_of_the_cache_key(tmp_path):
    from resemb_pl.data.datamodule import CTRDataModule

    dms = [CTRDataModule(preset="tiny", cache_dir=str(tmp_path), train_on_val=flag)
           for flag in (False, True)]
    for dm in dms:
        dm.setup("fit")
    held_out, trained = (len(dm.samples("train")) for dm in dms)
    assert trained == held_out + len(dms[0].samples("val"))
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2  # two caches, not one reused
    with pytest.raises(ConfigError, match="train_on_val: only with data.split 'last' of the DIN"):
        CTRDataModule(preset="tiny", split="user", train_on_val=True)


def test_negatives_never_touched():
    data = generate("tiny", seed=0)
    touched = set(zip(data.frame.user_id, data.frame.item_id, strict=True))
    for samples in din_samples(data, seed=3):
        neg = samples.label == 0
        assert not any((u, t) in touched for u, t in zip(samples.user[neg], samples.target[neg]))
        assert samples.target.min() >= 1 and samples.target.max() <= data.num_items


def test_max_len_cuts_to_the_most_recent():
    data = generate("tiny", seed=0)
    train, _, _ = din_samples(data, max_len=3, seed=0)
    assert train.hist_len.max() == 3
    seq = data.frame["item_id"].to_numpy()
    i = int(np.argmax(train.hist_len == 3))
    end = train.hist_start[i] + 3
    assert train.history(i).tolist() == seq[end - 3 : end].tolist()
    assert seq[end] == train.target[i] or train.label[i] == 0


def test_leakage_no_evaluation_target_in_graph():
    data = generate("tiny", seed=0)
    splits = din_samples(data, split="last", seed=0)
    users, lengths, items = data.sequences()
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    graph = build_interest_graph(splits.graph_items, splits.graph_lengths, data.num_items)
    edges = set(zip(*graph.edge_index.tolist(), strict=True))
    # The graph equals the one built from each user's sequence without its last two items.
    trimmed = [items[s : s + n - 2] for s, n in zip(starts, lengths, strict=True)]
    expect = build_interest_graph(np.concatenate(trimmed), [len(t) for t in trimmed], data.num_items)
    assert edges == set(zip(*expect.edge_index.tolist(), strict=True))
    # No evaluation target is linked to its own history through the graph's raw counts.
    for s, n in zip(starts, lengths, strict=True):
        assert not any(items[s + n - 1] in t or items[s + n - 2] in t for t in [items[s : s + n - 2]])


def test_user_split_disjoint_and_graph_from_train_users():
    data = generate("tiny", seed=0)
    splits = din_samples(data, split="user", seed=0)
    train, val, test = splits
    assert not set(train.user) & set(test.user)
    assert not set(val.user) & set(test.user)
    assert len(splits.graph_items) == (data.frame.user_id.isin(set(train.user))).sum()


def test_bad_arguments():
    with pytest.raises(ConfigError, match="unknown split 'random'"):
        din_samples(toy(), split="random")
    with pytest.raises(ConfigError, match="max_len: must be >= 1"):
        din_samples(toy(), max_len=0)
    with pytest.raises(DataError, match="needs a 'rating' column"):
        movielens_samples(toy())


def test_movielens_protocol_hand_made():
    frame = pd.DataFrame({"user_id": [1] * 5, "item_id": [10, 11, 12, 13, 14],
                          "timestamp": range(5), "rating": [5, 2, 3, 4, 1]})
    data = canonicalize(frame, category=None)
    s = movielens_samples(data, max_len=50, seed=0, user_fractions=(0.99, 0.0))
    train = s.train
    assert train.label.tolist() == [1, 0, 0, 1, 0]  # rating > 3
    # history = movies rated >= 3 before the event: 10, then 10 12, ...
    assert [train.history(i).tolist() for i in range(5)] == [[], [1], [1], [1, 3], [1, 3, 4]]


def test_din_protocol_on_real_sports(shared_data):
    data = read_interactions(shared_data / "amazon-sports-5core-seq")
    splits = din_samples(data, max_len=50, split="last", seed=0)
    train, val, test = splits
    n = data.frame.groupby("user_id").size().to_numpy()
    assert len(train) + len(val) == 2 * (n - 2).sum()
    assert len(test) == 2 * data.num_users
    key = set((data.frame.user_id * (data.num_items + 1) + data.frame.item_id).tolist())
    for s in splits:
        neg = s.label == 0
        assert not set((s.user[neg] * (data.num_items + 1) + s.target[neg]).tolist()) & key
    # The graph used for evaluation contains no evaluation target: rebuild from trimmed
    # sequences, and check no (history item, evaluation target) pair of a user is in it
    # unless another user's training sequence produced it.
    graph = build_interest_graph(splits.graph_items, splits.graph_lengths, data.num_items)
    _, lengths, items = data.sequences()
    assert len(splits.graph_items) == (lengths - 2).sum()
    starts = np.r_[0, np.cumsum(lengths)[:-1]]
    keep = np.ones(len(items), bool)
    keep[starts + lengths - 1] = keep[starts + lengths - 2] = False
    assert np.array_equal(splits.graph_items, items[keep])
    assert graph.num_nodes == data.num_items + 1


def test_negatives_of_a_user_who_touched_nearly_every_item():
    # User 0 touched items 1..999 of 1000: rejection sampling alone would give up.
    users = np.r_[np.zeros(999, np.int64), [1]]
    items = np.r_[np.arange(1, 1000), [5]]
    key = np.sort(users * 1001 + items)
    neg = sample_negatives(np.array([0, 0, 0, 1]), key, 1000, np.random.default_rng(0))
    assert neg[:3].tolist() == [1000, 1000, 1000]
    assert neg[3] != 5


def test_a_user_who_touched_every_item_is_named():
    frame = pd.DataFrame({"user_id": ["ann"] * 4 + ["bob"] * 4, "item_id": [1, 2, 3, 4, 1, 2, 3, 3],
                          "timestamp": [1, 2, 3, 4, 1, 2, 3, 4]})
    with pytest.raises(DataError, match=r"events: user 'ann' has interacted with every one of "
                                        r"the 4 items, so no negative item can be drawn"):
        din_samples(canonicalize(frame, category=None, source="events"))
