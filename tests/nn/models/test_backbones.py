from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.nn import GATConv, GATv2Conv, GCNConv, SAGEConv

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import CheckpointError
from resemb_pl.nn import PlainEmbedding, ResEmbedding
from resemb_pl.nn.conv import (
    DotAttentionConv,
    GATAdapterConv,
    GATv2AdapterConv,
    GCNAdapterConv,
    GCNNormConv,
    LGAdapterConv,
    MeanConv,
    SAGEAdapterConv,
)
from resemb_pl.nn.models import DIN, PNN, DeepFM, EmbeddingMLP, LogisticRegression, WideDeep, base
from resemb_pl.nn.models.wide_deep import cross_bucket
from resemb_pl.task import CTRTask

BACKBONES = [EmbeddingMLP, PNN, DIN, LogisticRegression, WideDeep, DeepFM]
EMBEDDINGS = {
    "plain": dict(class_path="resemb_pl.nn.PlainEmbedding"),
    "plain_l2": dict(class_path="resemb_pl.nn.PlainEmbedding",
                     init_args={"l2": 0.006, "l2_mode": "table"}),
    "plain_mba": dict(class_path="resemb_pl.nn.PlainEmbedding",
                      init_args={"l2": 0.006, "l2_mode": "mba"}),
    "avg": MeanConv, "gcn": GCNNormConv, "att": DotAttentionConv,
    "pretrained": "pretrained",
}
PYG_LAYERS = [GCNConv, GATConv, GATv2Conv, SAGEConv, GCNAdapterConv, GATAdapterConv,
              GATv2AdapterConv, SAGEAdapterConv, LGAdapterConv]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    dm = CTRDataModule(preset="tiny", batch_size=64, eval_batch_size=256,
                       cache_dir=str(tmp_path_factory.mktemp("cache")))
    dm.setup("fit")
    return dm


def _embedding(kind, tmp_path, dm):
    if kind == "pretrained":
        path = tmp_path / "emb.npy"
        np.save(path, np.random.default_rng(0).normal(size=(dm.num_items + 1, 8)).astype("f4"))
        return {"class_path": "resemb_pl.nn.PlainEmbedding", "init_args": {"pretrained": str(path)}}
    if isinstance(kind, dict):
        return kind
    return {"class_path": "resemb_pl.nn.ResEmbedding",
            "init_args": {"conv": {"class_path": f"{kind.__module__}.{kind.__name__}"}}}


def _train_and_validate(task, dm):
    """One optimizer step on a training batch, then one validation batch; return val AUC."""
    if hasattr(task.embedding, "set_graph"):
        task.embedding.set_graph(dm.graph)
    if hasattr(task.embedding, "set_item_counts"):
        task.embedding.set_item_counts(dm.samples("train"))
    optimizer = task.configure_optimizers()
    batch = next(iter(dm.train_dataloader()))
    before = [p.detach().clone() for p in task.parameters()]
    task.train()
    loss = task.training_step(batch, 0)
    assert torch.isfinite(loss)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, task.parameters(), strict=True))
    assert changed > 0
    task.eval()
    with torch.no_grad():
        task.validation_step(next(iter(dm.val_dataloader())), 0)
    auc = task.metrics["val"]["auc"].compute()
    assert 0.0 <= float(auc) <= 1.0
    return loss


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("kind", list(EMBEDDINGS), ids=list(EMBEDDINGS))
@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_every_backbone_with_every_embedding_trains_and_validates(backbone, kind, tiny, tmp_path):
    task = CTRTask(tiny.num_items, tiny.num_categories, embedding_dim=8,
                   embedding=_embedding(EMBEDDINGS[kind], tmp_path, tiny),
                   backbone={"class_path": f"{backbone.__module__}.{backbone.__name__}",
                             "init_args": {"hidden": [16]} if backbone is not LogisticRegression
                             else {}})
    _train_and_validate(task, tiny)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("layer", PYG_LAYERS, ids=lambda c: c.__name__)
def test_every_pyg_layer_trains_and_validates_in_res_embedding(layer, tiny):
    task = CTRTask(tiny.num_items, tiny.num_categories, embedding_dim=8,
                   embedding={"class_path": "resemb_pl.nn.ResEmbedding", "init_args": {
                       "conv": {"class_path": f"{layer.__module__}.{layer.__name__}"},
                       "num_layers": 2}},
                   backbone={"class_path": "resemb_pl.nn.models.DIN",
                             "init_args": {"hidden": [16], "attention_hidden": [8]}})
    assert len(task.embedding.convs) == 2
    _train_and_validate(task, tiny)


def _batch():
    hist = torch.tensor([[1, 2, 0], [3, 4, 5]])
    return hist, hist % 3, torch.tensor([6, 7]), torch.tensor([0, 1])


@pytest.mark.parametrize("backbone", BACKBONES, ids=lambda b: b.__name__)
def test_padding_does_not_change_the_logits(backbone):
    torch.manual_seed(0)
    model = backbone(PlainEmbedding(9, 4), 3).eval()
    hist, hist_cat, target, target_cat = _batch()
    padded = torch.cat([hist, torch.zeros(2, 2, dtype=torch.long)], 1)
    padded_cat = torch.cat([hist_cat, torch.zeros(2, 2, dtype=torch.long)], 1)
    out = model(hist, hist_cat, target, target_cat)
    assert out.shape == (2,)
    assert torch.allclose(model(padded, padded_cat, target, target_cat), out, atol=1e-6)


