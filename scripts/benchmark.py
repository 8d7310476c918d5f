"""Speed and memory of res-embedding training at catalogue scale; prints one table per part.

    python scripts/benchmark.py                    # 63k, 368k, 1M and 10M items
    python scripts/benchmark.py --quick            # 63k and 368k, fewer steps, no books preset
    python scripts/benchmark.py --items 1000000 10000000 --steps 40 --device cuda
    python scripts/benchmark.py --end-to-end --steps 100 --out reports/throughput/end_to_end.txt
    python scripts/benchmark.py --propagation --data sports --batch-size 1024

Parts:

1. Training step time of DIN with the plain embedding and with res-embedding (AVG, GCN, ATT)
   at each catalogue size: batch 128, item popularity Zipf(1) (targets and history items),
   histories of 10 to 50 items, a random top-8 interest graph (8 in-neighbours per item, counts
   1..10) whose neighbours are drawn by popularity, as co-clicks are (``--graph uniform``: from
   the whole catalogue, the worst case for memory locality). Batches are drawn with numpy, not
   the full generator, so 10M items fit in memory.
   Every embedding uses sparse gradients with ``RowAdam`` (``CTRTask(sparse_embeddings=True)``)
   and res-embedding propagates batch-locally, so a step costs what the batch touches; Adam
   over a dense 10M x 18 table would cost the catalogue every step. A step is forward, loss,
   backward and the optimizer step. Plain and res steps alternate on the same batches and the
   table reports medians; the ratio is the median over batches of the res step time over the
   plain step time on the same batch. ``--clock cpu`` times by process CPU time, for a machine
   shared with other jobs. Then the scaling lines: each embedding at the smallest catalogue of
   at least 1M items and at the largest, built side by side and stepping alternately; the
   median ratio of their step times says whether the cost follows the batch or the catalogue.
   "Same batches": the large catalogue is the small one plus new items, and both train on the
   same batches, so only the tables grow. "Own batches": each trains on batches of the same
   size and popularity law from its own catalogue, which touch more distinct rows in the
   larger one (the line prints how many more).
2. ``build_interest_graph`` on the ``electronics`` and ``books`` presets: seconds per click.
3. AUC plus GAUC (torchmetrics ``BinaryAUROC`` and :class:`resemb_pl.metrics.GroupAUC`) on
   385k random samples of 2 per user, as in the Electronics test set.
4. Peak memory: the process's maximal resident set size, and CUDA's peak allocation on a GPU.

``--end-to-end`` replaces the parts above by the CLI's own training loop: for each data set
(``--data``: Amazon Sports through ``configs/data/amazon_sports.yaml`` when ``../shared/data``
has it, else the ``small`` synthetic preset, said in the table; the ``books`` preset, 367,984
items; the ``electronics`` preset, 63,001 items), ``ResembCLI`` builds the data module, the task
(``configs/model/din_plain.yaml``, ``din_gcn.yaml``, ``din_att.yaml``: the default config, dense
gradients and ``propagation: auto``) and the Trainer from the same files and options as
``resemb-pl fit``, without validation, logger and checkpoints, and ``Trainer.fit`` runs
``--warmup`` + ``--steps`` batches. Samples/s counts the samples of the batches after the
warm-up over the time from the end of the last warm-up batch to the end of the last batch, data
loading included. The three models run one after another, ``--repeats`` rounds, the order
reversed every other round; the ratio is the median over rounds of the res-embedding's time per
sample over plain's in the same round.

Tables of millions of rows are read at random rows; with 4 KiB pages nearly every row read also
misses the TLB, and more so the larger the table. PyTorch's CPU allocator backs large tensors
with transparent huge pages when ``THP_MEM_ALLOC_ENABLE=1``; this script sets it unless the
environment already does (``THP_MEM_ALLOC_ENABLE=0 python scripts/benchmark.py`` to compare).
The same variable helps training on large catalogues on CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import logging
import os
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# Read by the allocator once, at the first allocation: set before torch is imported.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch import Callback  # noqa: E402
from torch_geometric.data import Data  # noqa: E402
from torchmetrics.classification import BinaryAUROC  # noqa: E402

from resemb_pl.atomic import atomic_open  # noqa: E402
from resemb_pl.boundary import ArgumentParser, command_boundary  # noqa: E402
from resemb_pl.data.datamodule import CTRDataModule  # noqa: E402
from resemb_pl.data.graph import build_interest_graph  # noqa: E402
from resemb_pl.data.synthetic import generate  # noqa: E402
from resemb_pl.errors import ConfigError, ResembError  # noqa: E402
from resemb_pl.experiments.registry import CONVS as SHORT_NAMES  # noqa: E402
from resemb_pl.experiments.registry import conv_class  # noqa: E402
from resemb_pl.metrics import GroupAUC  # noqa: E402
from resemb_pl.nn import PlainEmbedding, ResEmbedding  # noqa: E402
from resemb_pl.nn.conv import native  # noqa: E402
from resemb_pl.task import CTRTask  # noqa: E402

#: The res-embeddings of the registry, by their short names in upper case (AVG, GCN, ATT).
CONVS = {name.upper(): conv_class(name) for name in SHORT_NAMES}
NUM_CATEGORIES = 1000
BATCH = 128
DIM = 18
# wall: elapsed time. cpu: this process's CPU time, which a machine shared with other jobs
# inflates far less (with one thread, see --threads, it is the step's cost).
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


class ZipfItems:
    """Item ids ``1..num_items`` with Zipf(``exponent``) popularity over a random ranking."""

    def __init__(self, num_items: int, rng: np.random.Generator, exponent: float = 1.0) -> None:
        weight = 1.0 / np.arange(1, num_items + 1, dtype=np.float64) ** exponent
        self.cdf = np.cumsum(weight)
        self.cdf /= self.cdf[-1]
        self.rank_to_item = rng.permutation(num_items) + 1
        self.rng = rng

    def draw(self, shape: tuple[int, ...]) -> np.ndarray:
        rank = np.searchsorted(self.cdf, self.rng.random(shape), side="right")
        return self.rank_to_item[np.minimum(rank, len(self.cdf) - 1)]


def make_batches(items: ZipfItems, count: int, rng: np.random.Generator) -> list[dict]:
    """``count`` DIN batches of 128 samples from ``items``, padded to their longest history."""
    batches = []
    for _ in range(count):
        length = rng.integers(10, 51, BATCH)
        width = int(length.max())
        hist = items.draw((BATCH, width))
        hist[np.arange(width)[None, :] >= length[:, None]] = 0
        target = items.draw((BATCH,))
        t = {"hist": hist, "target": target}
        batch = {k: torch.from_numpy(v) for k, v in t.items()}
        batch["hist_cat"] = torch.where(batch["hist"] > 0, batch["hist"] % NUM_CATEGORIES + 1, 0)
        batch["target_cat"] = batch["target"] % NUM_CATEGORIES + 1
        batch["label"] = torch.from_numpy(rng.integers(0, 2, BATCH).astype(np.float32))
        batches.append(batch)
    return batches


def random_graph(num_items: int, rng: np.random.Generator, k: int = 8,
                 popularity: ZipfItems | None = None, first: int = 1) -> Data:
    """A top-``k`` graph: every item gets ``k`` random in-neighbours with counts 1..10.

    With ``popularity`` the in-neighbours are drawn from it, as in a co-click graph (the items
    clicked next to an item follow the click distribution, and top-k keeps the most frequent);
    without, uniformly from the catalogue, which no interest graph does: the worst case for
    the memory locality of the neighbours' rows. Only items ``first..num_items`` get edges.
    """
    target = np.repeat(np.arange(first, num_items + 1), k)
    if popularity is None:
        source = rng.integers(1, num_items + 1, target.size)
    else:
        source = popularity.draw(target.shape)
        source = np.where(source == target, source % num_items + 1, source)  # no self-loops
    weight = rng.integers(1, 11, target.size).astype(np.float32)
    edge_index = torch.from_numpy(np.stack([source, target]))
    return Data(edge_index=edge_index, edge_weight=torch.from_numpy(weight),
                num_nodes=num_items + 1)


def extend_graph(graph: Data, num_items: int, rng: np.random.Generator, popular: bool) -> Data:
    """``graph`` grown to ``num_items`` items: its items keep their in-neighbours, and the new
    ones get theirs as :func:`random_graph` draws them (by the popularity of the whole, larger
    catalogue, or uniformly)."""
    popularity = ZipfItems(num_items, rng) if popular else None
    tail = random_graph(num_items, rng, popularity=popularity, first=graph.num_nodes)
    return Data(edge_index=torch.cat([graph.edge_index, tail.edge_index], 1),
                edge_weight=torch.cat([graph.edge_weight, tail.edge_weight]),
                num_nodes=num_items + 1)


def rows_touched(batches: list[dict], graph: Data) -> tuple[float, float]:
    """Mean, over ``batches``, of their distinct items and of the nodes of their one-hop
    subgraph (the items and their in-neighbours): the rows that a step reads and updates."""
    source, target = graph.edge_index.numpy()
    marked = np.zeros(graph.num_nodes, dtype=bool)
    items, nodes = [], []
    for batch in batches:
        ids = batch_ids(batch).cpu().numpy()
        distinct = np.unique(ids[ids > 0])
        marked[distinct] = True
        nodes.append(np.unique(np.concatenate([distinct, source[marked[target]]])).size)
        items.append(distinct.size)
        marked[distinct] = False
    return float(np.mean(items)), float(np.mean(nodes))


def make_task(num_items: int, name: str, device: torch.device, fused: bool) -> CTRTask:
    """DIN with the ``plain`` embedding or the res-embedding of the layer ``CONVS[name]``."""
    torch.manual_seed(0)
    embedding = (PlainEmbedding if name == "plain"
                 else functools.partial(ResEmbedding, conv=CONVS[name]))
    task = CTRTask(num_items, NUM_CATEGORIES, DIM, embedding=embedding, sparse_embeddings=True,
                   fused_sparse_step=fused, optimizer=functools.partial(torch.optim.Adam, lr=1e-3))
    return task.to(device)


def batch_ids(batch: dict) -> torch.Tensor:
    """The item ids of a batch, target first: ``(B, 1 + history length)``, 0 is padding."""
    return torch.cat([batch["target"].unsqueeze(1), batch["hist"]], 1)


def train_step(task: CTRTask, optimizer: torch.optim.Optimizer, batch: dict) -> None:
    optimizer.zero_grad()
    logits = task(batch)
    loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
    (loss + task.embedding.regularization(batch_ids(batch))).backward()
    optimizer.step()


def native_state(device: torch.device) -> str:
    """Whether the layers run resemb_pl.nn.conv.native's compiled CSR loops here."""
    on = device.type == "cpu" and native.usable(torch.zeros(1))
    return f"compiled CSR loops {'on' if on else 'off'}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_pair(plain: CTRTask, res: CTRTask, batches: list[dict], warmup: int,
              device: torch.device, clock,
              res_batches: list[dict] | None = None) -> tuple[float, float, float]:
    """Median step times (s) of two tasks that alternate on every batch, and the median of the
    per-batch ratios res / plain (robust to load that drifts during the run). ``res_batches``
    gives the second task batches of its own (another catalogue), paired by position."""
    tasks = (plain, res)
    optimizers = [t.configure_optimizers() for t in tasks]
    times: tuple[list[float], list[float]] = ([], [])
    for i, pair in enumerate(zip(batches, res_batches or batches, strict=True)):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            sync(device)
            start = clock()
            train_step(tasks[j], optimizers[j], pair[j])
            sync(device)
            if i >= warmup:
                times[j].append(clock() - start)
    ratio = statistics.median(r / p for p, r in zip(*times, strict=True))
    return statistics.median(times[0]), statistics.median(times[1]), ratio


