"""Lightning callbacks that watch the item embedding and the loss curves during training.

- :class:`EmbeddingMonitor` logs the envelope radius metrics of Theorem 1 (``val/r_max``,
  ``val/r_ratio``) and, for a res-embedding, the measured residual-to-central norm ratio
  (``val/res_ratio``) at every validation, and sends the item table to TensorBoard's embedding
  projector with category labels.
- :class:`LossCurves` records the training and validation loss at every validation, on the
  same step scale, for the overfitting curves of Fig. 5.
- :class:`ProvenanceSaveConfig` saves a CLI run's ``config.yaml`` (atomically) with the version
  and git commit of the code on its first line.

With a TensorBoard logger, both monitors also draw their figure when fitting ends
(``add_figure``, the IMAGES tab): the domain radii of Theorem 1 and the loss curves of Fig. 5.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from resemb_pl.atomic import atomic_open
from resemb_pl.metrics import envelope_radius
from resemb_pl.nn.embedding import ResEmbedding
from resemb_pl.provenance import provenance_line


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
        max_domains: Domains drawn in the radius figure sent when fitting ends (the most
            populous ones).

    Example::

        Trainer(callbacks=[EmbeddingMonitor(projector_items=1000)])
    """

    def __init__(
        self,
        radius_items: int | None = None,
        projector_items: int = 1000,
        projector_every_n_epochs: int | None = None,
        max_domains: int = 30,
    ) -> None:
        super().__init__()
        self.radius_items = radius_items
        self.projector_items = projector_items
        self.projector_every_n_epochs = projector_every_n_epochs
        self.max_domains = max_domains

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
        self.send_radius_figure(trainer, pl_module)

    @torch.no_grad()
    def send_radius_figure(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Draw each domain's envelope radius against the radius of all items (Theorem 1).

        The ``max_domains`` most populous domains of the clicked items, as bars; lines mark the
        radius of all items and the mean domain radius. Sent as ``theorem1/domain_radius``.
        """
        logger, dm = trainer.logger, trainer.datamodule
        if not isinstance(logger, TensorBoardLogger) or dm is None or not trainer.is_global_zero:
            return
        items = top_items(dm, self.radius_items)
        domains = item_domains(dm)[items]
        known = domains >= 0
        if not known.any():
            return
        embedding = pl_module.embedding
        was_training = embedding.training
        embedding.eval()
        try:
            rows = torch.as_tensor(items[known], dtype=torch.long, device=embedding._device())
            table = embedding.item_table()[rows].double().cpu()
        finally:
            embedding.train(was_training)
        stats = embedding_stats(pl_module, dm, items)
        figure = radius_figure(table, domains[known], stats, self.max_domains,
                               title=f"Theorem 1: envelope radius per domain "
                                     f"({type(embedding).__name__}, step {trainer.global_step})")
        logger.experiment.add_figure("theorem1/domain_radius", figure,
                                     global_step=trainer.global_step, close=True)

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
        category_vocab, item_vocab = dm.catalogue.category_vocab, dm.catalogue.item_vocab
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
    number of optimizer steps taken. Set ``Trainer(val_check_interval=...)`` for several points
    per epoch.

    With a TensorBoard logger, the CUSTOM SCALARS tab gets one chart, ``loss/train vs
    validation``, of ``train/bce`` and ``val/logloss`` (Lightning logs both at the same step
    scale), and fitting ends with the figure ``fig5/loss_curves`` of :attr:`history`.

    Attributes:
        history: One dict per validation: ``step``, ``epoch``, ``train_loss``, ``val_loss``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self._sum, self._count = 0.0, 0

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero:
            trainer.logger.experiment.add_custom_scalars(
                {"loss": {"train vs validation": ["Multiline", ["^train/bce$", "^val/logloss$"]]}}
            )

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if isinstance(trainer.logger, TensorBoardLogger) and trainer.is_global_zero and self.history:
            trainer.logger.experiment.add_figure("fig5/loss_curves", loss_figure(self.history),
                                                 global_step=trainer.global_step, close=True)

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
        self.history.append({
            "step": trainer.global_step,
            "epoch": trainer.current_epoch,
            "train_loss": self._sum / self._count if self._count else float("nan"),
            "val_loss": val_loss,
        })
        self._sum, self._count = 0.0, 0


# -- figures ------------------------------------------------------------------------------------
def radius_figure(table: torch.Tensor, domains: np.ndarray, stats: dict[str, float],
                  max_domains: int = 30, title: str = "Theorem 1: envelope radius per domain"):
    """Bars of the envelope radius of each domain of ``table``'s rows, most populous first.

    Args:
        table: Embeddings of items with a known domain, ``(n, dim)``.
        domains: The domain of each row, ``(n,)``.
        stats: :func:`embedding_stats` of the items (``r_all``, ``r_mean``, ``res_ratio``).
        max_domains: Draw this many domains at most.
        title: The figure's title.

    Returns:
        A matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, counts = np.unique(domains, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:max_domains]
    radii = []
    for z in names[order]:
        rows = table[torch.as_tensor(domains == z)]
        radii.append(float((rows - rows.mean(0)).norm(dim=1).max()))
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(radii)), radii, color="C0", label="domain radius")
    ax.axhline(stats["r_all"], color="C3", linestyle="--", label="all items")
    ax.axhline(stats["r_mean"], color="C1", linestyle=":", label="mean domain radius")
    ax.set_xticks(range(len(radii)), [str(z) for z in names[order]], rotation=90, fontsize=7)
    ax.set_xlabel(f"domain ({len(radii)} of {len(names)}, most items first)")
    ax.set_ylabel("radius (largest distance from the domain mean)")
    text = f"r_ratio = {stats['r_ratio']:.3f}"
    if "res_ratio" in stats:
        text += f", ||R|| / ||W·Cb|| = {stats['res_ratio']:.3f}"
    ax.set_title(f"{title}\n{text}", fontsize=10)
    ax.set_ylim(0, 1.25 * max([stats["r_all"], *radii]))
    ax.legend(loc="upper right", fontsize=8, ncols=3)
    fig.tight_layout()
    return fig