def test_logistic_regression_is_linear_in_the_bag_of_history():
    model = LogisticRegression(PlainEmbedding(9, 4), 3)
    target, target_cat = torch.tensor([6]), torch.tensor([0])
    h = lambda *ids: torch.tensor([list(ids)])  # noqa: E731
    both = model(h(1, 2), h(0, 0), target, target_cat)
    one, other = model(h(1), h(0), target, target_cat), model(h(2), h(0), target, target_cat)
    base = model(h(0), h(0), target, target_cat)
    assert torch.allclose(both - base, (one - base) + (other - base), atol=1e-6)


def test_deepfm_second_order_term_is_the_sum_of_field_inner_products():
    torch.manual_seed(0)
    model = DeepFM(PlainEmbedding(9, 3), 3)
    for layer in (model.linear, model.mlp[-1]):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
    hist, hist_cat, target, target_cat = _batch()
    h, t, mask = model.embed(hist, hist_cat, target, target_cat)
    fields = torch.cat([t, (h * mask.unsqueeze(-1)).sum(1)], -1).view(2, 4, 3)
    pairs = sum((fields[:, a] * fields[:, b]).sum(-1) for a in range(4) for b in range(a + 1, 4))
    assert torch.allclose(model(hist, hist_cat, target, target_cat), pairs, atol=1e-6)


def test_wide_deep_adds_the_weight_of_each_behaviour_candidate_cross():
    model = WideDeep(PlainEmbedding(9, 4), 3, num_buckets=1000)
    hist, hist_cat, target, target_cat = _batch()
    before = model(hist, hist_cat, target, target_cat)
    with torch.no_grad():  # the cross (history item 4, target 7) of the second sample only
        model.cross_item.weight[cross_bucket(torch.tensor(4), torch.tensor(7), 1000)] = 2.5
    delta = model(hist, hist_cat, target, target_cat) - before
    assert torch.allclose(delta, torch.tensor([0.0, 2.5]), atol=1e-6)


def test_pnn_product_widths_and_bad_product():
    emb = PlainEmbedding(9, 4)
    assert PNN(emb, 3, product="inner").mlp[0].in_features == 2 * 8 + 1
    assert PNN(emb, 3, product="outer").mlp[0].in_features == 2 * 8 + 64
    with pytest.raises(ValueError, match="choose inner, outer or both"):
        PNN(emb, 3, product="kronecker")


def test_mini_batch_aware_l2_weights_each_batch_item_by_its_frequency():
    emb = PlainEmbedding(4, 2, l2=0.5, l2_mode="mba")

    from resemb_pl.data.protocols import Samples

    # seq [1, 2, 3]; histories [1], [1, 2]; targets 2, 3
    samples = Samples(seq=np.array([1, 2, 3]), hist_start=np.array([0, 0]),
                      hist_len=np.array([1, 2]), target=np.array([2, 3]),
                      label=np.ones(2), user=np.zeros(2, dtype=np.int64))
    emb.set_item_counts(samples)
    assert emb.item_count.tolist() == [1, 2, 2, 1, 1]
    with torch.no_grad():
        emb.table.weight.copy_(torch.tensor([[0, 0], [1, 1], [2, 0], [0, 3], [5, 5.0]]))
    reg = emb.regularization(torch.tensor([[1, 2, 2, 0], [3, 1, 0, 0]]))
    assert torch.isclose(reg, torch.tensor(0.5 * (2 / 2 + 4 / 2 + 9 / 1)))


def test_plain_embedding_reads_pretrained_rows(tmp_path):
    table = np.arange(15, dtype=np.float32).reshape(5, 3)
    np.save(tmp_path / "emb.npy", table)
    emb = PlainEmbedding(4, 3, pretrained=str(tmp_path / "emb.npy"))
    assert torch.equal(emb.table.weight[1:], torch.from_numpy(table[1:]))
    assert emb.table.weight[0].abs().sum() == 0
    with pytest.raises(CheckpointError, match=r"shape \(5, 3\), the model needs \(6, 3\)"):
        PlainEmbedding(5, 3, pretrained=str(tmp_path / "emb.npy"))
    with pytest.raises(CheckpointError, match="cannot read a pretrained embedding"):
        PlainEmbedding(4, 3, pretrained=str(Path(tmp_path) / "missing.npy"))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=5), st.integers(0, 2**16),
       st.sampled_from(BACKBONES), st.booleans())
def test_packed_lookup_equals_the_padded_one(lengths, seed, backbone, res):
    # embed() looks up only the valid history positions when few are; the logits and every
    # gradient equal the lookup of every position (padding embeds to zero either way).
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    emb = PlainEmbedding(9, 3)
    if res:
        emb = ResEmbedding(9, 3, conv=DotAttentionConv)
        edge_index = torch.randint(1, 10, (2, 20), generator=gen)
        emb.set_graph(Data(edge_index=edge_index, num_nodes=10))
        torch.nn.init.normal_(emb.residual.weight, std=0.1)
        with torch.no_grad():
            emb.residual.weight[0].zero_()
    model = backbone(emb, 3).double()
    width = max(lengths) + 1
    hist = torch.randint(1, 10, (len(lengths), width), generator=gen)
    hist[torch.arange(width)[None, :] >= torch.tensor(lengths)[:, None]] = 0
    target = torch.randint(1, 10, (len(lengths),), generator=gen)
    hist_cat, target_cat = hist % 4, target % 4
    results, default = [], base.PACK_BELOW
    try:
        for pack in (0.0, 1.01):  # never / always packed
            base.PACK_BELOW = pack
            model.zero_grad()
            out = model(hist, hist_cat, target, target_cat)
            (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype)).sum().backward()
            results.append([out.detach()] + [torch.zeros_like(p) if p.grad is None
                                             else p.grad.clone() for p in model.parameters()])
    finally:
        base.PACK_BELOW = default
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(b, a, atol=1e-9, rtol=1e-7)
