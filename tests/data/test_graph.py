import numpy as np
import pytest
import torch

from resemb_pl.data.graph import build_interest_graph
from resemb_pl.errors import ConfigError, DataError


def literal_algorithm1(items, lengths, num_items, window, top_k):
    """Algorithm 1 written loop by loop: counts, then top-K per row (ties: smaller id)."""
    z = {}
    start = 0
    for n in lengths:
        seq = items[start : start + n]
        for c in range(n):
            for w in range(max(0, c - window), min(n, c + window + 1)):
                if w != c:
                    key = (int(seq[c]), int(seq[w]))
                    z[key] = z.get(key, 0) + 1
        start += n
    edges = []
    for i in range(num_items + 1):
        row = sorted(((-cnt, j) for (a, j), cnt in z.items() if a == i))[:top_k]
        edges += [(j, i, -neg) for neg, j in row]
    return edges


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(("window", "top_k"), [(1, 2), (2, 8), (3, 3)])
def test_equals_literal_algorithm1(seed, window, top_k):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 12, size=15)
    num_items = 20
    items = rng.integers(1, num_items + 1, size=lengths.sum())  # repeats included
    got = build_interest_graph(items, lengths, num_items, window=window, top_k=top_k)
    want = literal_algorithm1(items, lengths, num_items, window, top_k)
    triples = list(zip(*got.edge_index.tolist(), got.edge_weight.long().tolist(), strict=True))
    assert sorted(triples) == sorted(want)
    assert got.num_nodes == num_items + 1


def test_hand_made_case_and_tie_rule():
    # Sequences [1 2 3] and [2 4], window 1: row 2 has neighbours 1, 3, 4 with count 1 each.
    g = build_interest_graph([1, 2, 3, 2, 4], [3, 2], num_items=4, window=1, top_k=2)
    assert g.edge_index.tolist() == [[2, 1, 3, 2, 2], [1, 2, 2, 3, 4]]  # row 2 keeps 1 and 3
    assert g.edge_weight.tolist() == [1.0] * 5
    # Counts decide before ids: 4 follows 2 twice, so it beats 1 and 3.
    g = build_interest_graph([1, 2, 3, 2, 4, 2, 4], [3, 2, 2], num_items=4, window=1, top_k=2)
    row2 = g.edge_index[0, g.edge_index[1] == 2].tolist()
    assert row2 == [4, 1]
    assert g.edge_weight[g.edge_index[1] == 2].tolist() == [2.0, 1.0]


def test_sequences_do_not_bleed_into_each_other():
    g = build_interest_graph([1, 2, 3, 4], [2, 2], num_items=4, window=2, top_k=8)
    pairs = set(zip(*g.edge_index.tolist(), strict=True))
    assert pairs == {(2, 1), (1, 2), (4, 3), (3, 4)}


def test_bad_input():
    with pytest.raises(ConfigError, match="data.top_k: must be >= 1"):
        build_interest_graph([1, 2], [2], 2, top_k=0)
    with pytest.raises(ConfigError, match="data.window: must be >= 1"):
        build_interest_graph([1, 2], [2], 2, window=0)
    with pytest.raises(DataError, match=r"item ids must lie in 1..2, found 1..3"):
        build_interest_graph([1, 3], [2], 2)
    with pytest.raises(DataError, match="lengths sum to 3 but there are 2 items"):
        build_interest_graph([1, 2], [3], 2)


def test_empty_input():
    g = build_interest_graph(np.zeros(0, np.int64), np.zeros(0, np.int64), 5)
    assert g.edge_index.shape == (2, 0)
    assert g.num_nodes == 6
    assert torch.equal(g.edge_weight, torch.zeros(0))
