import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import CheckpointError, DataError
from resemb_pl.export import ItemTable, PortableCTR, export_model, item_table, load_task, nearest
from resemb_pl.export import main as export_main
from resemb_pl.nn.embedding import PlainEmbedding
from resemb_pl.task import CTRTask

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


@pytest.fixture(scope="module")
def trained(quickstart_checkpoint):
    q = quickstart_checkpoint
    return q.ckpt, CTRDataModule(preset="tiny", cache_dir=q.cache)


def test_exported_table_equals_model(trained, capsys, tmp_path):
    ckpt, dm = trained
    out = tmp_path / "export"
    export_main(["embeddings", f"--ckpt_path={ckpt}", f"--out={out}"])
    assert "wrote 400 items" in capsys.readouterr().out
    table = ItemTable.load(out)
    task = load_task(ckpt)

    ids = torch.arange(1, task.embedding.num_items + 1)
    with torch.no_grad():
        model_rows = task.embedding(ids).numpy()  # batch-local propagation in the model
        central = task.embedding.central_table()[1:].numpy()
    np.testing.assert_allclose(table.embedding, model_rows, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table.central, central, rtol=0, atol=1e-7)
    np.testing.assert_allclose(table.central + table.residual, table.embedding, atol=1e-7)
    assert np.abs(table.residual).max() > 0
    assert np.abs(table.central).max() > 0

    assert table.item_id.tolist() == dm.catalogue.item_vocab.tolist()
    names = dm.catalogue.category_vocab[dm.item_category[1:] - 1]
    assert table.category.tolist() == names.tolist()
    frame = pd.read_parquet(out / "items.parquet")
    assert list(frame.columns) == ["item_id", "category", "embedding", "central", "residual"]
    np.testing.assert_array_equal(np.stack(frame["embedding"]), table.embedding)
    config = (out / "projector" / "projector_config.pbtxt").read_text()
    assert "item_embedding" in config
    assert "metadata_path" in config
    metadata = next((out / "projector").rglob("metadata.tsv")).read_text().splitlines()
    assert metadata[0] == "item_id\tcategory"
    assert len(metadata) == 401
    assert metadata[1] == f"{table.item_id[0]}\t{table.category[0]}"


def test_nearest_by_cosine(tmp_path, capsys):
    e = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]], dtype=np.float32)
    table = ItemTable(np.array(["a", "b", "c", "d"]), np.array(["x", "x", "y", ""]), e,
                      np.zeros_like(e), e)
    result = nearest(table, "a", k=2)
    assert result["item_id"].tolist() == ["b", "c"]
    np.testing.assert_allclose(result["cosine"], [0.9 / np.hypot(0.9, 0.1), 0.0], atol=1e-6)
    assert nearest(table, "a", k=10)["item_id"].tolist() == ["b", "c", "d"]
    with pytest.raises(DataError, match="item_id 'zz': not in the model's vocabulary"):
        nearest(table, "zz")

    table.save(tmp_path, projector_items=0)
    export_main(["nearest", f"--source={tmp_path}", "--item_id", "d", "--k=1"])
    item, category, cosine = capsys.readouterr().out.splitlines()[-1].split()
    assert (item, category) == ("c", "y")
    assert float(cosine) == pytest.approx(0.0, abs=1e-6)


def test_nearest_from_checkpoint(trained):
    ckpt, dm = trained
    first = dm.catalogue.item_vocab[0]
    result = nearest(ckpt, first, k=3)
    assert len(result) == 3
    assert first not in result["item_id"].tolist()
    assert result["cosine"].is_monotonic_decreasing


def test_portable_model_equals_lightning(trained, tmp_path):
    ckpt, dm = trained
    task = load_task(ckpt)
    files = export_model(task, tmp_path, onnx=False)
    assert [f.name for f in files] == ["model.pt2"]
    program = torch.export.load(tmp_path / "model.pt2").module()
    dm.setup("test")
    small = dm.datasets["test"].__getitems__(list(range(7)))
    for batch in [next(iter(dm.test_dataloader())), small]:
        with torch.no_grad():
            expected = task.predict_step(batch, 0)
        got = program(batch["hist"], batch["target"])
        assert got.shape == expected.shape
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("onnxscript") is None,
                    reason="the ONNX exporter needs onnxscript")
