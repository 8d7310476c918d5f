"""The workload helpers behind scripts/benchmark.py's scaling lines."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    # The script sets THP_MEM_ALLOC_ENABLE for its own process; keep this one's environment.
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", os.environ.get("THP_MEM_ALLOC_ENABLE", "0"))
    spec = importlib.util.spec_from_file_location("script_benchmark",
                                                  ROOT / "scripts" / "benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _batch(target, hist):
    return {"target": torch.tensor(target), "hist": torch.tensor(hist)}


def test_rows_touched_counts_distinct_items_and_their_in_neighbours(bench):
    # Edges j -> i: 2 -> 1, 3 -> 1, 4 -> 2, 5 -> 6, and 1 -> 5 (5 is never a batch item).
    graph = Data(edge_index=torch.tensor([[2, 3, 4, 5, 1], [1, 1, 2, 6, 5]]), num_nodes=7)
    batches = [_batch([1, 2], [[2, 0], [1, 1]]),  # items {1, 2}; subgraph {1, 2, 3, 4}
               _batch([6], [[0, 0]])]             # items {6}; subgraph {5, 6}
    assert bench.rows_touched(batches, graph) == (1.5, 3.0)


def test_extend_graph_keeps_the_old_items_edges_and_adds_k_per_new_item(bench):
    rng = np.random.default_rng(0)
    graph = bench.random_graph(50, rng, k=8, popularity=bench.ZipfItems(50, rng))
    grown = bench.extend_graph(graph, 80, rng, popular=True)
    assert grown.num_nodes == 81
    old = graph.edge_index.size(1)
    assert old == 50 * 8
    assert torch.equal(grown.edge_index[:, :old], graph.edge_index)
    assert torch.equal(grown.edge_weight[:old], graph.edge_weight)
    source, target = grown.edge_index[:, old:]
    assert torch.equal(torch.bincount(target, minlength=81)[51:], torch.full((30,), 8))
    assert int(source.min()) >= 1
    assert int(source.max()) <= 80
    assert not bool((source == target).any())  # no self-loops
    # The old items' one-hop subgraphs are the same in both graphs.
    batch = [_batch([3, 17], [[5, 0], [49, 50]])]
    assert bench.rows_touched(batch, grown) == bench.rows_touched(batch, graph)


def test_benchmark_times_the_registry_res_embeddings(bench):
    # The benchmark's AVG/GCN/ATT are the registry's avg/gcn/att, as the experiments train them.
    from resemb_pl.experiments import embedding_spec

    assert list(bench.CONVS) == ["AVG", "GCN", "ATT"]
    for name, conv in bench.CONVS.items():
        spec = embedding_spec(name.lower())["init_args"]["conv"]["class_path"]
        assert spec == f"resemb_pl.nn.conv.{conv.__name__}"
    task = bench.make_task(20, "GCN", torch.device("cpu"), fused=False)
    assert [type(m).__name__ for m in task.modules() if "Conv" in type(m).__name__] == [
        "GCNNormConv"]


def test_end_to_end_mode_tables_plain_gcn_and_att(bench, tmp_path, capsys):
    from resemb_pl.data.datamodule import CTRDataModule

    out = tmp_path / "reports" / "end_to_end.txt"
    argv = ["--end-to-end", "--data", "tiny", "--steps", "2", "--warmup", "1", "--repeats", "1",
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    bench.main(argv)
    printed = capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("$ python scripts/benchmark.py --end-to-end --data tiny")
    lines = text.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("data ")))
    assert lines[header].split() == ["data", "items", "train", "batch", "plain", "/s", "GCN",
                                     "/s", "GCN/plain", "ATT", "/s", "ATT/plain"]
    rows = lines[header + 1:lines.index("", header)]
    assert len(rows) == 1
    assert rows[0] in printed
    cells = rows[0].split()
    assert cells[:2] == ["tiny", "preset"]
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert cells[2:5] == [f"{dm.num_items:,}", f"{len(dm.datasets['train']):,}", "128"]
    plain, gcn, gcn_ratio, att, att_ratio = map(float, cells[5:])
    assert min(plain, gcn, att) > 0
    # One round: each ratio is plain's samples/s over the res-embedding's.
    assert gcn_ratio == pytest.approx(plain / gcn, rel=0.02, abs=0.01)
    assert att_ratio == pytest.approx(plain / att, rel=0.02, abs=0.01)
    # Each round's ratios below the table (one round: the medians themselves).
    rounds = lines[lines.index("res/plain of each round:") + 1:]
    assert rounds == [f"{'tiny preset':<42} GCN {gcn_ratio:.2f}   ATT {att_ratio:.2f}"]


def test_propagation_mode_compares_full_and_local_per_layer(bench, tmp_path, capsys):
    out = tmp_path / "propagation.txt"
    bench.main(["--propagation", "--data", "tiny", "--steps", "2", "--warmup", "1",
                "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("$ python scripts/benchmark.py --propagation --data tiny")
    rows = [line.split() for line in text.splitlines() if line.startswith("tiny preset")]
    assert [r[2] for r in rows] == ["MeanConv", "GCNNormConv", "DotAttentionConv"]
    for cells in rows:
        share, full, local, ratio, even = map(float, cells[-5:])
        assert 0 < share <= 1
        assert min(full, local) > 0
        # The columns are rounded to 0.01 ms, the ratio is of the unrounded times.
        assert ratio == pytest.approx(local / full, rel=0.05, abs=0.02)
        # Local costs linearly in its edges: it breaks even at share * full / local.
        assert even == pytest.approx(share / ratio, rel=0.05, abs=0.02)
    assert rows[0][0] + " " + rows[0][1] in capsys.readouterr().out


def test_end_to_end_meter_counts_the_batches_after_the_warm_up(bench):
    meter = bench.ThroughputMeter()
    meter.ends, meter.sizes = [1.0, 2.0, 4.0, 5.0], [10, 20, 30, 40]
    assert meter.samples_per_second(2) == pytest.approx((30 + 40) / (5.0 - 2.0))
    assert meter.samples_per_second(0) == pytest.approx((20 + 30 + 40) / (5.0 - 1.0))
    from resemb_pl.errors import ResembError

    with pytest.raises(ResembError, match="only 4 training batches ran"):
        meter.samples_per_second(4)


@pytest.mark.parametrize("name", ["sports", "beauty"])
def test_end_to_end_real_data_sets_read_shared_data_or_fall_back_to_the_small_preset(
        bench, name, tmp_path, monkeypatch):
    label, config, folder = bench.E2E_REAL[name]
    monkeypatch.setattr(bench, "SHARED_DATA", tmp_path)
    fallback, args = bench.e2e_data_args(name)
    assert fallback == f"small preset (no ../shared/data {label})"
    assert args == ["--data.source=synthetic", "--data.preset=small"]
    (tmp_path / folder).mkdir()
    got, args = bench.e2e_data_args(name)
    assert got == label
    assert args == [f"--data={bench.ROOT / 'configs' / 'data' / config}",
                    f"--data.path={tmp_path / folder}"]
    assert (bench.ROOT / "configs" / "data" / config).is_file()


def test_interleaved_mode_times_the_three_models_on_the_same_batches(bench, tmp_path, capsys,
                                                                      monkeypatch):
    from resemb_pl.data.datamodule import CTRDataModule

    stepped = []
    real_step = bench.train_step
    monkeypatch.setattr(bench, "train_step", lambda task, opt, batch: (
        stepped.append((type(task.embedding).__name__, int(batch["target"][0]))),
        real_step(task, opt, batch)))
    out = tmp_path / "interleaved.txt"
    bench.main(["--end-to-end", "--interleaved", "--data", "tiny", "--steps", "3", "--warmup",
                "1", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    text = out.read_text()
    assert text.startswith("$ python scripts/benchmark.py --end-to-end --interleaved")
    # Every batch goes to all three models, the first one rotating.
    assert len(stepped) == 3 * 4
    for k in range(4):
        turn = stepped[3 * k: 3 * k + 3]
        assert len({target for _, target in turn}) == 1
        assert turn[0][0] == ["PlainEmbedding", "ResEmbedding", "ResEmbedding"][k % 3]
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("data "))
    assert lines[header].split() == ["data", "items", "batch", "plain", "ms", "GCN", "ms",
                                     "GCN/plain", "ATT", "ms", "ATT/plain"]
    (row,) = lines[header + 1:]
    assert row in capsys.readouterr().out
    cells = row.split()
    dm = CTRDataModule(preset="tiny", cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    assert cells[:4] == ["tiny", "preset", f"{dm.num_items:,}", "128"]
    plain, gcn, gcn_ratio, att, att_ratio = map(float, cells[4:])
    assert min(plain, gcn, att) > 0
    assert gcn_ratio == pytest.approx(gcn / plain, rel=0.02, abs=0.01)
    assert att_ratio == pytest.approx(att / plain, rel=0.02, abs=0.01)


def test_interleaved_eager_steps_the_res_embeddings_again_with_the_loops_off(bench, tmp_path,
                                                                           monkeypatch):
    from resemb_pl.nn.conv import native

    stepped = []
    real_step = bench.train_step
    monkeypatch.setattr(bench, "train_step", lambda task, opt, batch: (
        stepped.append((type(task.embedding).__name__, native.usable(torch.zeros(1)))),
        real_step(task, opt, batch)))
    out = tmp_path / "interleaved.txt"
    bench.main(["--end-to-end", "--interleaved", "--eager", "--data", "tiny", "--steps", "3",
                "--warmup", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "cache"),
                "--out", str(out)])
    # Five models a batch: plain, GCN, ATT with the loops as built, GCN and ATT without them.
    assert len(stepped) == 5 * 4
    first = stepped[:5]
    loops = native.library() is not None
    assert first == [("PlainEmbedding", loops), ("ResEmbedding", loops), ("ResEmbedding", loops),
                     ("ResEmbedding", False), ("ResEmbedding", False)]
    lines = out.read_text().splitlines()
    assert lines[1].endswith(f"compiled CSR loops {'on' if loops else 'off'}")
    header = next(i for i, line in enumerate(lines) if line.startswith("data "))
    assert lines[header].split()[-5:] == ["ATT", "eager", "ms", "ATT", "eager/plain"]
    cells = lines[header + 1].split()
    eager_att, eager_ratio = float(cells[-2]), float(cells[-1])
    assert eager_ratio == pytest.approx(eager_att / float(cells[4]), rel=0.02, abs=0.01)


@pytest.mark.parametrize("mode", [[], ["--interleaved"]])
@pytest.mark.parametrize("bad", [["--steps", "0"], ["--warmup", "-1"], ["--repeats", "0"]])
def test_end_to_end_modes_refuse_bad_counts_in_one_line(bench, mode, bad, capsys):
    # One check for both modes, before any data is read: exit 2 and one line naming the flags.
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--end-to-end", *mode, "--data", "tiny", *bad])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "benchmark: error: --steps and --repeats must be >= 1 and --warmup >= 0")
