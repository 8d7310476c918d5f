"""Writing predictions: CTR probabilities to a parquet file, in the order of the requests.

``resemb-pl predict --ckpt_path model.ckpt --data.path requests.parquet`` scores a requests
file (see :mod:`resemb_pl.data.requests`) with nothing but the checkpoint and writes
``--data.output`` (default ``predictions.parquet``) with one ``probability`` per request row.
On several processes (``--trainer.devices 2 --trainer.strategy ddp``) each rank scores its
shard; the shards are gathered, with their row indices, to rank 0, which writes the file once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from resemb_pl.atomic import atomic_open


class ParquetPredictionWriter(BasePredictionWriter):
    """Write the probabilities of a ``predict`` run to ``output`` as one column ``probability``.

    Rows follow the prediction dataset's order (the requests file's row order), whatever the
    number of processes: each rank keeps the dataset index of every prediction, rank 0 gathers
    them and writes the file once (atomically, so a failed run leaves an earlier file whole).
    A run with no rows writes an empty file rather than leaving an old one in place.

    Args:
        output: The parquet file to write; its folder is created.

    Example::

        trainer = Trainer(callbacks=[ParquetPredictionWriter("scores.parquet")])
        trainer.predict(task, datamodule=dm, return_predictions=False)
    """

    def __init__(self, output: str | Path = "predictions.parquet") -> None:
        super().__init__(write_interval="epoch")
        self.output = Path(output)
        self._local: tuple[np.ndarray, np.ndarray] | None = None
        self._allowed = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._local = None
        if stage == "predict":
            # With fewer rows than ranks a rank's shard is empty. Lightning refuses that unless
            # allowed; it is safe here because every rank meets the others in ``teardown``.
            self._allowed = pl_module.allow_zero_length_dataloader_with_multiple_devices
            pl_module.allow_zero_length_dataloader_with_multiple_devices = True

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders: the first
            predictions = predictions[0]
        batches = list(batch_indices[0]) if batch_indices else []
        probability = _flat([p.reshape(-1).float().cpu().numpy() for p in predictions], np.float32)
        index = _flat([np.asarray(i, dtype=np.int64) for i in batches], np.int64)
        if len(index) != len(probability):
            if trainer.world_size > 1:
                raise RuntimeError(
                    "ParquetPredictionWriter: the predict loader gave no batch indices, so the "
                    "shards of the ranks cannot be put back in order"
                )
            index = np.arange(len(probability), dtype=np.int64)
        self._local = (index, probability)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Every rank gets here, including one whose shard was empty (its loop is skipped), so
        # the gather cannot wait for a rank that never joins.
        if stage != "predict":
            return
        pl_module.allow_zero_length_dataloader_with_multiple_devices = self._allowed
        index, probability = self._local or (np.zeros(0, np.int64), np.zeros(0, np.float32))
        self._local = None
        if trainer.world_size > 1:
            index, probability = _gather(trainer, index, probability)
        if trainer.is_global_zero:
            index, first = np.unique(index, return_index=True)  # padded shards repeat rows
            probability = probability[first]  # ``np.unique`` sorts: request order
            with atomic_open(self.output) as fh:
                pd.DataFrame({"probability": probability}).to_parquet(fh, index=False)
            rank_zero_info(f"wrote {len(probability)} probabilities to {self.output}")


def _flat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)


def _gather(
    trainer: Trainer, index: np.ndarray, probability: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every rank's ``(index, probability)``, concatenated; shards may differ in size."""
    strategy, device = trainer.strategy, trainer.strategy.root_device
    sizes = strategy.all_gather(torch.tensor([len(index)], device=device)).reshape(-1)
    width = int(sizes.max())
    padded_index = torch.full((width,), -1, dtype=torch.long, device=device)
    padded_index[: len(index)] = torch.from_numpy(index)
    padded_prob = torch.zeros(width, dtype=torch.float32, device=device)
    padded_prob[: len(index)] = torch.from_numpy(probability)
    all_index = strategy.all_gather(padded_index).reshape(-1).cpu().numpy()
    all_prob = strategy.all_gather(padded_prob).reshape(-1).cpu().numpy()
    keep = all_index >= 0
    return all_index[keep], all_prob[keep]
