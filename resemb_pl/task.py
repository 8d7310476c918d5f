"""CTRTask: the LightningModule that trains a backbone with an item embedding on CTR samples."""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch_geometric.data import Data
from torchmetrics.classification import BinaryAUROC

from resemb_pl.boundary import one_line, raised_in_package
from resemb_pl.checkpoint import check_compatible
from resemb_pl.data.catalogue import CHECKPOINT_KEY, Catalogue
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.protocols import Samples
from resemb_pl.errors import CheckpointError, ConfigError, require
from resemb_pl.factory import as_factory, describe
from resemb_pl.hparams import HPARAMS_METRICS, log_tensorboard_hparams, readable_hparams
from resemb_pl.metrics import GroupAUC, LogLoss
from resemb_pl.nn.embedding import ItemEmbedding, PlainEmbedding
from resemb_pl.nn.models import DIN, CTRBackbone
from resemb_pl.optim import RowAdam, closure_loss

EmbeddingFactory = Callable[[int, int], ItemEmbedding]
BackboneFactory = Callable[[ItemEmbedding, int], CTRBackbone]


class _JointState(ChainMap):
    """The optimizers' states seen as one: a parameter's entry is read and written in the state
    of the optimizer that owns it."""

    def __init__(self, optimizers: tuple[torch.optim.Optimizer, ...]) -> None:
        super().__init__(*(o.state for o in optimizers))
        self.owner = {id(p): o.state for o in optimizers for g in o.param_groups
                      for p in g["params"]}

    def __getitem__(self, key):
        return self.owner[id(key)][key]

    def __setitem__(self, key, value) -> None:
        self.owner[id(key)][key] = value


class SparseDenseOptimizer(torch.optim.Optimizer):
    """One optimizer made of a sparse one (the embedding tables) and a dense one (the rest).

    Lightning sees a single optimizer, so automatic optimisation, learning-rate schedulers
    (``param_groups`` are both optimizers' groups) and checkpoints keep working.

    Args:
        sparse: Optimizer of the parameters with sparse gradients (e.g. ``SparseAdam``).
        dense: Optimizer of the other parameters.
    """

    def __init__(self, sparse: torch.optim.Optimizer, dense: torch.optim.Optimizer) -> None:
        self.optimizers = (sparse, dense)
        super().__init__([p for o in self.optimizers for g in o.param_groups
                          for p in g["params"]], {})
        self._link()

    def _link(self) -> None:
        # Share the inner optimizers' groups and state (loading a state dict replaces them).
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
        self.state = _JointState(self.optimizers)

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = closure_loss(closure)
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def state_dict(self) -> dict:
        return {"sparse": self.optimizers[0].state_dict(), "dense": self.optimizers[1].state_dict()}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizers[0].load_state_dict(state_dict["sparse"])
        self.optimizers[1].load_state_dict(state_dict["dense"])
        self._link()


def check_optimizer(
    optimizer: Callable[..., torch.optim.Optimizer], lr_scheduler: Callable[..., object] | None
) -> None:
    """Build the optimizer and scheduler once on a probe parameter, to refuse bad values early.

    A value they refuse (a negative learning rate, betas outside ``[0, 1)``) then stops the run
    when the task is built, not when training starts.

    Raises:
        ConfigError: Naming ``model.optimizer`` or ``model.lr_scheduler`` and the reason.
    """
    key = "model.optimizer"
    try:
        probe = optimizer([nn.Parameter(torch.zeros(1))])
        if lr_scheduler is not None:
            key = "model.lr_scheduler"
            lr_scheduler(probe)
    except (ValueError, TypeError) as err:
        if isinstance(err, ConfigError) or raised_in_package(err):
            raise
        raise ConfigError(f"{key}: {one_line(err)}") from None


def check_sparse_strategy(sparse_embeddings: bool, world_size: int, backend: str | None,
                          rank: int = 0) -> None:
    """Refuse sparse embeddings where data-parallel training cannot reduce their gradients.

    NCCL, the backend of DDP on GPUs, has no all-reduce of sparse tensors, so the first
    backward of ``sparse_embeddings`` under it would fail inside DDP's reducer. Gloo (DDP on
    CPUs) reduces them. Called from :meth:`CTRTask.setup` before the model is wrapped; rank 0
    says why and the other ranks leave without repeating it.

    Args:
        sparse_embeddings: The task's ``sparse_embeddings``.
        world_size: Number of processes training together.
        backend: The process group's backend (``"nccl"``, ``"gloo"``) or ``None``.
        rank: This process's global rank.

    Raises:
        ConfigError: Naming ``model.sparse_embeddings``, on rank 0.
        SystemExit: With code 2, on the other ranks.
    """
    if not sparse_embeddings or world_size < 2 or backend is None or "nccl" not in backend:
        return
    if rank != 0:
        raise SystemExit(2)
    raise ConfigError(
        f"model.sparse_embeddings: NCCL (DDP on {world_size} GPUs) cannot all-reduce sparse "
        "gradients; set model.sparse_embeddings=false (dense gradients) or train on one device"
    )


