"""The data product: ProcessedData (cache form, subsets of users) and its Catalogue."""

import numpy as np
import pandas as pd
import pytest
import torch

from resemb_pl.data.catalogue import CHECKPOINT_KEY, Catalogue
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.data.interactions import canonicalize
from resemb_pl.data.product import ProcessedData
from resemb_pl.data.protocols import din_samples, movielens_samples
from resemb_pl.errors import CheckpointError, ConfigError

WINDOW, TOP_K = 2, 3


def din_frame() -> pd.DataFrame:
    sequences = {"u1": [11, 12, 13, 14, 15, 16], "u2": [13, 15, 17, 11, 12],
                 "u3": [16, 17, 18, 19], "u4": [12, 14, 16, 18], "u5": [19, 11, 13, 15, 17]}
    rows = [(u, i, t) for u, items in sequences.items() for t, i in enumerate(items)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


def movielens_frame() -> pd.DataFrame:
    # Each user's last event is rated exactly 3: liked (in the graph) but a negative sample.
    ratings = {"u1": [(11, 5), (12, 2), (13, 4), (91, 3)], "u2": [(13, 4), (14, 3), (92, 3)],
               "u3": [(11, 1), (15, 5), (16, 4), (93, 3)], "u4": [(12, 4), (16, 5), (94, 3)],
               "u5": [(14, 4), (15, 4), (95, 3)], "u6": [(11, 4), (16, 3), (96, 3)]}
    rows = [(u, i, t, r) for u, events in ratings.items() for t, (i, r) in enumerate(events)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "rating"])


def processed(frame: pd.DataFrame, protocol: str) -> tuple[ProcessedData, object]:
    data = canonicalize(frame, category=None)
    if protocol == "din":
        splits = din_samples(data, max_len=3, split="last", seed=0)
    else:
        splits = movielens_samples(data, max_len=3, seed=0)
    catalogue = Catalogue.from_vocabulary(data.item_vocab, data.item_category(),
                                          data.category_vocab, max_len=3)
    return ProcessedData.from_splits(catalogue, splits, WINDOW, TOP_K), data


def graph_from_scratch(frame: pd.DataFrame, data, users: list, protocol: str):
    """Algorithm 1 on the raw training sequences of ``users``, written out from the protocol."""
    dense = {str(v): k + 1 for k, v in enumerate(data.item_vocab)}
    sequences = []
    for user in users:
        events = frame[frame.user_id == user].sort_values("timestamp")
        if protocol == "din":  # split 'last': s_1..s_{n-2}
            items = events.item_id.tolist()[:-2]
        else:  # MovieLens: every event rated >= 3 of a training user
            items = events[events.rating >= 3].item_id.tolist()
        sequences.append([dense[str(i)] for i in items])
    items = [i for s in sequences for i in s]
    return build_interest_graph(items, [len(s) for s in sequences], data.num_items, WINDOW,
                                TOP_K)


def assert_same_graph(a, b) -> None:
    assert torch.equal(a.edge_index, b.edge_index)
    assert torch.equal(a.edge_weight, b.edge_weight)