def make_workload(num_items: int, seed: int, args: argparse.Namespace,
                  device: torch.device) -> tuple[list[dict], Data]:
    """The timed batches (warm-up included) and the interest graph of a catalogue."""
    rng = np.random.default_rng(seed)
    popularity = ZipfItems(num_items, rng)
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in make_batches(popularity, args.steps + args.warmup, rng)]
    graph = random_graph(num_items, rng,
                         popularity=popularity if args.graph == "popular" else None)
    return batches, graph


def bench_steps(args: argparse.Namespace, device: torch.device) -> None:
    rows = []
    for num_items in args.items:
        batches, graph = make_workload(num_items, num_items, args, device)
        plain = make_task(num_items, "plain", device, args.fused)
        row = {"items": num_items}
        plain_times = []
        for name in CONVS:
            res = make_task(num_items, name, device, args.fused)
            start = time.perf_counter()
            res.embedding.set_graph(graph)
            row["set_graph"] = time.perf_counter() - start
            t_plain, t_res, ratio = time_pair(plain, res, batches, args.warmup, device,
                                              CLOCKS[args.clock])
            plain_times.append(t_plain)
            row[name] = t_res
            row[f"{name}/plain"] = ratio
            del res
            gc.collect()
        row["plain"] = statistics.median(plain_times)
        row["maxrss_gb"] = maxrss_gb()
        rows.append(row)
        print_step_row(row, header=len(rows) == 1)
        del plain, graph, batches
        gc.collect()


