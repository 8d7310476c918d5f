"""scripts/convergence.py: the configs it writes, the choice by validation AUC, the final table."""

import csv
from pathlib import Path

import pytest
import yaml

from resemb_pl.metrics import rela_impr

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "data" / "synthetic_tiny.yaml")


@pytest.fixture(scope="module")
def conv(load_script):
    return load_script("convergence")


def row(model, seed, auc, val, epochs=3, **extra):
    return {"cell": f"model={model},config=x,seed={seed}", "model": model, "seed": str(seed),
            "auc": str(auc), "gauc": str(auc - 0.01), "logloss": "0.5", "best_val_auc": str(val),
            "epochs": str(epochs), **extra}


def test_model_configs(conv):
    name, text = conv.model_text("Sports", "mba", "0.1")
    assert name == "din_mba_0.1"
    config = yaml.safe_load(text)
    assert config["embedding"] == {"class_path": "resemb_pl.nn.PlainEmbedding",
                                   "init_args": {"l2": 0.1, "l2_mode": "mba"}}
    assert config["backbone"]["class_path"] == "resemb_pl.nn.models.DIN"
    name, text = conv.model_text("Sports", "att", "100")
    assert name == "din_att_100"
    assert yaml.safe_load(text)["embedding"]["init_args"] == {
        "conv": {"class_path": "resemb_pl.nn.conv.DotAttentionConv"}, "residual_l2": 100}
    assert yaml.safe_load(conv.model_text("Sports", "plain", None)[1])["embedding"] == {
        "class_path": "resemb_pl.nn.PlainEmbedding"}


def test_choice_is_by_validation_auc_never_test(conv, tmp_path):
    rows = [row("din_l2_0.1", 0, auc=0.80, val=0.70), row("din_l2_1", 0, auc=0.70, val=0.71),
            row("din_plain", 0, auc=0.75, val=0.69)]
    paths = {"plain": [tmp_path / "din_plain.yaml"],
             "l2": [tmp_path / "din_l2_0.1.yaml", tmp_path / "din_l2_1.yaml"]}
    chosen, table = conv.choose(rows, paths)
    assert chosen == {"plain": tmp_path / "din_plain.yaml", "l2": tmp_path / "din_l2_1.yaml"}
    assert table[1]["validation AUC (test AUC)"] == (
        "din_l2_0.1: 0.7000 (0.8000) · din_l2_1: 0.7100 (0.7000)")


def test_summary_against_plain_and_the_best_regularised(conv):
    # MBA has the better validation AUC, so it is the regularised baseline although L2 tests
    # higher; GCN beats MBA on seed 0 only.
    rows = [row("din_plain", 0, 0.70, 0.60, 4), row("din_plain", 1, 0.72, 0.60, 5),
            row("din_l2_1", 0, 0.76, 0.61), row("din_l2_1", 1, 0.76, 0.61),
            row("din_mba_1", 0, 0.74, 0.62), row("din_mba_1", 1, 0.76, 0.62),
            row("din_gcn_100", 0, 0.75, 0.63, 2), row("din_gcn_100", 1, 0.75, 0.63, 6, gauc="0.70")]
    names = ["din_plain", "din_l2_1", "din_mba_1", "din_gcn_100"]
    table = {r["model"]: r for r in conv.summary(rows, names, [0, 1])}
    gcn = table["din_gcn_100"]
    assert gcn["RelaImpr vs plain"] == f"{rela_impr(0.75, 0.71):+.2f}%"
    assert gcn["RelaImpr vs din_mba_1"] == f"{rela_impr(0.75, 0.75):+.2f}%"
    assert gcn["seeds won vs din_mba_1"] == "1/2 AUC, 1/2 GAUC"
    assert gcn["seeds won vs plain"] == "2/2 AUC, 1/2 GAUC"
    assert gcn["epochs"] == "2/6"
    assert gcn["test AUC"] == "0.7500 ± 0.0000"
    assert table["din_mba_1"]["RelaImpr vs din_mba_1"] == "baseline"
    assert table["din_plain"]["RelaImpr vs plain"] == "baseline"
    assert table["din_plain"]["seeds won vs din_mba_1"] == "0/2 AUC, 0/2 GAUC"
    assert table["din_plain"]["seeds won vs plain"] == "–"
    assert list(conv.summary(rows, ["din_plain", "din_gcn_100"], [0, 1])[1]) == [
        "model", "runs", "val AUC", "test AUC", "test GAUC", "test logloss",
        "RelaImpr vs plain", "seeds won vs plain", "epochs"]  # no regularised plain: no columns


