import numpy as np
import pytest

from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.errors import ConfigError


@pytest.fixture
def dm(tmp_path):
    d = CTRDataModule(preset="tiny", batch_size=16, cache_dir=str(tmp_path / "cache"))
    d.prepare_data()
    d.setup("fit")
    return d


def test_batches_pad_to_the_longest_history_in_the_batch(dm):
    ds = dm.datasets["train"]
    s = ds.samples
    short = np.flatnonzero(s.hist_len == 1)[:3].tolist()
    batch = ds.__getitems__(short)
    assert batch["hist"].shape == (3, 1)
    mixed = short[:1] + np.flatnonzero(s.hist_len == s.hist_len.max())[:1].tolist()
    batch = ds.__getitems__(mixed)
    assert batch["hist"].shape == (2, int(s.hist_len.max()))
    assert batch["hist"][0, 1:].eq(0).all()  # padding after the history
    assert batch["hist"][1].tolist() == s.history(mixed[1]).tolist()
    cat = dm.item_category
    assert batch["hist_cat"].tolist() == cat[batch["hist"].numpy()].tolist()
    assert batch["target_cat"].tolist() == cat[batch["target"].numpy()].tolist()


def test_loaders_and_links(dm):
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"hist", "hist_cat", "target", "target_cat", "label", "user"}
    assert batch["label"].shape == (16,)
    assert dm.num_items == 400
    assert dm.graph.num_nodes == 401
    assert dm.item_domain is not None


def test_cache_is_reused_and_rebuilt_when_parameters_change(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a = CTRDataModule(preset="tiny", cache_dir=str(cache))
    a.prepare_data()
    folders = [p for p in cache.iterdir() if p.is_dir()]
    assert len(folders) == 1
    calls = []
    monkeypatch.setattr(CTRDataModule, "process", lambda self: calls.append(1) or {})
    b = CTRDataModule(preset="tiny", cache_dir=str(cache))
    b.prepare_data()  # same parameters: read from the cache, no processing
    assert calls == []
    assert b.num_items == a.num_items
    monkeypatch.undo()
    c = CTRDataModule(preset="tiny", top_k=4, cache_dir=str(cache))
    c.prepare_data()
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 2
    assert not list(cache.glob("*.tmp"))


def test_cache_follows_file_contents(tmp_path):
    import pandas as pd

    path = tmp_path / "events.csv"
    rows = [(u, i, 1, t) for u in range(30) for t, i in enumerate(np.arange(5) + u % 7 + 1)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "timestamp"]).to_csv(path)
    dm = CTRDataModule(source="interactions", path=str(path), cache_dir=str(tmp_path / "c"))
    key = dm.fingerprint()
    assert CTRDataModule(source="interactions", path=str(path)).fingerprint() == key
    path.write_text(path.read_text().replace("\n1,", "\n2,", 1))
    assert dm.fingerprint() != key


def test_interactions_meta_path_replaces_categories(tmp_path):
    """``data.meta_path`` of ``interactions``: the item table's categories win; in the key."""
    import pandas as pd

    path = tmp_path / "events.csv"
    rows = [(u, i, 1, t) for u in range(30) for t, i in enumerate(np.arange(5) + u % 7 + 1)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "category_id", "timestamp"]).to_csv(path)
    items = tmp_path / "items.csv"
    pd.DataFrame({"item_id": np.arange(1, 12), "top": np.arange(1, 12) % 2}).to_csv(items)
    plain = CTRDataModule(source="interactions", path=str(path), cache_dir=str(tmp_path / "c"))
    plain.prepare_data()
    plain.setup("fit")
    assert plain.num_categories == 1
    dm = CTRDataModule(source="interactions", path=str(path), meta_path=str(items),
                       columns={"category_id": "top"}, cache_dir=str(tmp_path / "c"))
    assert dm.fingerprint() != plain.fingerprint()
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_categories == 2
    vocab = dm.catalogue.item_vocab
    cats = dm.catalogue.category_vocab[dm.item_category[1:] - 1].astype(int)
    assert (cats == vocab.astype(int) % 2).all()  # each item's own row of the table


def test_bad_arguments():
    with pytest.raises(ConfigError, match="data.path: required for source 'interactions'"):
        CTRDataModule(source="interactions")
    with pytest.raises(ConfigError, match="data.batch_size: must be >= 1"):
        CTRDataModule(batch_size=0)
    with pytest.raises(ConfigError, match="MovieLens protocol splits users"):
        CTRDataModule(source="interactions", path="x", protocol="movielens", split="last")


def test_movielens_config_on_real_data(shared_data, tmp_path):
    dm = CTRDataModule(source="interactions", path=str(shared_data / "movielens-100k"),
                       protocol="movielens", split="user", cache_dir=str(tmp_path))
    dm.setup("fit")
    assert dm.num_items == 1682
    total = sum(len(dm.datasets[k]) for k in ("train", "val", "test"))
    assert total == 100_000