def test_onnx_export(trained, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    task = load_task(trained[0])
    files = export_model(task, tmp_path)
    assert files[-1].name == "model.onnx"
    hist, target = torch.tensor([[1, 2, 3, 0]]), torch.tensor([5])
    session = onnxruntime.InferenceSession(str(files[-1]))
    got = session.run(None, {"hist": hist.numpy(), "target": target.numpy()})[0]
    np.testing.assert_allclose(got, PortableCTR(task)(hist, target).detach().numpy(), atol=1e-6)


def test_plain_embedding_table_is_all_residual():
    task = CTRTask(num_items=3, num_categories=1, embedding_dim=4, embedding=PlainEmbedding)
    task.attach(Catalogue.from_vocabulary(["p", "q", "r"], [0, 1, 1, 0], ["cat"]))
    table = item_table(task.eval())
    np.testing.assert_array_equal(table.central, 0)
    np.testing.assert_allclose(table.residual, task.embedding.table.weight[1:].detach().numpy())
    assert table.category.tolist() == ["cat", "cat", ""]


def test_export_errors(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint file"):
        load_task(tmp_path / "missing.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        export_main(["nearest", f"--source={tmp_path}", "--item_id=a"])
    assert exit_info.value.code == 2
    assert "items.parquet: no such file" in capsys.readouterr().err


def _table(scale: float) -> ItemTable:
    e = np.arange(12, dtype=np.float32).reshape(4, 3) * scale
    return ItemTable(np.array(["a", "b", "c", "d"]), np.array(["x", "x", "y", ""]), e,
                     np.zeros_like(e), e)


def _contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_export_folder_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    out = tmp_path / "export"
    _table(1.0).save(out, projector_items=4)
    (out / "model.pt2").write_bytes(b"the model export's file")  # not the embeddings export's
    before = _contents(out)
    assert {"items.parquet", "embedding.npy", "model.pt2"} <= before.keys()
    assert any(name.startswith("projector/") for name in before)

    real, calls = np.save, []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "save", fail_on_second)
    with pytest.raises(OSError, match="No space left"):
        _table(2.0).save(out, projector_items=4)
    monkeypatch.undo()
    assert _contents(out) == before  # the earlier export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary folder
    np.testing.assert_array_equal(ItemTable.load(out).embedding, _table(1.0).embedding)

    _table(2.0).save(out, projector_items=0)
    after = _contents(out)
    np.testing.assert_array_equal(ItemTable.load(out).embedding, _table(2.0).embedding)
    assert after["model.pt2"] == b"the model export's file"  # kept
    assert not any(name.startswith("projector/") for name in after)  # stale, so gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_projector_config_survives_the_move(tmp_path):
    _table(1.0).save(tmp_path / "export", projector_items=4)
    config = (tmp_path / "export" / "projector" / "projector_config.pbtxt").read_text()
    assert str(tmp_path) not in config  # relative paths: still right after the rename


def test_model_export_keeps_the_embeddings_and_replaces_its_files(trained, tmp_path,
                                                                   monkeypatch):
    task = load_task(trained[0])
    out = tmp_path / "export"
    _table(1.0).save(out, projector_items=0)
    (out / "model.onnx").write_bytes(b"stale onnx from an earlier export")
    files = export_model(task, out, onnx=False)
    assert files == [out / "model.pt2"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["items.parquet", "embedding.npy", "central.npy", "residual.npy", "model.pt2"])
    before = _contents(out)

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.export, "save", fail)
    with pytest.raises(OSError, match="No space left"):
        export_model(task, out, onnx=False)
    assert _contents(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