def test_tuning_runs_are_reused_only_with_the_same_settings(conv, tmp_path):
    tuning, final = tmp_path / "tuning", tmp_path / "final"
    tuning.mkdir()
    (tuning / "results.settings.json").write_text('{"a": 1}')
    rows = [row("din_plain", 0, 0.7, 0.6), row("din_l2_1", 0, 0.7, 0.6),
            row("din_l2_10", 0, 0.7, 0.6)]
    with open(tuning / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    conv.reuse_tuning(tuning, final, {"din_plain", "din_l2_10"}, 0)
    assert [r["model"] for r in conv.read_rows(final)] == ["din_plain", "din_l2_10"]
    conv.reuse_tuning(tuning, final, {"din_plain", "din_l2_10"}, 0)  # nothing twice
    assert len(conv.read_rows(final)) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.settings.json").write_text('{"a": 2}')
    conv.reuse_tuning(tuning, other, {"din_plain"}, 0)
    assert not (other / "results.csv").exists()


def test_bad_values_are_one_line_before_anything_is_written(conv, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        conv.main(["--data", TINY, "--title", "t", "--out", str(tmp_path / "o"), "--l2", "-1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "convergence: error: --l2: values must be positive numbers, got '-1'")
    with pytest.raises(SystemExit):
        conv.main(["--data", TINY, "--title", "t", "--out", str(tmp_path / "o"), "--bogus", "1"])
    assert "--bogus" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_the_three_stages_on_tiny_data(conv, tmp_path, capsys):
    out = tmp_path / "tiny"
    argv = ["--data", TINY, "--title", "tiny", "--out", str(out), "--l2", "1", "--mba",
            "--res", "1", "--convs", "gcn", "--seeds", "0", "1",
            "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            f"--data.cache_dir={tmp_path / 'cache'}"]
    conv.main(argv)
    models = sorted(p.name for p in (out / "models").iterdir())
    assert models == ["din_gcn_1.yaml", "din_l2_1.yaml", "din_plain.yaml"]
    assert len(conv.read_rows(out / "tuning")) == 3
    final = conv.read_rows(out / "final")
    assert sorted((r["model"], r["seed"]) for r in final) == [
        (m, s) for m in ("din_gcn_1", "din_l2_1", "din_plain") for s in ("0", "1")]
    tuning = {r["cell"]: r["auc"] for r in conv.read_rows(out / "tuning")}
    assert all(tuning[r["cell"]] == r["auc"] for r in final if r["seed"] == "0")  # reused
    with open(out / "summary.csv", newline="") as fh:
        summary = list(csv.DictReader(fh))
    assert [r["model"] for r in summary] == ["din_plain", "din_l2_1", "din_gcn_1"]
    assert summary[2]["seeds won vs din_l2_1"].endswith("/2 GAUC")
    assert "convergence.py" in (out / "command.txt").read_text()
    assert "| din_gcn_1 |" in capsys.readouterr().out
    conv.main(["--collect", str(tmp_path)])
    (entry,) = conv.read_rows(tmp_path, "summary.csv")
    assert entry["data set"] == "tiny"
    assert entry["plain"] == summary[0]["test AUC"]
    assert entry["best regularised plain"] == f"l2_1: {summary[1]['test AUC']}"
    assert entry["GCN"] == f"λ=1: {summary[2]['test AUC']}"
    assert entry["AVG"] == "–"
    assert entry["best res (by val AUC) vs plain"].startswith("din_gcn_1: ")
    assert entry["vs regularised"].endswith("/2 GAUC")


def test_extend_beyond_an_edge_only(conv):
    grid = {"plain": [None], "l2": ["0.1", "1", "10"], "mba": ["0.1", "1", "10"],
            "gcn": ["0.006", "1", "100"], "att": ["100"]}
    chosen = {"plain": "din_plain", "l2": "din_l2_10", "mba": "din_mba_1",
              "gcn": "din_gcn_0.006", "att": "din_att_100"}
    assert conv.extend(grid, chosen) == {
        "plain": [None], "l2": ["0.1", "1", "10", "100"], "mba": ["0.1", "1", "10"],
        "gcn": ["0.0006", "0.006", "1", "100"], "att": ["100"]}
    assert grid["l2"] == ["0.1", "1", "10"]  # not changed in place
