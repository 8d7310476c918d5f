import csv
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

from resemb_pl.errors import ConfigError
from resemb_pl.experiments import (
    Grid,
    backbone_spec,
    cell_id,
    conv_class,
    embedding_spec,
    knn_purity,
    summarize,
    tsne,
    write_table,
)
from resemb_pl.nn.conv import DotAttentionConv, GCNNormConv, MeanConv

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "configs" / "data" / "synthetic_small.yaml")


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", DATA, "--preset", "tiny", "--cache-dir", str(tmp_path / "cache"),
            "--epochs", "1", "--limit-train-batches", "2", "--limit-val-batches", "1",
            "--accelerator", "cpu", "--out", str(tmp_path / "reports"), *extra]


# -- the grid -------------------------------------------------------------------------------
def test_grid_appends_each_cell_and_resumes_after_a_crash(tmp_path):
    calls = []

    def fn(cell):
        calls.append(cell_id(cell))
        if cell["seed"] == 2:
            raise KeyboardInterrupt  # stopped in the middle of the grid
        return {"auc": 0.5 + cell["seed"] / 10}

    cells = [{"embedding": "att", "seed": s} for s in range(4)]
    grid = Grid(tmp_path, {"epochs": 1})
    with pytest.raises(KeyboardInterrupt):
        grid.run(cells, fn)
    assert [r["cell"] for r in grid.rows()] == ["embedding=att,seed=0", "embedding=att,seed=1"]

    calls.clear()
    rows = Grid(tmp_path, {"epochs": 1}).run(cells, lambda c: {"auc": 0.9})
    assert [r["seed"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["auc"] for r in rows] == ["0.5", "0.6", "0.9", "0.9"]  # 0 and 1 were not rerun
    assert not list(tmp_path.glob(".results-*"))  # no temporary file left behind


def test_grid_refuses_other_settings(tmp_path):
    Grid(tmp_path, {"epochs": 1}).run([{"seed": 0}], lambda c: {"auc": 0.7})
    with pytest.raises(ConfigError, match=r"other settings \(epochs\).*--fresh"):
        Grid(tmp_path, {"epochs": 2})


def test_grid_fresh_discards_the_finished_cells_and_their_settings(tmp_path):
    Grid(tmp_path, {"epochs": 1}).run([{"seed": 0}], lambda c: {"auc": 0.7})
    grid = Grid(tmp_path, {"epochs": 2}, fresh=True)  # other settings: allowed when fresh
    assert grid.rows() == []
    assert grid.run([{"seed": 0}], lambda c: {"auc": 0.8})[0]["auc"] == "0.8"
    assert '"epochs": 2' in grid.settings_file.read_text()


def test_grid_rejects_duplicate_cells(tmp_path):
    with pytest.raises(ConfigError, match="duplicate cells"):
        Grid(tmp_path, {}).run([{"seed": 0}, {"seed": 0}], lambda c: {})


def test_table3_resumes_without_retraining(tmp_path, monkeypatch, capsys):
    table3 = load_script("table3")
    trained = []
    real = table3.fit_and_test

    def counting(data, model, seed, budget, **kwargs):
        trained.append(model["embedding"]["class_path"])
        return real(data, model, seed, budget, **kwargs)

    monkeypatch.setattr(table3, "fit_and_test", counting)
    args = tiny_args(tmp_path, "--embeddings", "plain", "att", "--seeds", "0")
    assert table3.main(args) == 0
    assert len(trained) == 2
    out = tmp_path / "reports" / "table3" / "synthetic_tiny"
    results = (out / "results.csv").read_bytes()
    md = (out / "table3.md").read_text()
    assert "| din | plain | 1 |" in md
    assert "+0.00 |" in md
    assert "--embeddings plain att" in (out / "command.txt").read_text()

    trained.clear()
    assert table3.main(args) == 0
    assert trained == []
    assert (out / "results.csv").read_bytes() == results
    assert len((out / "command.txt").read_text().splitlines()) == 2

    # Drop the att row: only that cell is trained again.
    with open(out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerow(rows[0])
    assert table3.main(args) == 0
    assert trained == ["resemb_pl.nn.ResEmbedding"]
    assert "embedding=att" in capsys.readouterr().out


def test_step_budget_shorter_than_an_epoch_tests_the_final_weights(tmp_path):
    # --max-steps can stop training before the first validation: no best checkpoint exists,
    # and the run tests the weights it ended with instead of failing.
    table3 = load_script("table3")
    args = ["--data", DATA, "--preset", "tiny", "--cache-dir", str(tmp_path / "cache"),
            "--epochs", "1", "--max-steps", "3", "--accelerator", "cpu",
            "--out", str(tmp_path / "reports"), "--embeddings", "plain", "--seeds", "0"]
    assert table3.main(args) == 0
    with open(tmp_path / "reports" / "table3" / "synthetic_tiny" / "results.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["steps"] == "3"
    assert 0 < float(row["auc"]) < 1


def test_table3_unknown_backbone_is_one_line(tmp_path, capsys):
    table3 = load_script("table3")
    assert table3.main(tiny_args(tmp_path, "--backbones", "din", "nope")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("table3: error: unknown backbone 'nope'; resemb_pl.nn.models has")
    assert "\n" not in err
    assert not (tmp_path / "reports").exists()  # failed before training anything


# -- specs ----------------------------------------------------------------------------------
def test_specs_by_name():
    assert backbone_spec("DIN") == {"class_path": "resemb_pl.nn.models.DIN"}
    assert embedding_spec("gcn") == {
        "class_path": "resemb_pl.nn.ResEmbedding",
        "init_args": {"conv": {"class_path": "resemb_pl.nn.conv.GCNNormConv"},
                      "residual_l2": 0.006},
    }
    with pytest.raises(ConfigError, match="unknown embedding 'sage'; choose from plain, avg"):
        embedding_spec("sage")
    # the class a short name stands for is the one its spec names
    assert [conv_class(n) for n in ("avg", "gcn", "att")] == [MeanConv, GCNNormConv,
                                                             DotAttentionConv]
    with pytest.raises(ConfigError, match="unknown res-embedding 'plain'; choose from avg"):
        conv_class("plain")


# -- tables and t-SNE ------------------------------------------------------------------------
def test_summarize_and_write_table(tmp_path):
    rows = [{"embedding": "att", "auc": "0.7"}, {"embedding": "att", "auc": "0.9"},
            {"embedding": "plain", "auc": "0.6"}]
    table = summarize(rows, ["embedding"], ["auc"])
    assert table[0]["n"] == 2
    assert table[0]["auc_mean"] == pytest.approx(0.8)
    assert table[0]["auc_std"] == pytest.approx(0.1)
    write_table(tmp_path / "t", table, ["embedding", "n", "auc_mean"], "Title")
    assert (tmp_path / "t.md").read_text().splitlines()[2:5] == [
        "| embedding | n | auc_mean |", "|---|---|---|", "| att | 2 | 0.8000 |"]
    assert (tmp_path / "t.csv").read_text().splitlines()[1] == "att,2,0.8"


def test_tsne_separates_clusters():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    x = rng.normal(size=(90, 10)) * 0.1 + np.eye(10)[labels] * 5
    y = tsne(x, perplexity=10, iterations=400)
    assert y.shape == (90, 2)
    # A stochastic embedding: an odd point can land beside another cluster (over 50 data and
    # t-SNE seeds the purity ranged 0.978-1.0), so the margin, not an exact 1.0. Points
    # without clusters stay near chance (1/3; at most 0.42 over 200 seeds).
    assert knn_purity(y, labels, k=5) >= 0.95
    assert knn_purity(rng.normal(size=(90, 10)), labels, k=5) < 0.6


def test_knn_purity_hand_case():
    x = np.array([[0.0], [1.0], [10.0], [11.0]])
    assert knn_purity(x, np.array([0, 0, 1, 1]), k=1) == 1.0
    assert knn_purity(x, np.array([0, 1, 0, 1]), k=1) == 0.0


# -- every script writes its figure and table ------------------------------------------------
FIGURES = {
    "fig5_overfitting": (["--seeds", "0", "--val-check-interval", "0.5"],
                         "fig5/synthetic_tiny/fig5"),
    "fig6_data_fraction": (["--seeds", "0", "--embeddings", "gcn", "--fractions", "0.5", "1"],
                           "fig6/synthetic_tiny/fig6"),
    "fig7_tsne": (["--seeds", "0", "--embeddings", "plain", "avg", "--items", "40"],
                  "fig7/synthetic_tiny/fig7"),
    "fig8_residual_scale": (["--seeds", "0", "--dims", "18", "--residual-l2s", "0.006"],
                            "fig8/synthetic_tiny/fig8"),
    "theorem1_radius": (["--seeds", "0", "--embeddings", "plain", "att"],
                        "theorem1/synthetic_tiny/theorem1"),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_script_writes_outputs(tmp_path, name, monkeypatch):
    extra, stem = FIGURES[name]
    monkeypatch.setattr(sys, "argv", [f"scripts/{name}.py"])
    assert load_script(name).main(tiny_args(tmp_path, *extra)) == 0
    out = tmp_path / "reports" / stem
    assert out.with_suffix(".csv").exists()
    assert out.with_suffix(".md").read_text().startswith("# ")
    if name != "theorem1_radius":
        picture = image.imread(out.with_suffix(".png"))
        assert picture.ndim == 3
        assert picture.shape[0] > 100
    assert f"scripts/{name}.py --data" in (out.parent / "command.txt").read_text()
