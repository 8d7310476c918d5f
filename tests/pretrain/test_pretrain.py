import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from resemb_pl.data.protocols import Samples
from resemb_pl.nn import PlainEmbedding
from resemb_pl.pretrain import context_pairs, random_walks, window_pairs
from resemb_pl.pretrain.__main__ import main


def test_context_pairs_are_the_window_pairs_of_the_training_sequence():
    # One user, sequence 1 2 3 4: positives (1->2), (1 2->3), (1 2 3->4) and one negative.
    samples = Samples(seq=np.array([1, 2, 3, 4]), hist_start=np.array([0, 0, 0, 0]),
                      hist_len=np.array([1, 2, 3, 3]), target=np.array([2, 3, 4, 9]),
                      label=np.array([1.0, 1.0, 1.0, 0.0]), user=np.zeros(4, dtype=np.int64))
    pairs = {tuple(p) for p in context_pairs(samples, window=2)}
    expected = {(2, 1), (3, 2), (3, 1), (4, 3), (4, 2)}
    assert pairs == expected | {(b, a) for a, b in expected}
    walks = np.array([[1, 2, 3, -1]])
    assert {tuple(p) for p in window_pairs(walks, 1)} == {(1, 2), (2, 1), (2, 3), (3, 2)}


def test_random_walks_follow_edges_and_p_controls_returns():
    # A path 1-2-3-4 (both directions) and an isolated node 5.
    src = torch.tensor([1, 2, 2, 3, 3, 4])
    dst = torch.tensor([2, 1, 3, 2, 4, 3])
    data = Data(edge_index=torch.stack([src, dst]), num_nodes=6)
    gen = torch.Generator().manual_seed(0)
    walks = random_walks(data, 6, 50, p=1e-3, q=1.0, generator=gen)
    assert walks.shape == (4 * 50, 6)
    edges = set(zip(src.tolist(), dst.tolist(), strict=True))
    steps = list(zip(walks[:, :-1].reshape(-1).tolist(), walks[:, 1:].reshape(-1).tolist(),
                     strict=True))
    assert all((b, a) in edges for a, b in steps)
    returns = (walks[:, 2] == walks[:, 0]).float().mean()
    assert returns > 0.95  # 1/p = 1000 makes going back almost certain
    away = random_walks(data, 6, 50, p=1e3, q=1e-3, generator=gen)
    start_mid = (away[:, 0] == 2) & (away[:, 1] == 3)  # from 3, away from 2 means 4
    assert (away[start_mid, 2] == 4).all()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.mark.parametrize("method", ["skipgram", "node2vec", "sms"])
def test_pretrain_command_trains_and_initialises_the_plain_embedding(method, tmp_path, capsys,
                                                                     cache):
    out = tmp_path / f"{method}.npy"
    main([method, "--data.preset", "tiny", "--data.cache_dir", cache,
          "--out", str(out), "--embedding_dim", "8", "--epochs", "4", "--lr", "0.05",
          *(["--walks_per_node", "2", "--walk_length", "8"] if method == "node2vec" else [])])
    report = capsys.readouterr().out
    losses = [float(x) for x in report.split("loss ")[1].split(";")[0].split(" -> ")]
    assert len(losses) == 4
    assert losses[-1] < losses[0]
    table = np.load(out, allow_pickle=False)
    assert table.shape == (401, 8)
    assert not table[0].any()
    emb = PlainEmbedding(400, 8, pretrained=str(out))
    assert torch.equal(emb.table.weight.detach(), torch.from_numpy(table))


def test_pretrain_command_rejects_a_non_npy_output(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["skipgram", "--data.preset", "tiny", "--data.cache_dir", str(tmp_path),
              "--out", str(tmp_path / "emb.pt"), "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "--out" in capsys.readouterr().err
