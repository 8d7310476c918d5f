"""Time our graph layers with and without torch-scatter, side by side in one run.

    python scripts/bench_scatter.py --items 100000 --clock cpu --threads 1

PyG uses the optional ``torch-scatter`` package, when it is installed, for some of its
reductions (``torch_geometric.typing.WITH_TORCH_SCATTER``). This script builds an interest graph
(Algorithm 1 over Zipf-distributed behaviour sequences) and times, per row, one forward and
backward pass:

- ``MeanConv`` / ``GCNNormConv`` / ``DotAttentionConv`` on the whole graph, given as a plain
  ``edge_index`` tensor (PyG's message-and-scatter path) and as a target-sorted
  :class:`torch_geometric.EdgeIndex` (which hands PyG the row pointer: its segment reductions
  are the ones torch-scatter serves on a CPU);
- the res-embedding step, ``ResEmbedding(conv=...)`` on the ids of one DIN batch (128 samples
  of 50 history items and a target; the default ``propagation="auto"``), and on every item
  (``central_table``, what validation and export compute).

The two settings alternate within each repeat, so load that changes during the run weighs on
both; each is reported as its median, with the number of calls into torch-scatter per pass
(zero: PyG took its pure-torch path) and whether the outputs and gradients agree.
"""

from __future__ import annotations

import functools
import inspect
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch_geometric.typing
from torch_geometric import EdgeIndex

from resemb_pl.boundary import ArgumentParser, command_boundary
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv
from resemb_pl.nn.embedding import ResEmbedding

CONVS = {"MeanConv": MeanConv, "GCNNormConv": GCNNormConv, "DotAttentionConv": DotAttentionConv}


