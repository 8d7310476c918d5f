"""Time ``build_interest_graph`` against a literal, loop-by-loop Algorithm 1, in one run.

    python scripts/bench_graph.py --clicks 1000000

Both build the graph of the same random behaviour sequences (Zipf-like item popularity) and the
script checks that they agree before printing the times and their ratio.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import numpy as np

from resemb_pl.boundary import ArgumentParser, command_boundary
from resemb_pl.data.graph import build_interest_graph


def literal(items: np.ndarray, lengths: np.ndarray, num_items: int, window: int, top_k: int):
    """Algorithm 1 as written: a loop over sequences, positions and window offsets."""
    z: dict[int, Counter] = defaultdict(Counter)
    start = 0
    for n in lengths.tolist():
        seq = items[start : start + n].tolist()
        for c in range(n):
            for w in range(max(0, c - window), min(n, c + window + 1)):
                if w != c:
                    z[seq[c]][seq[w]] += 1
        start += n
    rows, cols, counts = [], [], []
    for i in sorted(z):
        for j, cnt in sorted(z[i].items(), key=lambda t: (-t[1], t[0]))[:top_k]:
            rows.append(i)
            cols.append(j)
            counts.append(cnt)
    return np.array(cols), np.array(rows), np.array(counts)


@command_boundary("bench_graph")
def main() -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clicks", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=63_001)
    p.add_argument("--window", type=int, default=2)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall clock, or this process's CPU time (steadier on a loaded machine)")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 20, size=args.clicks // 10)
    lengths = lengths[np.cumsum(lengths) <= args.clicks]
    items = (rng.zipf(1.3, size=lengths.sum()) - 1) % args.items + 1

    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    t_vec = []
    for _ in range(args.repeat):  # the vectorised build is short: take its best of a few
        t0 = clock()
        g = build_interest_graph(items, lengths, args.items, args.window, args.top_k)
        t_vec.append(clock() - t0)
    t_vec = min(t_vec)
    t0 = clock()
    cols, rows, counts = literal(items, lengths, args.items, args.window, args.top_k)
    t_loop = clock() - t0

    got = np.stack([g.edge_index[1].numpy(), g.edge_index[0].numpy(), g.edge_weight.numpy()])
    want = np.stack([rows, cols, counts])
    same = got.shape == want.shape and np.array_equal(
        got[:, np.lexsort(got[::-1])], want[:, np.lexsort(want[::-1])]
    )
    print(f"clicks: {len(items):,}  items: {args.items:,}  edges: {g.num_edges:,}  same: {same}"
          f"  clock: {args.clock}")
    print(f"{'build_interest_graph':24s} {t_vec:8.3f} s")
    print(f"{'literal Algorithm 1':24s} {t_loop:8.3f} s")
    print(f"{'speed-up':24s} {t_loop / t_vec:8.1f}x")
    if not same:
        raise SystemExit("the two graphs differ")


if __name__ == "__main__":
    main()