def loss_figure(history: list[dict[str, float]]):
    """Train and validation loss of a :class:`LossCurves` history against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(step, [h["train_loss"] for h in history], "-o", label="train (cross-entropy)")
    ax.plot(step, [h["val_loss"] for h in history], "--o", label="validation (logloss)")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Fig. 5: train and validation loss")
    ax.legend()
    fig.tight_layout()
    return fig


# -- config.yaml ------------------------------------------------------------------------------
class ProvenanceSaveConfig(SaveConfigCallback):
    """Lightning's :class:`~lightning.pytorch.cli.SaveConfigCallback`, naming the code that ran.

    The run's ``config.yaml`` starts with a comment such as ``# resemb_pl 0.1.0, git
    dd92367...`` (:func:`resemb_pl.provenance.provenance_line`), so it still loads with
    ``--config``, and is written with :func:`~resemb_pl.atomic.atomic_open`. ``ResembCLI``
    uses it for every run.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved or self.multifile or not self.save_to_log_dir:
            super().setup(trainer, pl_module, stage)
            return
        log_dir = trainer.log_dir  # broadcasts the directory
        path = os.path.join(log_dir, self.config_filename)
        exists = os.path.isfile(path) if trainer.is_global_zero else False
        if trainer.strategy.broadcast(exists) and not self.overwrite:
            raise RuntimeError(
                f"{path} exists; set LightningCLI(save_config_kwargs={{'overwrite': True}}) or "
                "use another log folder"
            )
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            with atomic_open(path, "w") as fh:
                fh.write(f"# {provenance_line()}\n{text}")
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