def print_step_row(row: dict, header: bool) -> None:
    if header:
        print(f"{'items':>10} {'plain ms':>9} {'plain/s':>8} "
              + " ".join(f"{n + ' ms':>8} {n + ' /s':>8} {n + '/pl':>7}" for n in CONVS)
              + f" {'set_graph s':>11} {'maxrss GB':>9}")
    cells = [f"{row['items']:>10,}", f"{row['plain'] * 1e3:>9.2f}",
             f"{BATCH / row['plain']:>8.0f}"]
    for name in CONVS:
        cells += [f"{row[name] * 1e3:>8.2f}", f"{BATCH / row[name]:>8.0f}",
                  f"{row[name + '/plain']:>7.2f}"]
    cells += [f"{row['set_graph']:>11.2f}", f"{row['maxrss_gb']:>9.2f}"]
    print(" ".join(cells), flush=True)


def bench_scaling(args: argparse.Namespace, device: torch.device) -> None:
    """Each embedding's step time at the largest catalogue over its time at the smallest of at
    least 1M items, measured side by side: the two models alternate steps and the median of the
    per-pair ratios is printed. The cost should follow the batch, not the catalogue.

    Two lines. *Same batches*: the large catalogue is the small one plus new items (the small
    one's items keep their in-neighbours), and both models train on the same Zipf(1) batches of
    the small catalogue, so a step touches the same rows and only the tables grow. *Own
    batches*: each model trains on batches of the same size and popularity law drawn from its
    own catalogue; a larger catalogue puts more draws in the tail, so these batches touch more
    distinct rows, and the line prints how many more beside the times.
    """
    sizes = sorted(n for n in args.items if n >= 1_000_000)
    if len(sizes) < 2:
        return
    small, large = sizes[0], sizes[-1]
    # Other batches than the table above (seed + 1).
    batches, graph = make_workload(small, small + 1, args, device)
    rng = np.random.default_rng(large + 2)
    extended = extend_graph(graph, large, rng, popular=args.graph == "popular")
    same = scaling_ratios(args, device, (small, batches, graph), (large, batches, extended))
    del extended
    gc.collect()
    large_batches, large_graph = make_workload(large, large + 1, args, device)
    own = scaling_ratios(args, device, (small, batches, graph), (large, large_batches, large_graph))
    counted = min(10, len(batches))
    small_rows = rows_touched(batches[:counted], graph)
    large_rows = rows_touched(large_batches[:counted], large_graph)

    def cells(ratios: dict[str, float]) -> str:
        return ", ".join(f"{n} {r:.2f}x" for n, r in ratios.items())

    print(f"\nstep time at {large:,} items over {small:,} items, side by side:\n"
          f"  same batches (the {small:,} catalogue plus new items; each step touches the same "
          f"rows): {cells(same)}\n"
          f"  own batches (each catalogue's Zipf(1) law; per batch "
          f"{large_rows[0] / small_rows[0]:.2f}x the distinct items, "
          f"{large_rows[1] / small_rows[1]:.2f}x the one-hop subgraph nodes): {cells(own)}",
          flush=True)


