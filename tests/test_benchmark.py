"""The workload helpers behind scripts/benchmark.py's scaling lines."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    # The script sets THP_MEM_ALLOC_ENABLE for its own process; keep this one's environment.
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", os.environ.get("THP_MEM_ALLOC_ENABLE", "0"))
    spec = importlib.util.spec_from_file_location("script_benchmark",
                                                  ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batch(target, hist):
    return {"target": torch.tensor(target), "hist": torch.tensor(hist)}


def test_rows_touched_counts_distinct_items_and_their_in_neighbours(bench):
    # Edges j -> i: 2 -> 1, 3 -> 1, 4 -> 2, 5 -> 6, and 1 -> 5 (5 is never a batch item).
    graph = Data(edge_index=torch.tensor([[2, 3, 4, 5, 1], [1, 1, 2, 6, 5]]), num_nodes=7)
    batches = [_batch([1, 2], [[2, 0], [1, 1]]),  # items {1, 2}; subgraph {1, 2, 3, 4}
               _batch([6], [[0, 0]])]             # items {6}; subgraph {5, 6}
    assert bench.rows_touched(batches, graph) == (1.5, 3.0)


def test_extend_graph_keeps_the_old_items_edges_and_adds_k_per_new_item(bench):
    rng = np.random.default_rng(0)
    graph = bench.random_graph(50, rng, k=8, popularity=bench.ZipfItems(50, rng))
    grown = bench.extend_graph(graph, 80, rng, popular=True)
    assert grown.num_nodes == 81
    old = graph.edge_index.size(1)
    assert old == 50 * 8
    assert torch.equal(grown.edge_index[:, :old], graph.edge_index)
    assert torch.equal(grown.edge_weight[:old], graph.edge_weight)
    source, target = grown.edge_index[:, old:]
    assert torch.equal(torch.bincount(target, minlength=81)[51:], torch.full((30,), 8))
    assert int(source.min()) >= 1
    assert int(source.max()) <= 80
    assert not bool((source == target).any())  # no self-loops
    # The old items' one-hop subgraphs are the same in both graphs.
    batch = [_batch([3, 17], [[5, 0], [49, 50]])]
    assert bench.rows_touched(batch, grown) == bench.rows_touched(batch, graph)


def test_benchmark_times_the_registry_res_embeddings(bench):
    # The benchmark's AVG/GCN/ATT are the registry's avg/gcn/att, as the experiments train them.
    from resemb_pl.experiments import embedding_spec

    assert list(bench.CONVS) == ["AVG", "GCN", "ATT"]
    for name, conv in bench.CONVS.items():
        spec = embedding_spec(name.lower())["init_args"]["conv"]["class_path"]
        assert spec == f"resemb_pl.nn.conv.{conv.__name__}"
    task = bench.make_task(20, "GCN", torch.device("cpu"), fused=False)
    assert [type(m).__name__ for m in task.modules() if "Conv" in type(m).__name__] == [
        "GCNNormConv"]
