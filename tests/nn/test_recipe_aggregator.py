"""The contributor recipe "add an aggregator", exercised with a toy layer defined here.

A user's layer lives outside the package; it is named by ``class_path`` (the same dict the CLI
reads from YAML) and declares on its class whether it is exact on a subgraph.
"""

import functools

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import Data
from torch_geometric.nn import MessagePassing

from resemb_pl.errors import ConfigError
from resemb_pl.task import CTRTask

NUM_ITEMS = 40


class _WeightedSum(MessagePassing):
    """Weighted sum of the in-neighbours, then a learned linear map; declares nothing."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(aggr="add")
        self.lin = torch.nn.Linear(in_channels, out_channels, bias=False)
        self.sizes: list[int] = []  # how many nodes each call propagated over

    def forward(self, x, edge_index, edge_weight=None):
        self.sizes.append(x.size(0))
        return self.lin(self.propagate(edge_index, x=x, edge_weight=edge_weight))

    def message(self, x_j, edge_weight):
        return x_j if edge_weight is None else edge_weight.view(-1, 1) * x_j


class UndeclaredConv(_WeightedSum):
    pass


class ToyConv(_WeightedSum):
    EXACT_ON_SUBGRAPH = True  # the output at i reads only x_i's in-edges


def _graph() -> Data:
    g = torch.Generator().manual_seed(0)
    source = torch.randint(1, NUM_ITEMS + 1, (40,), generator=g)
    target = torch.randint(1, NUM_ITEMS + 1, (40,), generator=g)
    keep = source != target
    weight = torch.randint(1, 4, (int(keep.sum()),), generator=g).float()
    edge_index = torch.stack([source[keep], target[keep]])
    return Data(edge_index=edge_index, edge_weight=weight, num_nodes=NUM_ITEMS + 1)


def _task(conv: type, propagation: str, sparse: bool = False) -> CTRTask:
    torch.manual_seed(0)
    embedding = {
        "class_path": "resemb_pl.nn.ResEmbedding",
        "init_args": {"conv": {"class_path": f"{conv.__module__}.{conv.__qualname__}"},
                      "propagation": propagation, "num_layers": 2, "residual_l2": 0.1},
    }
    task = CTRTask(NUM_ITEMS, 3, embedding_dim=4, embedding=embedding, sparse_embeddings=sparse,
                   optimizer=functools.partial(torch.optim.SGD, lr=0.5))
    task.embedding.set_graph(_graph())
    return task


def _step(task: CTRTask) -> None:
    batch = {"hist": torch.tensor([[3, 4, 0], [5, 3, 7]]),
             "hist_cat": torch.tensor([[1, 2, 0], [1, 1, 3]]),
             "target": torch.tensor([8, 9]), "target_cat": torch.tensor([2, 3]),
             "label": torch.tensor([1.0, 0.0])}
    optimizer = task.configure_optimizers()
    optimizer.zero_grad()
    ids = torch.cat([batch["target"].unsqueeze(1), batch["hist"]], 1)
    loss = F.binary_cross_entropy_with_logits(task(batch), batch["label"])
    (loss + task.embedding.regularization(ids)).backward()
    optimizer.step()


def test_a_declared_layer_propagates_batch_locally_and_equals_the_full_graph():
    local, full = _task(ToyConv, "local"), _task(ToyConv, "full")
    assert type(local.embedding.convs[0]) is ToyConv
    _step(local)
    _step(full)
    sizes = [n for c in local.embedding.convs for n in c.sizes]
    assert sizes
    assert all(n < NUM_ITEMS + 1 for n in sizes)
    assert all(n == NUM_ITEMS + 1 for c in full.embedding.convs for n in c.sizes)
    for (name, p), q in zip(local.named_parameters(), full.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), name  # the same step either way
    # Sparse training (batch-local only) is allowed for it.
    _step(_task(ToyConv, "auto", sparse=True))


def test_an_undeclared_layer_gets_the_whole_graph():
    task = _task(UndeclaredConv, "auto")
    _step(task)
    sizes = [n for c in task.embedding.convs for n in c.sizes]
    assert sizes
    assert all(n == NUM_ITEMS + 1 for n in sizes)
    with pytest.raises(ConfigError, match=r"not exact for \['UndeclaredConv'\]"):
        _task(UndeclaredConv, "local")
    with pytest.raises(ConfigError, match="sparse embeddings need batch-local propagation"):
        _task(UndeclaredConv, "auto", sparse=True)
