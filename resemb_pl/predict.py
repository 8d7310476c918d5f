"""Writing predictions: CTR probabilities to a parquet file, in the order of the requests.

``resemb-pl predict --ckpt_path model.ckpt --data.path requests.parquet`` scores a requests
file (see :mod:`resemb_pl.data.requests`) with nothing but the checkpoint and writes
``--data.output`` (default ``predictions.parquet``) with one ``probability`` per request row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info


class ParquetPredictionWriter(BasePredictionWriter):
    """Write the probabilities of a ``predict`` run to ``output`` as one column ``probability``.

    Rows follow the prediction dataloader's order (the requests file's row order).

    Args:
        output: The parquet file to write; its folder is created.

    Example::

        trainer = Trainer(callbacks=[ParquetPredictionWriter("scores.parquet")])
        trainer.predict(task, datamodule=dm, return_predictions=True)
    """

    def __init__(self, output: str | Path = "predictions.parquet") -> None:
        super().__init__(write_interval="epoch")
        self.output = Path(output)

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        if predictions and isinstance(predictions[0], list):  # several dataloaders: the first
            predictions = predictions[0]
        probability = (
            torch.cat([p.reshape(-1) for p in predictions]).float().cpu().numpy()
            if predictions
            else torch.zeros(0).numpy()
        )
        self.output.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"probability": probability}).to_parquet(self.output, index=False)
        rank_zero_info(f"wrote {len(probability)} probabilities to {self.output}")
