"""DIN's attention over the valid history positions only (jagged) vs over every padded one (dense).

    python scripts/bench_attention.py                # Sports lengths, then the sweep
    python scripts/bench_attention.py --steps 20 --no-sweep

Each step is DIN's forward, the loss, the backward and an Adam step, at batch 1024, dimension
18 (item + category = 36 per position) on 2 threads, with the plain embedding over Sports'
18,357 items. The history lengths are drawn from the real training histories of Amazon Sports
(``../shared/data/amazon-sports-5core-seq``, DIN protocol, max_len 50: mean 6.3) when that folder
is there, else from a geometric law of the same mean capped at 50; each batch is padded to its
longest history, as the loader pads. Two copies of the model with the same weights, one dense
and one jagged, each with its own Adam, step alternately on the same batches; the report gives
the median milliseconds per step of each and the median over batches of dense / jagged.

The sweep then times both forms on batches whose every history has the same length ``k`` out
of a padded width of 50, for a few valid fractions ``k / 50``: where the ratio crosses 1 is the
threshold the automatic choice (``LocalActivationUnit(jagged=None)``) uses,
:data:`resemb_pl.nn.layers.JAGGED_BELOW`.

``--lightning`` measures instead what Lightning's training loop adds to a step: the same DIN
(``CTRTask``, plain embedding, default ``jagged=None``) trained on the real loader
(``CTRDataModule`` on Sports, or the ``small`` synthetic preset without it) by a bare loop
(next batch, ``training_step``, backward, Adam) and by a ``Trainer`` set up as
``configs/default.yaml`` (TensorBoard logger, progress bar; no validation, no checkpoint), then
without the progress bar, then without logger and progress bar. Each is timed per step from one
batch's start to the next one's (loader included), median over the steps after a warm-up; the
loader alone is timed too.

The results are printed and written to ``reports/throughput/attention.txt`` (``--lightning``:
``reports/throughput/lightning.txt``). Run it on a quiet
machine (load average well below the number of threads).
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback

from resemb_pl.atomic import atomic_open
from resemb_pl.boundary import ArgumentParser, command_boundary
from resemb_pl.nn import PlainEmbedding
from resemb_pl.nn.models import DIN

SPORTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "amazon-sports-5core-seq"
NUM_ITEMS, NUM_CATEGORIES, MAX_LEN = 18357, 959, 50


def sports_lengths(max_len: int = MAX_LEN) -> tuple[np.ndarray, str]:
    """History lengths of the DIN protocol's training samples on Sports, or a stand-in law."""
    path = SPORTS / "interactions.parquet"
    if path.exists():
        import pandas as pd

        per_user = pd.read_parquet(path, columns=["user_id"]).groupby("user_id").size()
        # A user of n items gives training samples at positions 1..n-3 (the last two are the
        # validation and test targets), each with the items before it, at most max_len.
        lengths = np.concatenate([np.minimum(np.arange(1, n - 2), max_len) for n in per_user])
        return lengths, f"Sports training histories ({path})"
    rng = np.random.default_rng(0)
    lengths = np.minimum(rng.geometric(1 / 6.3, 200_000), max_len)
    return lengths, "geometric law, mean 6.3, capped at 50 (Sports data not found)"


