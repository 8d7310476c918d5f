"""DDP evaluation and prediction over 2 CPU processes (gloo) equal a single-process run."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import Subset

from resemb_pl.checkpoint import load_checkpoint
from resemb_pl.cli import main
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.datamodule import CTRDataModule, ShardSampler
from resemb_pl.nn.conv import GCNNormConv
from resemb_pl.nn.embedding import ResEmbedding
from resemb_pl.task import CTRTask


class OddDataModule(CTRDataModule):
    """The tiny preset with an odd number of validation samples: a padding sampler would
    evaluate one of them twice on 2 ranks."""

    def setup(self, stage=None):
        super().setup(stage)
        val = self.datasets["val"]
        self.datasets["val"] = Subset(val, range(len(val) - 1))


def _task(num_items: int, num_categories: int) -> CTRTask:
    return CTRTask(num_items, num_categories, embedding_dim=8,
                   embedding=functools.partial(ResEmbedding, conv=GCNNormConv))


def evaluate(devices: int, cache: str, weights: str) -> dict[str, float]:
    """Validate the saved weights on ``devices`` CPU processes; rank 0 returns the metrics."""
    dm = OddDataModule(preset="tiny", cache_dir=cache, eval_batch_size=100)
    task = _task(dm.num_items, dm.num_categories)
    task.load_state_dict(torch.load(weights, weights_only=True))
    trainer = Trainer(accelerator="cpu", devices=devices,
                      strategy="ddp" if devices > 1 else "auto", logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, default_root_dir=cache)
    metrics = trainer.validate(task, datamodule=dm, verbose=False)[0]
    size = len(trainer.val_dataloaders.dataset)
    return {"world_size": trainer.world_size, "rank": trainer.global_rank, "size": size, **metrics}


# Lightning's "ddp" strategy relaunches the running script once per extra rank, so the
# 2-process run is a small script of its own rather than pytest.
SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_ddp import evaluate
metrics = evaluate(2, sys.argv[2], sys.argv[3])
if metrics["rank"] == 0:
    with open(sys.argv[4], "w") as fh:
        json.dump(metrics, fh)
"""


def test_ddp_validation_equals_single_process(tmp_path):
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"), eval_batch_size=100)
    torch.manual_seed(3)
    task = _task(dm.num_items, dm.num_categories)
    task.embedding.set_graph(dm.graph)
    with torch.no_grad():  # fixed, non-trivial weights
        task.embedding.residual.weight[1:].normal_(std=0.05)
    weights = tmp_path / "weights.pt"
    torch.save(task.state_dict(), weights)

    single = evaluate(1, str(tmp_path / "cache"), str(weights))
    script, out = tmp_path / "ddp_validate.py", tmp_path / "metrics.json"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    args = [str(Path(__file__).parent), str(tmp_path / "cache"), str(weights), str(out)]
    subprocess.run([sys.executable, str(script), *args], check=True, env=env, cwd=tmp_path,
                   timeout=300, capture_output=True)
    ddp = json.loads(out.read_text())
    assert (single["world_size"], ddp["world_size"]) == (1, 2)
    assert single["size"] % 2 == 1
    assert 0.3 < single["val/auc"] < 0.99
    for key in ("val/auc", "val/gauc", "val/logloss"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key


def test_shard_sampler_covers_each_sample_once():
    data = list(range(10))
    shards = [list(ShardSampler(data, 3, rank)) for rank in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert [len(ShardSampler(data, 3, rank)) for rank in range(3)] == [4, 3, 3]


# `resemb-pl predict` on 2 processes, relaunched by Lightning from this script: a requests file
# of 101 rows (odd, so the shards differ in size), one of 1 row (rank 1 has nothing to score)
# and one of none.
PREDICT_SCRIPT = """
import sys
from resemb_pl.cli import main
for name in ("requests", "one", "none"):
    main(["predict", f"--ckpt_path={sys.argv[1]}", f"--data.path={name}.parquet",
          f"--data.output=ddp_{name}.parquet", "--trainer.accelerator=cpu",
          "--trainer.devices=2", "--trainer.strategy=ddp", "--trainer.logger=false",
          "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"])
"""


def test_ddp_predict_writes_every_row_once_in_request_order(tmp_path, quickstart_checkpoint,
                                                            monkeypatch):
    ckpt = quickstart_checkpoint.ckpt
    vocab = Catalogue.from_checkpoint(load_checkpoint(ckpt)).item_vocab
    rng = np.random.default_rng(0)
    rows = 101
    requests = pd.DataFrame({
        "history": [list(rng.choice(vocab, rng.integers(0, 8))) + ["unknown"] * (i % 7 == 0)
                    for i in range(rows)],
        "item_id": rng.choice(vocab, rows),
    })
    requests.to_parquet(tmp_path / "requests.parquet")
    requests[:1].to_parquet(tmp_path / "one.parquet")
    requests[:0].to_parquet(tmp_path / "none.parquet")
    pd.DataFrame({"probability": [0.5] * 3}).to_parquet(tmp_path / "ddp_none.parquet")  # stale

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    main(["predict", f"--ckpt_path={ckpt}", "--data.path=requests.parquet",
          "--data.output=single.parquet", "--trainer.accelerator=cpu", "--trainer.devices=1",
          "--trainer.logger=false", "--trainer.enable_progress_bar=false",
          "--trainer.enable_model_summary=false"])
    single = pd.read_parquet(tmp_path / "single.parquet")["probability"].to_numpy()

    script = tmp_path / "ddp_predict.py"
    script.write_text(PREDICT_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, str(script), str(ckpt)], env=env, cwd=tmp_path,
                            timeout=300, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("wrote 101 probabilities to ddp_requests.parquet") == 1

    ddp = pd.read_parquet(tmp_path / "ddp_requests.parquet")["probability"].to_numpy()
    assert len(single) == len(ddp) == rows
    assert single.std() > 1e-4  # the rows differ, so a wrong order would show
    np.testing.assert_allclose(ddp, single, rtol=0, atol=1e-6)
    one = pd.read_parquet(tmp_path / "ddp_one.parquet")["probability"].to_numpy()
    np.testing.assert_allclose(one, single[:1], rtol=0, atol=1e-6)
    assert len(pd.read_parquet(tmp_path / "ddp_none.parquet")) == 0
