import functools

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.graph import build_interest_graph
from resemb_pl.errors import ConfigError
from resemb_pl.nn.conv import GCNNormConv
from resemb_pl.nn.embedding import PlainEmbedding, ResEmbedding
from resemb_pl.task import CTRTask, SparseDenseOptimizer

NUM_ITEMS = 50


def _task(embedding, sparse: bool) -> CTRTask:
    torch.manual_seed(0)
    task = CTRTask(NUM_ITEMS, 4, embedding_dim=6, embedding=embedding, sparse_embeddings=sparse,
                   optimizer=functools.partial(torch.optim.Adam, lr=0.01, eps=1e-12))
    if isinstance(task.embedding, ResEmbedding):
        items = torch.randint(1, NUM_ITEMS + 1, (400,), generator=torch.Generator().manual_seed(1))
        task.embedding.set_graph(build_interest_graph(items.numpy(), [400], NUM_ITEMS, 2, 3))
        with torch.no_grad():  # a non-zero residual, so its update is visible too
            task.embedding.residual.weight[1:].normal_(std=0.1)
    return task


def _batch() -> dict[str, torch.Tensor]:
    return {
        "hist": torch.tensor([[3, 4, 0], [5, 3, 7]]),
        "hist_cat": torch.tensor([[1, 2, 0], [1, 1, 3]]),
        "target": torch.tensor([8, 9]),
        "target_cat": torch.tensor([2, 4]),
        "label": torch.tensor([1.0, 0.0]),
        "user": torch.tensor([0, 1]),
    }


def _step(task: CTRTask) -> None:
    optimizer = task.configure_optimizers()
    batch = _batch()

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(task(batch), batch["label"])
        ids = torch.cat([batch["target"].unsqueeze(1), batch["hist"]], 1)
        loss = loss + task.embedding.regularization(ids)
        loss.backward()
        return loss

    optimizer.step(closure)


@pytest.mark.parametrize(
    ("embedding", "tables"),
    [(PlainEmbedding, ["table"]),
     (functools.partial(ResEmbedding, conv=GCNNormConv), ["basis", "residual"])],
)
def test_sparse_step_touches_only_batch_rows_and_equals_adam(embedding, tables):
    dense, sparse = _task(embedding, False), _task(embedding, True)
    assert isinstance(sparse.configure_optimizers(), SparseDenseOptimizer)
    before = {name: getattr(sparse.embedding, name).weight.detach().clone() for name in tables}
    _step(dense)
    _step(sparse)
    for name in tables:
        after = getattr(sparse.embedding, name).weight.detach()
        changed = (after != before[name]).any(1)
        grad = getattr(sparse.embedding, name).weight.grad
        assert grad.is_sparse
        touched = torch.zeros_like(changed)
        touched[grad.coalesce().indices()[0]] = True
        assert changed.any()
        assert not changed[~touched].any()  # rows outside the batch's reach stay as they were
        assert not changed[0]  # padding stays zero
        # The first Adam step equals the lazy (sparse) step on the touched rows (SparseAdam scales
        # eps by the bias correction, hence the tiny eps).
        ref = getattr(dense.embedding, name).weight.detach()
        assert torch.allclose(after[touched], ref[touched], atol=1e-6)
    # The dense part (backbone) follows the injected optimizer exactly.
    for (n, p), (_, q) in zip(sparse.model.mlp.named_parameters(),
                              dense.model.mlp.named_parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-6), n


def test_sparse_optimizer_state_roundtrip_and_scheduler():
    task = _task(functools.partial(ResEmbedding, conv=GCNNormConv), True)
    _step(task)
    optimizer = task.configure_optimizers()
    optimizer.load_state_dict(task.configure_optimizers().state_dict())
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.5)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for o in optimizer.optimizers for g in o.param_groups] == [0.005, 0.005]
    assert optimizer.state_dict().keys() == {"sparse", "dense"}


def test_sparse_refused_where_a_whole_table_is_read():
    with pytest.raises(ConfigError, match="l2_mode='table' reads every row"):
        CTRTask(10, 2, embedding=functools.partial(PlainEmbedding, l2_mode="table"),
                sparse_embeddings=True)
    with pytest.raises(ConfigError, match="need batch-local propagation, but propagation='full'"):
        CTRTask(10, 2, embedding=functools.partial(ResEmbedding, propagation="full"),
                sparse_embeddings=True)
    with pytest.raises(ConfigError, match="fused_sparse_step: .* set sparse_embeddings=true"):
        CTRTask(10, 2, fused_sparse_step=True)


def test_sparse_fit_with_trainer(tmp_path):
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"), batch_size=32)
    task = CTRTask(dm.num_items, dm.num_categories, embedding_dim=6, sparse_embeddings=True,
                   embedding=functools.partial(ResEmbedding, conv=GCNNormConv, propagation="auto"),
                   fused_sparse_step=True)
    trainer = Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=2, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path)
    basis = task.embedding.basis.weight.detach().clone()
    trainer.fit(task, dm)
    assert (task.embedding.basis.weight != basis).any()
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)["optimizer_states"][0]
    assert state.keys() == {"sparse", "dense"}
    assert task.optimizers().optimizer.optimizers[0].fused