def make_batch(lengths: np.ndarray, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """A batch padded to its longest history, ids drawn uniformly."""
    width = max(1, int(lengths.max()))
    mask = np.arange(width)[None, :] < lengths[:, None]
    hist = np.where(mask, rng.integers(1, NUM_ITEMS + 1, mask.shape), 0)
    target = rng.integers(1, NUM_ITEMS + 1, len(lengths))
    cat = lambda ids: np.where(ids > 0, ids % NUM_CATEGORIES + 1, 0)  # noqa: E731
    as_t = torch.from_numpy
    return {"hist": as_t(hist), "hist_cat": as_t(cat(hist)), "target": as_t(target),
            "target_cat": as_t(cat(target)),
            "label": as_t(rng.integers(0, 2, len(lengths)).astype(np.float32))}


class Stepper:
    """A DIN with its own Adam; :meth:`step` returns the seconds one training step took."""

    def __init__(self, model: DIN) -> None:
        self.model = model
        self.optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(self, batch: dict[str, torch.Tensor]) -> float:
        start = time.perf_counter()
        logits = self.model(batch["hist"], batch["hist_cat"], batch["target"],
                            batch["target_cat"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["label"])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start


def compare(batches: list[dict[str, torch.Tensor]], dim: int, warmup: int) -> dict[str, float]:
    """Median ms per step of the dense and the jagged form, alternating on the same batches."""
    torch.manual_seed(0)
    dense = DIN(PlainEmbedding(NUM_ITEMS, dim), NUM_CATEGORIES, jagged=False)
    jagged = copy.deepcopy(dense)
    jagged.attention.jagged = True
    steppers = {"dense": Stepper(dense), "jagged": Stepper(jagged)}
    times: dict[str, list[float]] = {"dense": [], "jagged": []}
    for i, batch in enumerate(batches):
        order = ("dense", "jagged") if i % 2 == 0 else ("jagged", "dense")
        took = {name: steppers[name].step(batch) for name in order}
        if i >= warmup:
            for name, seconds in took.items():
                times[name].append(seconds)
    ratios = [d / j for d, j in zip(times["dense"], times["jagged"], strict=True)]
    return {"dense_ms": 1e3 * statistics.median(times["dense"]),
            "jagged_ms": 1e3 * statistics.median(times["jagged"]),
            "ratio": statistics.median(ratios)}


@command_boundary("bench_attention")
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="bench_attention", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--dim", type=int, default=18, help="item embedding size (x2 with the "
                        "category)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60, help="timed steps per form")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--no-sweep", dest="sweep", action="store_false",
                        help="skip the valid-fraction sweep")
    parser.add_argument("--lightning", action="store_true",
                        help="time Lightning's training loop against a bare loop instead")
    parser.add_argument("--out", default=None, help="default: reports/throughput/"
                        "attention.txt (lightning.txt with --lightning)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    name = "lightning.txt" if args.lightning else "attention.txt"
    out = Path(args.out or f"reports/throughput/{name}")
    header = [
        f"# {' '.join([Path(sys.argv[0]).name] + (sys.argv[1:] if argv is None else argv))}",
        f"# {platform.node()} nproc={os.cpu_count()} load={os.getloadavg()[0]:.2f} "
        f"torch={torch.__version__} threads={args.threads}",
    ]
    lines = header + (lightning_overhead(args) if args.lightning else attention(args))
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


def attention(args) -> list[str]:
    """Dense vs jagged DIN steps at Sports lengths, then over the valid fraction."""
    rng = np.random.default_rng(0)
    lengths, source = sports_lengths()
    n = args.steps + args.warmup
    batches = [make_batch(rng.choice(lengths, args.batch), rng) for _ in range(n)]
    valid = np.mean([b["hist"].gt(0).float().mean().item() for b in batches])
    width = np.mean([b["hist"].size(1) for b in batches])
    lines = [
        f"# DIN step (forward, BCE, backward, Adam), batch {args.batch}, dimension {args.dim} "
        f"(x2 with the category), {NUM_ITEMS} items",
        f"# lengths: {source}: mean {lengths.mean():.2f}, max {lengths.max()}",
        f"# batches: padded width {width:.1f} on average, valid fraction {valid:.3f}",
        "",
        f"{'case':<22} {'dense ms':>9} {'jagged ms':>10} {'dense/jagged':>13}",
    ]
    print("\n".join(lines), flush=True)

    def row(case: str, result: dict[str, float]) -> None:
        line = (f"{case:<22} {result['dense_ms']:>9.2f} {result['jagged_ms']:>10.2f} "
                f"{result['ratio']:>13.2f}")
        lines.append(line)
        print(line, flush=True)

    row("Sports lengths", compare(batches, args.dim, args.warmup))
    if args.sweep:
        for k in (5, 10, 15, 20, 25, 30, 40, 50):
            same = np.full(args.batch, k)
            same[0] = MAX_LEN  # padded to 50, as a batch with one long history is
            sweep = [make_batch(same, rng) for _ in range(args.steps // 3 + args.warmup)]
            row(f"valid {k / MAX_LEN:.2f} (k={k}/50)", compare(sweep, args.dim, args.warmup))
    return lines


class StepClock(Callback):
    """Records the time at the start of every training batch."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.starts.append(time.perf_counter())


def per_step_ms(starts: list[float], warmup: int) -> float:
    return 1e3 * statistics.median(np.diff(starts[warmup:]))


def lightning_overhead(args) -> list[str]:
    """Median ms per step: the loader alone, a bare loop, and Lightning's loop three ways."""
    from lightning.pytorch import Trainer
    from lightning.pytorch.loggers import TensorBoardLogger

    from resemb_pl.data.datamodule import CTRDataModule
    from resemb_pl.task import CTRTask

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")  # advice and the bare loop's self.log
    if (SPORTS / "interactions.parquet").exists():
        dm = CTRDataModule(source="interactions", path=str(SPORTS), protocol="din",
                           max_len=MAX_LEN, batch_size=args.batch)
        data = f"Sports ({SPORTS})"
    else:
        dm = CTRDataModule(preset="small", batch_size=args.batch)
        data = "synthetic preset small"
    dm.prepare_data()
    dm.setup("fit")
    steps = args.steps + args.warmup

    def task() -> CTRTask:
        torch.manual_seed(0)
        return CTRTask(dm.num_items, dm.num_categories, args.dim)

    def loader_only() -> float:
        starts = [time.perf_counter()]
        for i, _ in enumerate(dm.train_dataloader()):
            starts.append(time.perf_counter())
            if i + 1 == steps:
                break
        return per_step_ms(starts, args.warmup)

    def bare() -> float:
        model = task()
        optimizer = model.configure_optimizers()
        starts = []
        for i, batch in enumerate(dm.train_dataloader()):
            starts.append(time.perf_counter())
            loss = model.training_step(batch, i)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if i + 1 == steps:
                starts.append(time.perf_counter())
                break
        return per_step_ms(starts, args.warmup)

    def lightning(logger: bool, progress_bar: bool) -> float:
        clock = StepClock()
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(
                max_steps=steps + 1, limit_val_batches=0, num_sanity_val_steps=0,
                logger=TensorBoardLogger(tmp, name="bench") if logger else False,
                enable_progress_bar=progress_bar, enable_checkpointing=False,
                enable_model_summary=False, callbacks=[clock], default_root_dir=tmp)
            trainer.fit(task(), datamodule=dm)
        return per_step_ms(clock.starts, args.warmup)

    lines = [f"# CTRTask DIN plain, batch {args.batch}, dimension {args.dim}, data: {data}; "
             f"median ms per step over {args.steps} steps after {args.warmup}", ""]
    print("\n".join(lines), flush=True)
    cases = [
        ("loader alone", loader_only),
        ("bare loop", bare),
        ("Lightning, as default.yaml", lambda: lightning(True, True)),
        ("Lightning, no progress bar", lambda: lightning(True, False)),
        ("Lightning, no logger/bar", lambda: lightning(False, False)),
        ("bare loop (again)", bare),
    ]
    for case, run in cases:
        ms = run()
        line = f"{case:<28} {ms:>8.2f} ms  {args.batch / ms * 1e3:>9.0f} samples/s"
        lines.append(line)
        print(line, flush=True)
    return lines


if __name__ == "__main__":
    main()
