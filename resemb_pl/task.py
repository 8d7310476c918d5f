"""CTRTask: the LightningModule that trains a backbone with an item embedding on CTR samples."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics.classification import BinaryAUROC

from resemb_pl.factory import as_factory, describe
from resemb_pl.metrics import GroupAUC, LogLoss
from resemb_pl.nn.embedding import ItemEmbedding, PlainEmbedding
from resemb_pl.nn.models import DIN

EmbeddingFactory = Callable[[int, int], ItemEmbedding]
BackboneFactory = Callable[[ItemEmbedding, int], nn.Module]


class CTRTask(LightningModule):
    """Binary cross-entropy plus the embedding's regulariser, with AUC, GAUC and logloss.

    ``num_items`` and ``num_categories`` are linked from the data module by the CLI. The item
    interest graph is taken from ``trainer.datamodule.graph`` in :meth:`setup` and kept in the
    embedding's buffers, so a checkpoint alone is enough to score.

    Args:
        num_items: Number of items ``H``.
        num_categories: Number of categories ``C``.
        embedding_dim: Size of the item and category embeddings (paper: 18).
        embedding: Factory ``(num_items, embedding_dim) -> ItemEmbedding``.
        backbone: Factory ``(embedding, num_categories) -> nn.Module`` returning logits.
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory (stepped per epoch).

    Example::

        task = CTRTask(num_items=100, num_categories=5,
                       embedding=partial(ResEmbedding, conv=GCNNormConv))
    """

    def __init__(
        self,
        num_items: int,
        num_categories: int,
        embedding_dim: int = 18,
        embedding: EmbeddingFactory = PlainEmbedding,
        backbone: BackboneFactory = DIN,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # Keep only plain data in the hyperparameters, so checkpoints load with weights_only.
        for key in ("embedding", "backbone", "optimizer", "lr_scheduler"):
            self.hparams[key] = describe(self.hparams[key])
        self.optimizer, self.lr_scheduler = as_factory(optimizer), as_factory(lr_scheduler)
        self.model = as_factory(backbone)(
            as_factory(embedding)(num_items, embedding_dim), num_categories
        )
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {"auc": BinaryAUROC(), "gauc": GroupAUC(), "logloss": LogLoss()}
                )
                for stage in ("val", "test")
            }
        )

    @property
    def embedding(self) -> ItemEmbedding:
        return self.model.embedding

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """Logits of a batch (``hist``, ``hist_cat``, ``target``, ``target_cat``)."""
        return self.model(batch["hist"], batch["hist_cat"], batch["target"], batch["target_cat"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(batch)
        bce = F.binary_cross_entropy_with_logits(logits, batch["label"])
        ids = torch.cat([batch["target"].unsqueeze(1), batch["hist"]], 1)
        reg = self.embedding.regularization(ids)
        loss = bce + reg
        n = batch["label"].numel()
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/bce", bce, batch_size=n)
        self.log("train/reg", reg, batch_size=n)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate("val", batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate("test", batch)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return torch.sigmoid(self(batch))

    def configure_optimizers(self):
        optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler(optimizer)}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if datamodule is not None and hasattr(self.embedding, "set_graph"):
            self.embedding.set_graph(datamodule.graph)

    def _evaluate(self, stage: str, batch: dict[str, Tensor]) -> None:
        logits = self(batch)
        label = batch["label"]
        metrics = self.metrics[stage]
        metrics["auc"].update(logits, label.long())
        metrics["gauc"].update(logits, label, batch["user"])
        metrics["logloss"].update(logits, label)
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name == "auc", batch_size=label.numel())