def count_calls() -> dict[str, int]:
    """Wrap torch-scatter's public functions so that each call is counted; return the counts.

    PyG looks them up on the module at each call, so the wrappers see every call it makes.
    """
    import torch_scatter

    counts: dict[str, int] = {}

    def counted(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            counts[name] = counts.get(name, 0) + 1
            return fn(*args, **kwargs)

        return wrapper

    for name, fn in list(vars(torch_scatter).items()):
        if not name.startswith("_") and (inspect.isfunction(fn) or inspect.isbuiltin(fn)):
            setattr(torch_scatter, name, counted(name, fn))
    return counts


def make_graph(num_items: int, clicks: int, seed: int = 0):
    """The interest graph (window 2, top 8) of random sequences with Zipf item popularity."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 30, size=clicks // 10)
    lengths = lengths[np.cumsum(lengths) <= clicks]
    items = (rng.zipf(1.2, size=int(lengths.sum())) - 1) % num_items + 1
    return build_interest_graph(items, lengths, num_items, window=2, top_k=8)


def layer_case(conv: type, graph, dim: int,
               sorted_index: bool) -> Callable[[], list[torch.Tensor]]:
    """One forward and backward pass of ``conv`` over the whole graph, as a plain
    ``edge_index`` or (``sorted_index``) an ``EdgeIndex`` sorted by target."""
    torch.manual_seed(0)
    layer = conv(dim, dim)
    x = torch.randn(graph.num_nodes, dim, requires_grad=True)
    edge_index, edge_weight = graph.edge_index, graph.edge_weight
    if sorted_index:
        order = torch.argsort(edge_index[1] * graph.num_nodes + edge_index[0])
        edge_index = EdgeIndex(edge_index[:, order], sparse_size=(graph.num_nodes,) * 2,
                               sort_order="col")
        edge_weight = edge_weight[order]

    def step() -> list[torch.Tensor]:
        out = layer(x, edge_index, edge_weight=edge_weight)
        (grad,) = torch.autograd.grad(out.square().sum(), x)
        return [out.detach(), grad]

    return step


def embedding_case(conv: type, graph, dim: int, batch: torch.Tensor | None):
    """One res-embedding pass: the batch's ids (``batch``) or the whole table (``None``)."""
    torch.manual_seed(0)
    emb = ResEmbedding(graph.num_nodes - 1, dim, conv=conv)
    emb.set_graph(graph)

    def step() -> list[torch.Tensor]:
        emb.zero_grad(set_to_none=True)
        out = emb.central_table() if batch is None else emb(batch)
        out.square().sum().backward()
        return [out.detach(), emb.basis.weight.grad.to_dense()]

    return step


def measure(step: Callable[[], list[torch.Tensor]], repeat: int, clock: Callable[[], float],
            counts: dict[str, int]) -> dict[bool, tuple[float, int, list[torch.Tensor]]]:
    """Median seconds, torch-scatter calls per pass and the outputs, with scatter on and off."""
    times: dict[bool, list[float]] = {True: [], False: []}
    calls: dict[bool, int] = {}
    outputs: dict[bool, list[torch.Tensor]] = {}
    for on in (True, False):  # warm-up, and the calls and outputs of one pass
        torch_geometric.typing.WITH_TORCH_SCATTER = on
        counts.clear()
        outputs[on] = step()
        calls[on] = sum(counts.values())
    for r in range(repeat):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            torch_geometric.typing.WITH_TORCH_SCATTER = on
            t0 = clock()
            step()
            times[on].append(clock() - t0)
    torch_geometric.typing.WITH_TORCH_SCATTER = True
    return {on: (statistics.median(times[on]), calls[on], outputs[on]) for on in (True, False)}


@command_boundary("bench_scatter")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=100_000, help="catalogue size (default 100000)")
    p.add_argument("--clicks", type=int, default=2_000_000,
                   help="clicks of the sequences the graph is built from (default 2000000)")
    p.add_argument("--dim", type=int, default=18, help="embedding size (paper: 18)")
    p.add_argument("--repeat", type=int, default=10, help="timed passes per setting")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall clock, or this process's CPU time (steadier on a loaded machine)")
    args = p.parse_args(argv)
    if not torch_geometric.typing.WITH_TORCH_SCATTER:
        print("bench_scatter: error: torch-scatter is not installed; pip install "
              "--no-build-isolation torch-scatter (or the `scatter` extra)", file=sys.stderr)
        raise SystemExit(2)
    for name, value in (("--items", args.items), ("--clicks", args.clicks), ("--dim", args.dim),
                        ("--repeat", args.repeat)):
        if value < 1:
            print(f"bench_scatter: error: {name}: must be at least 1, got {value}",
                  file=sys.stderr)
            raise SystemExit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    import torch_scatter

    counts = count_calls()
    graph = make_graph(args.items, args.clicks)
    batch = torch.from_numpy(
        (np.random.default_rng(1).zipf(1.2, size=(128, 51)) - 1) % args.items + 1
    )
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"items: {args.items:,}  edges: {graph.num_edges:,}  dim: {args.dim}  "
          f"batch: {tuple(batch.shape)} ({batch.unique().numel():,} distinct)  "
          f"torch {torch.__version__}, torch-scatter {torch_scatter.__version__}, "
          f"threads {torch.get_num_threads()}, clock {args.clock}, median of {args.repeat}")
    print(f"{'pass (forward + backward)':38s} {'without':>9s} {'with':>9s} {'ratio':>6s} "
          f"{'calls':>6s}  same")  # ratio: without / with
    cases = []
    for name, conv in CONVS.items():
        cases.append((f"{name} (edge_index)", layer_case(conv, graph, args.dim, False)))
    for name, conv in CONVS.items():
        cases.append((f"{name} (sorted EdgeIndex)", layer_case(conv, graph, args.dim, True)))
    for name, conv in CONVS.items():
        cases.append((f"ResEmbedding({name}) batch", embedding_case(conv, graph, args.dim, batch)))
        cases.append((f"ResEmbedding({name}) table", embedding_case(conv, graph, args.dim, None)))
    for label, step in cases:
        res = measure(step, args.repeat, clock, counts)
        (t_on, calls, out_on), (t_off, _, out_off) = res[True], res[False]
        same = all(torch.allclose(a, b, rtol=1e-4, atol=1e-6)
                   for a, b in zip(out_on, out_off, strict=True))
        print(f"{label:38s} {t_off * 1e3:7.2f}ms {t_on * 1e3:7.2f}ms {t_off / t_on:6.2f} "
              f"{calls:6d}  {same}")


if __name__ == "__main__":
    main()
