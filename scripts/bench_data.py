"""Prepare a synthetic impression log the size of a real one, and open its cache, measured.

    python scripts/bench_data.py --preset impressions-20m --out reports/data/bench_impressions.txt

Writes the log (``dt=`` partitioned parquet, :func:`resemb_pl.data.synthetic.write_impressions`)
into ``--log`` unless it is there, then, each in a fresh process:

1. **prepare**: ``CTRDataModule(source="impressions", split="time").prepare_data()`` into an
   empty cache folder: wall time and the process's peak RSS, and the size of the cache on disk;
2. **open**: a second process that opens the finished cache (``dm.processed``, as every rank of a
   run does): the time to open it, its RSS increase, then the RSS increase after it touches
   the samples of one batch of 1,024 and after it reads every training target.

RSS counts the pages of the memory-mapped cache files that a process has touched (page cache
shared by every process that maps them), so it is reported against the size of those arrays.
The preparation's own progress lines (rows read, samples and graph built, with rates) are
copied into the report. The machine's load is printed too: the times hold on an idle machine
only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from resemb_pl.atomic import atomic_open
from resemb_pl.boundary import ArgumentParser, command_boundary

# Targets of issue 15 on a 2-core, 24 GB machine.
TARGETS = {"prepare_s": 180, "prepare_rss_gb": 8.0, "open_s": 1.0, "open_rss_mb": 200}


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise OSError("no VmRSS in /proc/self/status")


def _datamodule(log: Path, cache: Path):
    from resemb_pl.data.datamodule import CTRDataModule
    from resemb_pl.data.synthetic import IMPRESSION_COLUMNS

    return CTRDataModule(source="impressions", path=str(log), columns=IMPRESSION_COLUMNS,
                         split="time", cache_dir=str(cache))


def child_prepare(log: Path, cache: Path) -> dict:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    dm = _datamodule(log, cache)  # imports torch and Lightning: not part of the preparation
    start = time.perf_counter()
    dm.prepare_data()
    return {"prepare_s": time.perf_counter() - start}


def child_open(log: Path, cache: Path) -> dict:
    import numpy as np

    dm = _datamodule(log, cache)
    base = _rss_mb()
    start = time.perf_counter()
    data = dm.processed
    opened = time.perf_counter() - start
    after_open = _rss_mb() - base
    from resemb_pl.data.datamodule import SampleDataset

    train = SampleDataset(dm.samples("train"), dm.item_category)
    idx = np.random.default_rng(0).integers(0, len(train), 1024).tolist()
    train.__getitems__(idx)
    after_batch = _rss_mb() - base
    # The files a batch reads from; random reads through a memory map pull in their
    # neighbours too (the kernel's read-ahead), so a batch can map most of each file.
    touched = sum(np.asarray(getattr(data.train, name)).nbytes
                  for name in ("seq", "hist_start", "hist_len", "target", "label", "user"))
    touched += np.asarray(data.catalogue.item_category).nbytes
    targets = int(np.asarray(data.train.target).sum())  # every page of one array
    return {
        "open_s": opened, "open_rss_mb": after_open, "batch_rss_mb": after_batch,
        "batch_arrays_mb": touched / 2**20,
        "target_rss_mb": _rss_mb() - base, "train_target_mb": data.train.target.nbytes / 2**20,
        "train_samples": len(train), "checksum": targets,
    }


def _run_child(mode: str, log: Path, cache: Path) -> tuple[dict, float, str]:
    """Run a mode in a fresh process: its JSON result, its peak RSS (GB) and its stderr."""
    cmd = [sys.executable, __file__, "--child", mode, "--log", str(log), "--cache", str(cache)]
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read()
    if proc.returncode:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}):\n{stderr}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 2**20, stderr


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@command_boundary("bench_data")
def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="impressions-20m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", type=Path, help="the log folder (default: a temporary folder; "
                   "written there unless it exists)")
    p.add_argument("--cache", type=Path, help="the cache folder to create (default: temporary; "
                   "must not exist)")
    p.add_argument("--out", type=Path, help="also write the report to this file")
    p.add_argument("--child", choices=["prepare", "open"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        run = child_prepare if args.child == "prepare" else child_open
        print(json.dumps(run(args.log, args.cache)))
        return

    from resemb_pl.data.synthetic import write_impressions

    work = Path(tempfile.mkdtemp(prefix="bench_data."))
    try:
        log = args.log or work / args.preset
        lines = [f"# bench_data: {args.preset} (seed {args.seed})", ""]
        if not log.exists():
            start = time.perf_counter()
            write_impressions(args.preset, log, seed=args.seed)
            lines.append(f"generated the log in {time.perf_counter() - start:.1f} s")
        import pyarrow.parquet as pq

        parts = sorted(log.rglob("*.parquet"))
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in parts)
        lines.append(f"log: {rows:,} impressions in {len(parts)} parquet files, "
                     f"{_size(log) / 2**20:,.0f} MiB ({log})")
        cache = args.cache or work / "cache"
        if cache.exists():
            raise FileExistsError(17, "the cache folder must not exist yet", str(cache))
        load = os.getloadavg()
        prepared, peak_gb, progress = _run_child("prepare", log, cache)
        folders = [p for p in cache.iterdir() if p.is_dir()]
        opened, _, _ = _run_child("open", log, cache)
        t = TARGETS
        lines += [
            f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python "
            f"{platform.python_version()}; load average before preparing "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
            "",
            f"preparation time:     {prepared['prepare_s']:7.1f} s    "
            f"(target <= {t['prepare_s']} s)",
            f"preparation peak RSS: {peak_gb:7.2f} GB   (target <= {t['prepare_rss_gb']} GB)",
            f"cache on disk:        {_size(cache) / 2**20:7.0f} MiB  ({len(folders)} folder)",
            f"open the cache:       {opened['open_s']:7.3f} s    (target <= {t['open_s']} s)",
            f"RSS after opening:    {opened['open_rss_mb']:+7.1f} MB   "
            f"(target <= {t['open_rss_mb']} MB beyond the arrays touched)",
            f"  after one batch of 1,024 random samples: {opened['batch_rss_mb']:+.1f} MB; the "
            f"arrays it reads from total {opened['batch_arrays_mb']:.1f} MB (their pages come "
            "in through the kernel's read-ahead: page cache, shared by every process)",
            f"  after reading all {opened['train_samples']:,} training targets "
            f"({opened['train_target_mb']:.0f} MB): {opened['target_rss_mb']:+.1f} MB",
            "",
            "preparation log:",
            *("  " + line for line in progress.strip().splitlines()),
        ]
        report = "\n".join(lines) + "\n"
        print(report, end="")
        if args.out:
            with atomic_open(args.out, "w") as fh:
                fh.write(report)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
