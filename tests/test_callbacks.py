from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar.layout_pb2 import Layout
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch_geometric.data import Data

from resemb_pl.callbacks import (
    EmbeddingMonitor,
    LossCurves,
    embedding_stats,
    item_domains,
    radius_figure,
    top_items,
)
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.protocols import Samples
from resemb_pl.experiments import model_spec
from resemb_pl.nn import PlainEmbedding, ResEmbedding
from resemb_pl.nn.conv import MeanConv
from resemb_pl.task import HPARAMS_METRICS, CTRTask, readable_hparams


def fake_datamodule(targets, labels, category, domain=None):
    n = len(targets)
    samples = Samples(np.zeros(1, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64),
                      np.asarray(targets), np.asarray(labels, np.float32), np.zeros(n, np.int64))
    return SimpleNamespace(samples=lambda stage: samples, num_items=len(category) - 1,
                           item_category=np.asarray(category), item_domain=domain)


def test_top_items_counts_clicks_only():
    dm = fake_datamodule([3, 3, 1, 2, 2, 2, 4], [1, 1, 1, 1, 1, 1, 0], [0, 1, 1, 2, 2])
    assert top_items(dm, 2).tolist() == [2, 3]  # sorted ids of the two most clicked
    assert top_items(dm, None).tolist() == [1, 2, 3]  # item 4 was only a negative


def test_item_domains_prefers_true_domain_and_drops_unknown_category():
    dm = fake_datamodule([1], [1], [0, 1, 0, 2])
    assert item_domains(dm).tolist() == [-1, 1, -1, 2]
    dm.item_domain = np.array([0, 5, 5, 6])
    assert item_domains(dm).tolist() == [0, 5, 5, 6]


def test_embedding_stats_hand_case():
    emb = PlainEmbedding(4, 2)
    with torch.no_grad():
        emb.table.weight[1:] = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0]])
    dm = fake_datamodule([1], [1], [0, 1, 1, 2, 2])
    stats = embedding_stats(SimpleNamespace(embedding=emb), dm, np.array([1, 2, 3, 4]))
    assert stats["r_max"] == pytest.approx(2.0)
    assert stats["r_mean"] == pytest.approx(1.5)
    r_all = np.linalg.norm(np.array([[0, 0], [2, 0], [10, 0], [10, 4]]) - [5.5, 1], axis=1).max()
    assert stats["r_ratio"] == pytest.approx(1.5 / r_all)
    assert "res_ratio" not in stats


def test_embedding_stats_res_ratio():
    emb = ResEmbedding(3, 2, conv=MeanConv)
    emb.set_graph(Data(edge_index=torch.tensor([[1, 2], [2, 1]]), num_nodes=4))
    with torch.no_grad():
        emb.basis.weight[1:] = torch.tensor([[3.0, 0.0], [0.0, 4.0], [1.0, 1.0]])
        emb.residual.weight[1:] = torch.tensor([[0.5, 0.0], [0.0, 0.0], [0.0, 0.0]])
    dm = fake_datamodule([1], [1], [0, 1, 1, 1])
    stats = embedding_stats(SimpleNamespace(embedding=emb), dm, np.array([1, 2]))
    # central(1) = basis(2) = (0, 4), central(2) = basis(1) = (3, 0): ||W·Cb|| = 5, ||R|| = 0.5
    assert stats["res_ratio"] == pytest.approx(0.1)
    assert emb.training  # restored


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    seed_everything(0)
    dm = CTRDataModule(preset="tiny", cache_dir=str(root / "cache"))
    task = CTRTask(dm.num_items, dm.num_categories, **model_spec("din", "att"))
    monitor, curves = EmbeddingMonitor(projector_items=50), LossCurves()
    logger = TensorBoardLogger(str(root), name="tb", version="")
    trainer = Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=2,
                      val_check_interval=0.5, logger=logger, callbacks=[monitor, curves],
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, log_every_n_steps=1, accelerator="cpu")
    trainer.fit(task, datamodule=dm)
    return SimpleNamespace(dm=dm, task=task, trainer=trainer, curves=curves,
                           log_dir=root / "tb")