class CTRTask(LightningModule):
    """Binary cross-entropy plus the embedding's regulariser, with AUC, GAUC and logloss.

    ``num_items`` and ``num_categories`` are linked from the data module by the CLI. The data
    reaches the model through one call, :meth:`attach` (made in :meth:`setup` from a
    :class:`~resemb_pl.data.datamodule.CTRDataModule`): the item interest graph is kept in the
    embedding's buffers and the :class:`~resemb_pl.data.catalogue.Catalogue` in one checkpoint
    entry, so a checkpoint alone is enough to score.

    Args:
        num_items: Number of items ``H``.
        num_categories: Number of categories ``C``.
        embedding_dim: Size of the item and category embeddings (paper: 18).
        embedding: Factory ``(num_items, embedding_dim) -> ItemEmbedding``.
        backbone: Factory ``(embedding, num_categories) -> CTRBackbone`` returning logits.
        optimizer: Optimizer factory.
        lr_scheduler: Optional scheduler factory (stepped per epoch).
        sparse_embeddings: Give the item tables sparse gradients and update them with
            :class:`resemb_pl.optim.RowAdam` (SparseAdam's update, on the touched rows only; lr,
            betas and eps taken from ``optimizer``; no weight decay), so a step touches only
            the batch's rows; ``optimizer`` updates the rest.
            Needs batch-local propagation and ``l2_mode="batch"``.
        fused_sparse_step: With ``sparse_embeddings``, compile the row loops of the sparse step
            with :func:`torch.compile`: RowAdam's row update (``RowAdam(fused=True)``, fused
            loops over the touched rows) and res-embedding's backward scatter into its basis rows
            (:func:`resemb_pl.nn.conv.spmm.compiled_scatter`). About half the optimizer time
            and a fifth of the scatter's on a CPU, after a first step that compiles (tens of
            seconds, once per process).

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
        sparse_embeddings: bool = False,
        fused_sparse_step: bool = False,
    ) -> None:
        require("model.num_items", num_items, 1)
        require("model.num_categories", num_categories, 0)
        require("model.embedding_dim", embedding_dim, 1)
        super().__init__()
        self.save_hyperparameters()
        # Keep only plain data in the hyperparameters, so checkpoints load with weights_only.
        for key in ("embedding", "backbone", "optimizer", "lr_scheduler"):
            self.hparams[key] = describe(self.hparams[key])
        self.optimizer, self.lr_scheduler = as_factory(optimizer), as_factory(lr_scheduler)
        check_optimizer(self.optimizer, self.lr_scheduler)
        self.model = as_factory(backbone)(
            as_factory(embedding)(num_items, embedding_dim), num_categories
        )
        if fused_sparse_step and not sparse_embeddings:
            raise ConfigError("fused_sparse_step: fuses the step of sparse embeddings; set "
                              "sparse_embeddings=true too")
        if sparse_embeddings:
            self.embedding.use_sparse_gradients(fused=fused_sparse_step)
        self.metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict(
                    {"auc": BinaryAUROC(), "gauc": GroupAUC(), "logloss": LogLoss()}
                )
                for stage in ("val", "test")
            }
        )
        # What requests with original ids need: set by attach() and saved in the checkpoint.
        self.catalogue: Catalogue | None = None

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
        if self.hparams.get("sparse_embeddings", False):
            sparse = [m.weight for m in self.model.modules()
                      if isinstance(m, nn.Embedding) and m.sparse]
            ids = {id(p) for p in sparse}
            dense = self.optimizer([p for p in self.parameters() if id(p) not in ids])
            keys = ("lr", "betas", "eps")
            optimizer = SparseDenseOptimizer(
                RowAdam(sparse, **{k: dense.defaults[k] for k in keys if k in dense.defaults},
                        fused=self.hparams.get("fused_sparse_step", False)),
                dense,
            )
        else:
            optimizer = self.optimizer(self.parameters())
        if self.lr_scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.lr_scheduler(optimizer)}

    def setup(self, stage: str) -> None:
        if stage == "fit" and self._trainer is not None:
            trainer = self._trainer
            check_sparse_strategy(self.hparams.get("sparse_embeddings", False), trainer.world_size,
                                  getattr(trainer.strategy, "process_group_backend", None),
                                  trainer.global_rank)
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        if isinstance(datamodule, CTRDataModule):
            train = datamodule.samples("train") if stage == "fit" else None
            self.attach(datamodule.catalogue, datamodule.graph, train)
        if stage in ("fit", "test") and self._trainer is not None:
            self._log_readable_hparams()

    def attach(
        self, catalogue: Catalogue, graph: Data | None = None, train: Samples | None = None
    ) -> None:
        """Hand the data to the model: the catalogue, and the graph and counts it trains with.

        Args:
            catalogue: Counts, item -> category and original ids; saved in the checkpoint.
            graph: The item interest graph, kept in the embedding's buffers (an embedding
                without a graph ignores it).
            train: The training samples, whose item occurrences an embedding may weight its
                regulariser with (``l2_mode="mba"``).

        Raises:
            CheckpointError: The catalogue's item count is not the model's ``num_items``.
        """
        n = self.hparams.num_items
        if catalogue.num_items != n:
            raise CheckpointError(
                f"the data has {catalogue.num_items} items but the model has num_items={n}"
            )
        self.catalogue = catalogue
        if graph is not None and hasattr(self.embedding, "set_graph"):
            self.embedding.set_graph(graph)
        if train is not None and hasattr(self.embedding, "set_item_counts"):
            self.embedding.set_item_counts(train)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.catalogue is not None:
            checkpoint[CHECKPOINT_KEY] = self.catalogue.to_checkpoint()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Check the checkpoint against this model and data; take its catalogue.

        A checkpoint of version 1 (vocabularies in ``resemb_vocab``, the item -> category table
        as the buffer ``item_category``) is converted: its buffer leaves the weights.
        """
        source = (self._trainer and self._trainer.ckpt_path) or "checkpoint"
        catalogue = None
        if CHECKPOINT_KEY in checkpoint:
            catalogue = Catalogue.from_checkpoint(checkpoint, str(source))
        (checkpoint.get("state_dict") or {}).pop("item_category", None)
        ours = None if self.catalogue is None else [str(v) for v in self.catalogue.item_vocab]
        check_compatible(checkpoint, self, ours, source)
        if catalogue is not None:
            self.catalogue = catalogue

    def _log_readable_hparams(self) -> None:
        """Send :func:`readable_hparams` to each logger once, with :data:`HPARAMS_METRICS`.

        Called from :meth:`setup` of ``fit`` and ``test`` (a ``resemb-pl test`` is a run of its
        own), before Lightning would log hyperparameters.

        TensorBoard's HPARAMS tab then shows one row per run: these flat keys and the last
        value of each metric in the run. Lightning's own logging of the raw, nested
        hyperparameters of the task and the data module (with internals like
        ``_instantiator``, which the tab cannot show) is turned off for the run: with two sets
        of hyperparameters in one run, the tab would show either.
        """
        trainer = self.trainer
        trainer.enable_autolog_hparams = False
        done = self.__dict__.setdefault("_hparams_logged_to", set())
        data = getattr(getattr(trainer, "datamodule", None), "hparams", None)
        params = readable_hparams(self.hparams, data)
        for logger in trainer.loggers:
            if id(logger) in done:
                continue
            done.add(id(logger))
            if isinstance(logger, TensorBoardLogger):
                log_tensorboard_hparams(logger, params, HPARAMS_METRICS)
            else:
                logger.log_hyperparams(params)

    def _evaluate(self, stage: str, batch: dict[str, Tensor]) -> None:
        logits = self(batch)
        label = batch["label"]
        metrics = self.metrics[stage]
        metrics["auc"].update(logits, label.long())
        metrics["gauc"].update(logits, label, batch["user"])
        metrics["logloss"].update(logits, label)
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, prog_bar=name == "auc", batch_size=label.numel())


__all__ = ["HPARAMS_METRICS", "CTRTask", "SparseDenseOptimizer", "check_optimizer",
           "check_sparse_strategy", "readable_hparams"]