def scaling_ratios(args: argparse.Namespace, device: torch.device,
                   *setups: tuple[int, list[dict], Data]) -> dict[str, float]:
    """For each embedding, the median ratio of the step times of a model of the second
    ``(num_items, batches, graph)`` over one of the first, stepping alternately."""
    ratios = {}
    for name in ["plain", *CONVS]:
        tasks = []
        for num_items, _, graph in setups:
            task = make_task(num_items, name, device, args.fused)
            if name != "plain":
                task.embedding.set_graph(graph)
            tasks.append(task)
        *_, ratios[name] = time_pair(tasks[0], tasks[1], setups[0][1], args.warmup, device,
                                     CLOCKS[args.clock], res_batches=setups[1][1])
        del tasks
        gc.collect()
    return ratios


def bench_graph(presets: list[str]) -> None:
    print(f"\n{'preset':>12} {'clicks':>11} {'graph s':>8} {'ns/click':>9}")
    for preset in presets:
        data = generate(preset, seed=0)
        _, lengths, items = data.sequences()
        start = time.perf_counter()
        build_interest_graph(items, lengths, data.num_items, window=2, top_k=8)
        seconds = time.perf_counter() - start
        print(f"{preset:>12} {items.size:>11,} {seconds:>8.2f} {seconds / items.size * 1e9:>9.0f}",
              flush=True)
        del data, items