def test_monitor_logs_radius_at_validation(fitted):
    metrics = fitted.trainer.callback_metrics
    expected = embedding_stats(fitted.task, fitted.dm, top_items(fitted.dm, None))
    for key in ("r_max", "r_ratio", "res_ratio"):
        assert float(metrics[f"val/{key}"]) == pytest.approx(expected[key], rel=1e-5)
    events = EventAccumulator(str(fitted.log_dir)).Reload()
    radius = events.Scalars("val/r_ratio")
    assert len(radius) == 2  # every validation, not the sanity check


def test_monitor_sends_projector_with_labels(fitted):
    config = (fitted.log_dir / "projector_config.pbtxt").read_text()
    assert "item_embedding" in config
    (metadata,) = fitted.log_dir.rglob("metadata.tsv")
    lines = metadata.read_text().splitlines()
    assert lines[0] == "item\tcategory\tdomain"
    assert len(lines) == 51
    (tensors,) = fitted.log_dir.rglob("tensors.tsv")
    assert len(tensors.read_text().splitlines()) == 50


def test_loss_curves_at_the_train_step_scale(fitted):
    history = fitted.curves.history
    assert [h["step"] for h in history] == [2, 4]
    assert history[-1]["val_loss"] == pytest.approx(float(fitted.trainer.callback_metrics[
        "val/logloss"]))
    assert all(0.5 < h["train_loss"] < 1.0 for h in history)
    events = EventAccumulator(str(fitted.log_dir), size_guidance={"tensors": 0}).Reload()
    assert "val/loss" not in events.Tags()["scalars"]  # val/logloss is the validation loss
    val_steps = [e.step for e in events.Scalars("val/logloss")]
    assert val_steps == [e.step for e in events.Scalars("train/bce")][1::2]  # after batch 2, 4
    # one CUSTOM SCALARS chart draws both losses on that step axis
    (config,) = events.Tensors("custom_scalars__config__")
    layout = Layout.FromString(config.tensor_proto.string_val[0])
    (category,) = layout.category
    (chart,) = category.chart
    assert (category.title, chart.title) == ("loss", "train vs validation")
    assert list(chart.multiline.tag) == ["^train/bce$", "^val/logloss$"]


def test_figures_go_to_tensorboard_when_fitting_ends(fitted):
    events = EventAccumulator(str(fitted.log_dir), size_guidance={"images": 0}).Reload()
    for tag in ("fig5/loss_curves", "theorem1/domain_radius"):
        (image,) = events.Images(tag)
        assert image.step == fitted.trainer.global_step
        assert image.encoded_image_string[:4] == b"\x89PNG"


def test_radius_figure_hand_case():
    table = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0], [10.0, 2.0]])
    domains = np.array([5, 5, 7, 7, 7])
    stats = {"r_all": 6.0, "r_mean": 1.5, "r_ratio": 0.25}
    figure = radius_figure(table, domains, stats)
    ax = figure.axes[0]
    # domain 7 (3 items) first: mean (10, 2), radius 2; domain 5: mean (1, 0), radius 1
    assert [bar.get_height() for bar in ax.patches] == pytest.approx([2.0, 1.0])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["7", "5"]
    assert [line.get_ydata()[0] for line in ax.get_lines()] == [6.0, 1.5]
    assert radius_figure(table, domains, stats, max_domains=1).axes[0].patches[0].get_height() \
        == pytest.approx(2.0)


def test_task_logs_readable_hparams_not_lightnings_raw_ones(fitted):
    events = EventAccumulator(str(fitted.log_dir)).Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == list(HPARAMS_METRICS)
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    expected = readable_hparams(fitted.task.hparams, fitted.dm.hparams)
    assert set(start.session_start_info.hparams) == set(expected)
    assert start.session_start_info.hparams["conv"].string_value == "DotAttentionConv"
    # The logger keeps Lightning's default_hp_metric=True: no placeholder was logged all the same.
    assert "hp_metric" not in events.Tags()["scalars"]
    saved = yaml.safe_load((fitted.log_dir / "hparams.yaml").read_text())
    assert saved.pop("seed") == 0  # seed_everything(0) of the fit (the test's env is reset)
    expected.pop("seed")
    assert saved == expected and "_instantiator" not in saved