@pytest.mark.parametrize("protocol", ["din", "movielens"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_subset_graph_is_built_from_exactly_the_kept_training_sequences(protocol, seed):
    frame = din_frame() if protocol == "din" else movielens_frame()
    full, data = processed(frame, protocol)
    train_users = data.user_vocab[np.unique(full.train.user)].tolist()
    assert_same_graph(full.graph, graph_from_scratch(frame, data, train_users, protocol))

    half = full.restrict_training_users(0.5, seed)
    kept = np.unique(half.train.user)
    assert len(kept) == round(0.5 * len(train_users))
    assert half.graph.edge_index.size(1) > 0
    assert_same_graph(half.graph,
                      graph_from_scratch(frame, data, data.user_vocab[kept].tolist(), protocol))
    # Every training sample of a kept user, none of the others; evaluation untouched.
    assert len(half.train) == np.isin(full.train.user, kept).sum()
    assert half.val is full.val
    assert half.test is full.test
    if protocol == "movielens":  # the last event (rated 3, a negative) is in the graph
        edges = set(zip(*half.graph.edge_index.tolist(), strict=True))
        for user in data.user_vocab[kept]:
            last = frame[frame.user_id == user].item_id.iloc[-1]
            before = frame[(frame.user_id == user) & (frame.rating >= 3)].item_id.iloc[-2]
            vocab = {str(v): k + 1 for k, v in enumerate(data.item_vocab)}
            assert (vocab[str(before)], vocab[str(last)]) in edges


def test_subset_of_every_user_and_bad_fractions():
    full, _ = processed(din_frame(), "din")
    assert full.restrict_training_users(1.0, 0) is full
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ConfigError, match=r"train_user_fraction: must lie in \(0, 1\]"):
            full.restrict_training_users(bad, 0)


def test_datamodule_trains_on_the_restricted_users():
    full = CTRDataModule(preset="tiny", cache_dir=None)
    half = CTRDataModule(preset="tiny", cache_dir=None)
    half.restrict_training_users(0.5, seed=1)
    f, h = full.samples("train"), half.samples("train")
    users = np.unique(h.user)
    assert len(users) == round(0.5 * len(np.unique(f.user)))
    assert len(h) == np.isin(f.user, users).sum()
    assert len(half.samples("test")) == len(full.samples("test"))
    assert half.graph.edge_weight.sum() < full.graph.edge_weight.sum()
    half.setup("fit")
    assert len(half.datasets["train"]) == len(h)


@pytest.mark.parametrize("protocol", ["din", "movielens"])
def test_processed_data_survives_its_array_form(protocol):
    frame = din_frame() if protocol == "din" else movielens_frame()
    full, _ = processed(frame, protocol)
    arrays = full.to_arrays()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    again = ProcessedData.from_arrays(arrays)
    assert again.catalogue == full.catalogue
    assert again.splits().keys() == full.splits().keys() == {"train", "val", "test"}
    for name, samples in full.splits().items():
        for field in ("seq", "hist_start", "hist_len", "target", "label", "user"):
            np.testing.assert_array_equal(getattr(again.splits()[name], field),
                                          getattr(samples, field))
    assert_same_graph(again.graph, full.graph)
    assert (again.window, again.top_k) == (WINDOW, TOP_K)
    assert_same_graph(again.restrict_training_users(0.5, 3).graph,
                      full.restrict_training_users(0.5, 3).graph)


# -- the catalogue in a checkpoint ------------------------------------------------------------
def catalogue() -> Catalogue:
    return Catalogue.from_vocabulary(["a", "b", "c"], [0, 2, 1, 2], ["x", "y"],
                                     item_domain=np.array([0, 5, 6, 5]), max_len=7)


def test_catalogue_round_trips_through_a_weights_only_checkpoint(tmp_path):
    path = tmp_path / "c.ckpt"
    torch.save({CHECKPOINT_KEY: catalogue().to_checkpoint()}, path)
    again = Catalogue.from_checkpoint(torch.load(path, weights_only=True))
    assert again == catalogue()
    assert again.item_vocab.tolist() == ["a", "b", "c"]
    assert again.item_category.tolist() == [0, 2, 1, 2]
    assert (again.num_items, again.num_categories, again.max_len) == (3, 2, 7)
    assert again != Catalogue.from_vocabulary(["a", "b", "c"], [0, 2, 1, 1], ["x", "y"])


def test_catalogue_of_a_version_1_checkpoint_is_converted():
    old = {CHECKPOINT_KEY: {"items": ["a", "b", "c"], "categories": ["x", "y"]},
           "state_dict": {"item_category": torch.tensor([0, 2, 1, 2])},
           "hyper_parameters": {"num_items": 3, "num_categories": 2},
           "datamodule_hyper_parameters": {"max_len": 7}}
    got = Catalogue.from_checkpoint(old)
    assert got == Catalogue.from_vocabulary(["a", "b", "c"], [0, 2, 1, 2], ["x", "y"], max_len=7)


def test_catalogue_of_another_version_or_none_is_refused():
    entry = catalogue().to_checkpoint() | {"version": 9}
    with pytest.raises(CheckpointError, match=r"^m.ckpt: its catalogue \(resemb_vocab\) is "
                                              r"version 9; this resemb-pl reads versions 1 to 2$"):
        Catalogue.from_checkpoint({CHECKPOINT_KEY: entry}, "m.ckpt")
    for bare in ({}, {CHECKPOINT_KEY: {"items": ["a"], "categories": []}}):
        with pytest.raises(CheckpointError, match="m.ckpt: the checkpoint has no id vocabulary"):
            Catalogue.from_checkpoint(bare, "m.ckpt")