def bench_metrics(num_samples: int, device: torch.device) -> None:
    rng = np.random.default_rng(0)
    preds = torch.from_numpy(rng.random(num_samples).astype(np.float32)).to(device)
    label = torch.from_numpy(np.tile([1, 0], num_samples // 2 + 1)[:num_samples]).to(device)
    users = torch.arange(num_samples, device=device) // 2
    times = []
    for _ in range(3):
        auc, gauc = BinaryAUROC().to(device), GroupAUC().to(device)
        sync(device)
        start = time.perf_counter()
        for chunk in range(0, num_samples, 1024):  # as the evaluation loop updates them
            s = slice(chunk, chunk + 1024)
            auc.update(preds[s], label[s])
            gauc.update(preds[s], label[s], users[s])
        auc.compute(), gauc.compute()
        sync(device)
        times.append(time.perf_counter() - start)
    print(f"\nAUC + GAUC on {num_samples:,} samples (updates in batches of 1024 + compute): "
          f"{statistics.median(times):.3f} s (median of 3)", flush=True)


ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
#: The real data sets of --end-to-end: label, data config, folder under ../shared/data.
E2E_REAL = {"sports": ("Amazon Sports", "amazon_sports.yaml", "amazon-sports-5core-seq"),
            "beauty": ("Amazon Beauty", "amazon_beauty.yaml", "amazon-beauty-5core-seq")}
#: The end-to-end models, by their names in the table: configs/model/ files.
E2E_MODELS = {"plain": "din_plain.yaml", "GCN": "din_gcn.yaml", "ATT": "din_att.yaml"}
E2E_DATA = ("sports", "beauty", "books", "electronics", "tiny")


def e2e_data_args(name: str) -> tuple[str, list[str]]:
    """The label and the ``--data`` options of an end-to-end data set."""
    if name in E2E_REAL:
        label, config, folder = E2E_REAL[name]
        if (SHARED_DATA / folder).is_dir():
            return label, [f"--data={ROOT / 'configs' / 'data' / config}",
                           f"--data.path={SHARED_DATA / folder}"]
        return f"small preset (no ../shared/data {label})", ["--data.source=synthetic",
                                                             "--data.preset=small"]
    return f"{name} preset", ["--data.source=synthetic", f"--data.preset={name}"]


class ThroughputMeter(Callback):
    """The end time and the size of every training batch (CUDA synchronised)."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(pl_module.device)
        self.ends.append(time.perf_counter())
        self.sizes.append(int(batch["label"].numel()))

    def samples_per_second(self, warmup: int) -> float:
        first = max(warmup, 1)  # the clock starts at the end of a batch
        if len(self.ends) <= first:
            raise ResembError(f"end-to-end: only {len(self.ends)} training batches ran")
        return sum(self.sizes[first:]) / (self.ends[-1] - self.ends[first - 1])


def build_cli(model_file: str, data_args: list[str], args: argparse.Namespace,
              options: list[str], **kwargs):
    """``ResembCLI`` (not run) as ``resemb-pl fit`` builds it from ``configs/model/<model_file>``,
    the data options, ``--cache-dir`` and ``--batch-size``, and more ``options``."""
    from resemb_pl.cli import ResembCLI

    options = [f"--model={ROOT / 'configs' / 'model' / model_file}", *data_args,
               f"--data.cache_dir={args.cache_dir}", "--seed_everything=0", *options]
    if args.batch_size is not None:
        options.append(f"--data.batch_size={args.batch_size}")
    with warnings.catch_warnings():
        # ResembCLI reads ``options``, not this script's own command line.
        warnings.filterwarnings("ignore", message=".*args parameter is intended")
        return ResembCLI(CTRTask, CTRDataModule, auto_configure_optimizers=False, run=False,
                         save_config_callback=None, parser_kwargs={"exit_on_error": False},
                         args=options, **kwargs)


def e2e_run(model: str, data_args: list[str], args: argparse.Namespace) -> tuple[float, dict]:
    """Samples/s of one ``resemb-pl fit``-built run, and its data module's counts."""
    meter = ThroughputMeter()
    options = [
        f"--trainer.accelerator={'gpu' if args.device.startswith('cuda') else 'cpu'}",
        "--trainer.devices=1", "--trainer.max_epochs=-1",
        f"--trainer.max_steps={args.warmup + args.steps}", "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0", "--trainer.logger=false",
        "--trainer.enable_checkpointing=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    cli = build_cli(E2E_MODELS[model], data_args, args, options,
                    trainer_defaults={"callbacks": [meter]})
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    dm = cli.datamodule
    counts = {"items": dm.num_items, "train": len(dm.datasets["train"]),
              "batch": dm.hparams.batch_size}
    return meter.samples_per_second(args.warmup), counts


def bench_end_to_end(args: argparse.Namespace) -> list[dict]:
    """One row per data set: samples/s of each model (median over rounds) and the ratios."""
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    rows = []
    for name in args.data:
        label, data_args = e2e_data_args(name)
        speeds: dict[str, list[float]] = {m: [] for m in E2E_MODELS}
        for round_ in range(args.repeats):
            order = list(E2E_MODELS) if round_ % 2 == 0 else list(reversed(E2E_MODELS))
            for model in order:
                speed, counts = e2e_run(model, data_args, args)
                speeds[model].append(speed)
        row = {"data": label, **counts, "rounds": {}}
        for model, values in speeds.items():
            row[model] = statistics.median(values)
            if model != "plain":
                ratios = [p / r for p, r in zip(speeds["plain"], values, strict=True)]
                row[f"{model}/plain"] = statistics.median(ratios)
                row["rounds"][model] = ratios
        rows.append(row)
    return rows


def format_end_to_end(rows: list[dict], args: argparse.Namespace) -> str:
    """The end-to-end table, one line per data set, with a header of what was run."""
    lines = [f"end to end: resemb-pl fit's loop (ResembCLI + Trainer.fit), device {args.device}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; configs/model/"
             f"din_{{plain,gcn,att}}.yaml (dense gradients, propagation auto); {args.warmup} "
             f"warm-up + {args.steps} timed batches per run, {args.repeats} round(s) "
             "(order reversed every other round), medians",
             "columns: training samples/s (data loading included); res/plain: time per sample "
             "of the res-embedding over plain's, median of the rounds' ratios", ""]
    head = f"{'data':<42} {'items':>9} {'train':>10} {'batch':>5} {'plain /s':>9}"
    for model in list(E2E_MODELS)[1:]:
        head += f" {model + ' /s':>9} {model + '/plain':>10}"
    lines.append(head)
    for row in rows:
        line = (f"{row['data']:<42} {row['items']:>9,} {row['train']:>10,} {row['batch']:>5} "
                f"{row['plain']:>9.0f}")
        for model in list(E2E_MODELS)[1:]:
            line += f" {row[model]:>9.0f} {row[model + '/plain']:>10.2f}"
        lines.append(line)
    # The spread: on a shared 2-core machine one round's ratio can be 0.1-0.3 off the median.
    lines += ["", "res/plain of each round:"]
    for row in rows:
        lines.append(f"{row['data']:<42} " + "   ".join(
            f"{model} " + " ".join(f"{r:.2f}" for r in ratios)
            for model, ratios in row["rounds"].items()))
    return "\n".join(lines) + "\n"


def interleaved_models(eager: bool) -> dict[str, str]:
    """The interleaved models and their configs: the end-to-end ones and, with ``eager``, the
    res-embeddings again as ``"<name> eager"``, stepped with the compiled CSR loops off."""
    models = dict(E2E_MODELS)
    if eager:
        models.update({f"{m} eager": c for m, c in list(E2E_MODELS.items())[1:]})
    return models


def interleaved_tasks(data_args: list[str], args: argparse.Namespace):
    """The data module and ``{model: (task, optimizer)}`` of :func:`interleaved_models`, built
    as ``resemb-pl fit`` builds them (default configs), with the data handed to each task."""
    tasks, dm = {}, None
    for model, config in interleaved_models(args.eager).items():
        cli = build_cli(config, data_args, args, ["--trainer.logger=false"])
        if dm is None:
            dm = cli.datamodule
            dm.prepare_data()
            dm.setup("fit")
        task = cli.model.to(args.device)
        task.attach(dm.catalogue, dm.graph, dm.samples("train"))
        optimizer = task.configure_optimizers()
        tasks[model] = (task, optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer)
    return dm, tasks


def bench_interleaved(args: argparse.Namespace) -> str:
    """ms per training step of plain, GCN and ATT DIN taking turns on the same batches.

    One process, the models built from the default configs; on every batch each model takes a
    step, the first one rotating, so a slow spell of the machine falls on all three alike. The
    ratio of two medians then moves far less from run to run than ``--end-to-end``'s, which
    times each model's own ``Trainer.fit`` one after another.
    """
    device = torch.device(args.device)
    res = list(interleaved_models(args.eager))[1:]

    def widths(model: str) -> tuple[int, int]:  # the ms and ratio columns fit their names
        return max(9, len(model) + 3), max(10, len(model) + 6)

    lines = [f"interleaved: one training step (forward, loss and regulariser, backward, the "
             f"configured optimizer) of DIN plain, GCN and ATT in turn on each batch of the "
             f"data module; configs/model/din_{{plain,gcn,att}}.yaml; device {device}, torch "
             f"{torch.__version__}, {torch.get_num_threads()} threads; {args.warmup} warm-up + "
             f"{args.steps} batches, medians; {native_state(device)}", "",
             f"{'data':<42} {'items':>9} {'batch':>5} {'plain ms':>9}"
             + "".join(f" {m + ' ms':>{widths(m)[0]}} {m + '/plain':>{widths(m)[1]}}"
                       for m in res)]
    for name in args.data:
        label, data_args = e2e_data_args(name)
        dm, tasks = interleaved_tasks(data_args, args)
        loader = iter(dm.train_dataloader())
        batches = [{k: v.to(device) for k, v in next(loader).items()}
                   for _ in range(args.warmup + args.steps)]
        times: dict[str, list[float]] = {m: [] for m in tasks}
        names = list(tasks)
        for k, batch in enumerate(batches):
            first = k % len(names)
            for model in names[first:] + names[:first]:
                start = time.perf_counter()
                with native.disabled() if model.endswith("eager") else contextlib.nullcontext():
                    train_step(*tasks[model], batch)  # CTRTask.training_step's loss
                sync(device)
                if k >= args.warmup:
                    times[model].append(time.perf_counter() - start)
        ms = {m: statistics.median(v) * 1e3 for m, v in times.items()}
        lines.append(f"{label:<42} {dm.num_items:>9,} {dm.hparams.batch_size:>5} "
                     f"{ms['plain']:>9.2f}" + "".join(
                         f" {ms[m]:>{widths(m)[0]}.2f} {ms[m] / ms['plain']:>{widths(m)[1]}.2f}"
                         for m in res))
    return "\n".join(lines) + "\n"


def end_to_end(args: argparse.Namespace) -> None:
    print_table(format_end_to_end(bench_end_to_end(args), args), args)


def print_table(text: str, args: argparse.Namespace) -> None:
    """Print ``text``; with ``--out``, also write it there after the command that made it."""
    print(text, end="", flush=True)
    if args.out:
        with atomic_open(args.out, "w") as fh:
            fh.write(f"$ python scripts/benchmark.py {' '.join(args.argv)}\n{text}")
        print(f"wrote {args.out}")


def bench_propagation(args: argparse.Namespace) -> str:
    """Whole-graph vs batch-local propagation of each built-in layer on real batches.

    For each data set, the interest graph and the first ``--warmup + --steps`` training batches
    of the ``resemb-pl fit`` data module (``--batch-size``); for each layer, the forward and
    backward pass of ``ResEmbedding(propagation=...)`` on the batch's item ids (target and
    valid history positions, as DIN looks them up), full and local alternating on the same
    batch. Local propagation costs about linearly in the rows' in-edges, so it pays below the
    printed break-even share of the graph's edges (``LOCAL_SHARE``,
    :mod:`resemb_pl.nn.conv.capabilities`).
    """
    from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv

    lines = [f"propagation: ResEmbedding forward + backward on a batch's item ids (target and "
             f"valid history), full graph vs batch-local, alternating on the same batches; "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.steps} "
             f"batches after {args.warmup}, medians", "",
             f"{'data':<30} {'layer':<17} {'edges':>9} {'rows':>6} {'share':>6} "
             f"{'full ms':>8} {'local ms':>9} {'local/full':>10} {'break-even share':>17}"]
    for name in args.data:
        label, data_args = e2e_data_args(name)
        dm = build_cli("din_gcn.yaml", data_args, args, ["--trainer.logger=false"]).datamodule
        dm.prepare_data()
        dm.setup("fit")
        loader = iter(dm.train_dataloader())
        batches = [next(loader) for _ in range(args.warmup + args.steps)]
        ids = [torch.cat([b["target"], b["hist"][b["hist"] > 0]]) for b in batches]
        for conv in (MeanConv, GCNNormConv, DotAttentionConv):
            pair = {}
            for mode in ("full", "local"):
                pair[mode] = ResEmbedding(dm.num_items, DIM, conv=conv, propagation=mode)
                pair[mode].set_graph(dm.graph)
            pair["local"].load_state_dict(pair["full"].state_dict())
            times: dict[str, list[float]] = {"full": [], "local": []}
            shares = []
            for k, batch_ids in enumerate(ids):
                for mode in ("full", "local") if k % 2 else ("local", "full"):
                    emb = pair[mode]
                    start = time.perf_counter()
                    emb(batch_ids).sum().backward()
                    if k >= args.warmup:
                        times[mode].append(time.perf_counter() - start)
                    emb.zero_grad(set_to_none=True)
                emb = pair["local"]
                rows = torch.unique(batch_ids)
                sub = int((emb.rowptr[rows + 1] - emb.rowptr[rows]).sum())
                shares.append((sub / emb.edge_index.size(1), rows.numel()))
            full, local = (statistics.median(times[m]) * 1e3 for m in ("full", "local"))
            share = statistics.median(s for s, _ in shares)
            rows_count = statistics.median(r for _, r in shares)
            lines.append(f"{label:<30} {conv.__name__:<17} {pair['full'].edge_index.size(1):>9,} "
                         f"{rows_count:>6.0f} {share:>6.2f} {full:>8.2f} {local:>9.2f} "
                         f"{local / full:>10.2f} {share * full / local:>17.2f}")
    return "\n".join(lines) + "\n"


def maxrss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


@command_boundary("benchmark")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, nargs="+",
                        default=[63_001, 367_984, 1_000_000, 10_000_000])
    parser.add_argument("--steps", type=int, default=40, help="timed steps per embedding")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--presets", nargs="*", default=["electronics", "books"])
    parser.add_argument("--eval-samples", type=int, default=385_000)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="time steps by elapsed (wall) or process CPU time")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--graph", choices=["popular", "uniform"], default="popular",
                        help="in-neighbours drawn by popularity (as co-clicks are) or uniformly")
    parser.add_argument("--fused", action="store_true",
                        help="compile RowAdam's row update and the aggregation's backward scatter "
                        "(CTRTask(fused_sparse_step=True)); the first step compiles")
    parser.add_argument("--quick", action="store_true",
                        help="63k and 368k items, 15 steps, the electronics preset only")
    parser.add_argument("--end-to-end", action="store_true",
                        help="the CLI's training loop (Trainer.fit) instead of the micro step: "
                        "samples/s of plain, GCN and ATT DIN and the res/plain ratios")
    parser.add_argument("--interleaved", action="store_true",
                        help="with --end-to-end: the three models' training steps taking turns "
                        "on the same batches in one process (no Trainer loop, no data loading), "
                        "ms per step and the res/plain ratios")
    parser.add_argument("--eager", action="store_true",
                        help="with --interleaved: GCN and ATT also step with the compiled CSR "
                        "loops off (resemb_pl.nn.conv.native), on the same batches")
    parser.add_argument("--data", nargs="+", choices=E2E_DATA,
                        default=["sports", "beauty", "books", "electronics"],
                        help="--end-to-end: the data sets (sports, beauty: ../shared/data's "
                        "Amazon Sports and Beauty, else the small preset)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="--end-to-end: rounds of the three models")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="--end-to-end: data.batch_size (default: the data config's)")
    parser.add_argument("--cache-dir", default=".cache/resemb_pl",
                        help="--end-to-end: data.cache_dir")
    parser.add_argument("--propagation", action="store_true",
                        help="whole-graph vs batch-local propagation of each built-in layer on "
                        "the --data sets' real batches, and where local pays (LOCAL_SHARE)")
    parser.add_argument("--out", default=None,
                        help="--end-to-end, --interleaved, --propagation: also write the "
                        "table here")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.argv = argv
    if args.propagation:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        print_table(bench_propagation(args), args)
        return
    if args.end_to_end:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
            raise ConfigError("--steps and --repeats must be >= 1 and --warmup >= 0")
        if args.interleaved:
            print_table(bench_interleaved(args), args)
        else:
            end_to_end(args)
        return
    if args.quick:
        args.items, args.steps, args.presets = [63_001, 367_984], 15, ["electronics"]
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"DIN, batch {BATCH}, dim {DIM}, Zipf(1) items, histories 10-50, top-8 {args.graph} "
          f"graph; sparse gradients + RowAdam{' (fused)' if args.fused else ''} for every "
          f"embedding; median of {args.steps} steps, "
          f"{args.clock} clock; THP_MEM_ALLOC_ENABLE={os.environ['THP_MEM_ALLOC_ENABLE']}")
    print("columns: step time (ms), training samples/s, median over batches of res step time / "
          "plain step time on the same batch\n")
    bench_steps(args, device)
    bench_scaling(args, device)
    bench_graph(args.presets)
    bench_metrics(args.eval_samples, device)
    print(f"\npeak memory: maxrss {maxrss_gb():.2f} GB", end="")
    if device.type == "cuda":
        print(f", CUDA max allocated {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GB",
              end="")
    print()


if __name__ == "__main__":
    main()
