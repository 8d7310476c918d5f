"""Lightning callbacks that watch the item embedding and the loss curves during training.

- :class:`EmbeddingMonitor` logs the envelope radius metrics of Theorem 1 (``val/r_max``,
  ``val/r_ratio``) and, for a res-embedding, the measured residual-to-central norm ratio
  (``val/res_ratio``) at every validation, and sends the item table to TensorBoard's embedding
  projector with category labels.
- :class:`LossCurves` records the training and validation loss at every validation, on the
  same step scale, for the overfitting curves of Fig. 5.
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger

from resemb_pl.metrics import envelope_radius
from resemb_pl.nn.embedding import ResEmbedding


def item_frequency(datamodule) -> np.ndarray:
    """Clicks per item in the training samples (positive targets), ``(num_items + 1,)``."""
    samples = datamodule.samples("train")
    clicked = samples.target[samples.label > 0.5]
    return np.bincount(clicked, minlength=datamodule.num_items + 1)


def item_domains(datamodule) -> np.ndarray:
    """The interest domain of every item: the true one on synthetic data, else the category.

    Category 0 (unknown) becomes -1, which :func:`~resemb_pl.metrics.envelope_radius` ignores.
    """
    domain = datamodule.item_domain
    if domain is not None:
        return np.asarray(domain, dtype=np.int64)
    category = np.asarray(datamodule.item_category, dtype=np.int64)
    return np.where(category > 0, category, -1)


def top_items(datamodule, count: int | None) -> np.ndarray:
    """Ids of the ``count`` most clicked training items (every clicked item if ``None``)."""
    freq = item_frequency(datamodule)
    freq[0] = 0
    order = np.argsort(-freq, kind="stable")
    order = order[freq[order] > 0]
    return np.sort(order if count is None else order[:count])


@torch.no_grad()
def embedding_stats(module: LightningModule, datamodule, items: np.ndarray) -> dict[str, float]:
    r"""Envelope radius metrics of ``items`` and, for a res-embedding, ``res_ratio``.

    ``res_ratio`` is :math:`\lVert R \rVert_F / \lVert W \cdot C_b \rVert_F` over the rows of
    ``items`` (the measured residual-to-central scale of Fig. 8).
    """
    embedding = module.embedding
    was_training = embedding.training
    embedding.eval()
    try:
        rows = torch.as_tensor(items, dtype=torch.long, device=embedding._device())
        table = embedding.item_table()[rows]
        domains = torch.as_tensor(item_domains(datamodule)[items], device=table.device)
        stats = envelope_radius(table, domains)
        if isinstance(embedding, ResEmbedding):
            central = embedding.central_table()[rows].norm()
            residual = embedding.residual(rows).norm()
            stats["res_ratio"] = float(residual / central) if central > 0 else float("nan")
    finally:
        embedding.train(was_training)
    return stats


class EmbeddingMonitor(Callback):
    """Logs the envelope radius metrics at every validation and feeds TensorBoard's projector.

    Logged at each validation (not the sanity check): ``val/r_max``, ``val/r_ratio`` (mean
    within-domain radius over the radius of all items), ``val/r_mean`` and, for a
    :class:`~resemb_pl.nn.ResEmbedding`, ``val/res_ratio``. Domains are the true interest domains
    on synthetic data and the categories on real data. Only items clicked in training count:
    the rows of never-seen items keep their random initialisation.

    Args:
        radius_items: Use the ``radius_items`` most clicked items (``None``: all clicked items).
        projector_items: Rows sent to the projector (the most clicked items).
        projector_every_n_epochs: Also send the table every ``n`` epochs; ``None`` sends it once,
            when fitting ends; ``0`` never.

    Example::

        Trainer(callbacks=[EmbeddingMonitor(projector_items=1000)])
    """

    def __init__(
        self,
        radius_items: int | None = None,
        projector_items: int = 1000,
        projector_every_n_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.radius_items = radius_items
        self.projector_items = projector_items
        self.projector_every_n_epochs = projector_every_n_epochs

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or trainer.datamodule is None:
            return
        stats = embedding_stats(pl_module, trainer.datamodule,
                                top_items(trainer.datamodule, self.radius_items))
        for key in ("r_max", "r_mean", "r_ratio", "res_ratio"):
            if key in stats and not np.isnan(stats[key]):  # NaN: no item has a known domain
                pl_module.log(f"val/{key}", stats[key])
        n = self.projector_every_n_epochs
        if n and (trainer.current_epoch + 1) % n == 0:
            self.send_to_projector(trainer, pl_module)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.projector_every_n_epochs is None:
            self.send_to_projector(trainer, pl_module)

    @torch.no_grad()
    def send_to_projector(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Write the most clicked items' embeddings with item, category and domain labels."""
        logger = trainer.logger
        dm = trainer.datamodule
        if not isinstance(logger, TensorBoardLogger) or dm is None or self.projector_items < 1:
            return
        items = top_items(dm, self.projector_items)
        rows = torch.as_tensor(items, dtype=torch.long, device=pl_module.device)
        table = pl_module.embedding.item_table()[rows].float().cpu()
        category_vocab = dm.arrays["category_vocab"]
        item_vocab = dm.arrays["item_vocab"]
        category = np.asarray(dm.item_category)[items]
        domain = item_domains(dm)[items]
        metadata = [
            [str(item_vocab[i - 1]) if i - 1 < len(item_vocab) else str(i),
             str(category_vocab[c - 1]) if 0 < c <= len(category_vocab) else "unknown",
             str(z)]
            for i, c, z in zip(items, category, domain, strict=True)
        ]
        logger.experiment.add_embedding(
            table, metadata=metadata, metadata_header=["item", "category", "domain"],
            global_step=trainer.global_step, tag="item_embedding",
        )


class LossCurves(Callback):
    """Train and validation loss at every validation, on the optimizer-step scale.

    ``train_loss`` is the mean cross-entropy (``train/bce``, without the regulariser) of the
    batches since the previous validation; ``val_loss`` is ``val/logloss``; ``step`` is the
    number of optimizer steps taken. Each validation also sends ``val/loss`` (the same number)
    to the logger at the step Lightning logs ``train/loss`` and ``val/logloss`` at, so that
    TensorBoard draws both losses on one step axis. Set ``Trainer(val_check_interval=...)`` for
    several points per epoch.

    Attributes:
        history: One dict per validation: ``step``, ``epoch``, ``train_loss``, ``val_loss``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self._sum, self._count = 0.0, 0

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx) -> None:
        bce = trainer.callback_metrics.get("train/bce")
        if bce is not None:
            self._sum += float(bce)
            self._count += 1

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The epoch-level metrics are computed after on_validation_epoch_end, so read them here.
        if trainer.sanity_checking or "val/logloss" not in trainer.callback_metrics:
            return
        val_loss = float(trainer.callback_metrics["val/logloss"])
        if trainer.logger is not None:
            # The step Lightning itself logs train/loss and val/logloss at (batches stepped).
            step = trainer.fit_loop.epoch_loop._batches_that_stepped
            trainer.logger.log_metrics({"val/loss": val_loss}, step=step)
        self.history.append({
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "train_loss": self._sum / self._count if self._count else float("nan"),
            "val_loss": val_loss,
        })
        self._sum, self._count = 0.0, 0
