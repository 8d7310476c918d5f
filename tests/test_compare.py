"""``resemb-pl compare``: the runs, the resumable table and the HPARAMS tab; the configs."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from resemb_pl.cli import main
from resemb_pl.compare import compare_table, fit_args, markdown, model_names, parse_args
from resemb_pl.errors import ConfigError
from resemb_pl.experiments import mean_std
from resemb_pl.metrics import rela_impr
from resemb_pl.task import HPARAMS_METRICS, readable_hparams

REPO = Path(__file__).resolve().parents[1]
TINY = str(REPO / "configs" / "data" / "synthetic_tiny.yaml")
DIN_PLAIN = str(REPO / "configs" / "model" / "din_plain.yaml")

# A user's own res-embedding config, outside the package.
USER_MODEL = """\
embedding_dim: 8
backbone: {class_path: resemb_pl.nn.models.DIN}
embedding:
  class_path: resemb_pl.nn.ResEmbedding
  init_args:
    conv: {class_path: resemb_pl.nn.conv.GCNNormConv}
    residual_l2: 0.01
optimizer:
  class_path: torch.optim.Adam
  init_args: {lr: 0.002}
"""


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def hparams_of(run_dir: Path) -> tuple[list[str], dict, EventAccumulator]:
    """The HPARAMS metric tags, the session's hyperparameters and the run's events."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {k: v.string_value if v.HasField("string_value") else v.number_value
              for k, v in start.session_start_info.hparams.items()}
    return [m.name.tag for m in experiment.metric_infos], values, events


def compare_command() -> list[str]:
    script = Path(sys.executable).with_name("resemb-pl")
    if script.exists():
        return [str(script), "compare"]
    return [sys.executable, "-m", "resemb_pl.cli", "compare"]


def test_compare_killed_then_resumed_writes_the_table_and_the_hparams(tmp_path, monkeypatch,
                                                                      capsys):
    (tmp_path / "mine").mkdir()
    user_model = tmp_path / "mine" / "my_gcn.yaml"
    user_model.write_text(USER_MODEL)
    args = ["--data", TINY, "--models", DIN_PLAIN, str(user_model), "--seeds", "0", "1",
            "--out", "out", "--patience", "2",
            "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "4",
            "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
            f"--data.cache_dir={tmp_path / 'cache'}"]
    results = tmp_path / "out" / "results.csv"

    # A real `resemb-pl compare`, killed once its first run is in results.csv.
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*compare_command(), *args], cwd=tmp_path,
                                stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not (results.exists() and rows_of(results)):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the first run did not finish in time"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed, not finished
    before = rows_of(results)
    assert 1 <= len(before) < 4
    assert (before[0]["model"], before[0]["seed"]) == ("din_plain", "0")

    # The same command resumes: only the missing runs train.
    monkeypatch.chdir(tmp_path)
    main(["compare", *args])
    out = capsys.readouterr().out
    assert f"{len(before)} of 4 cells already done, skipping them" in out
    rows = rows_of(results)
    assert [(r["model"], r["seed"]) for r in rows] == [
        ("din_plain", "0"), ("din_plain", "1"), ("my_gcn", "0"), ("my_gcn", "1")]
    assert rows[: len(before)] == before  # finished runs are kept as they were

    # The table: mean ± std over seeds, RelaImpr and wins against the first model.
    plain = [r for r in rows if r["model"] == "din_plain"]
    mine = [r for r in rows if r["model"] == "my_gcn"]
    md = (tmp_path / "out" / "compare.md").read_text()
    assert md in out
    lines = [line for line in md.splitlines() if line.startswith("| din_plain") or
             line.startswith("| my_gcn")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    for cell, sel in zip(cells, (plain, mine), strict=True):
        for col, metric in zip(cell[2:5], ("auc", "gauc", "logloss"), strict=True):
            mean, std = mean_std(r[metric] for r in sel)
            assert col == f"{mean:.4f} ± {std:.4f}"
    assert cells[0][5:] == ["baseline", "–"]
    impr = rela_impr(mean_std(r["auc"] for r in mine)[0], mean_std(r["auc"] for r in plain)[0])
    wins = sum(float(m["auc"]) > float(p["auc"]) for m, p in zip(mine, plain, strict=True))
    assert cells[1][5:] == [f"{impr:+.2f}%", f"{wins}/2 seeds"]
    table = rows_of(tmp_path / "out" / "compare.csv")
    assert [t["model"] for t in table] == ["din_plain", "my_gcn"]
    assert float(table[1]["rela_impr_pct"]) == pytest.approx(impr, abs=1e-3)
    assert (tmp_path / "out" / "compare_auc.png").read_bytes()[:4] == b"\x89PNG"

    # TensorBoard: one HPARAMS session per run, readable keys, the test AUC as its metric.
    for row in rows:
        run_dir = tmp_path / "out" / "tb" / row["model"] / f"seed{row['seed']}"
        metrics, values, events = hparams_of(run_dir)
        assert metrics == list(HPARAMS_METRICS)
        assert "_instantiator" not in values
        assert "hp_metric" not in events.Tags()["scalars"]
        assert values["seed"] == int(row["seed"])
        assert values["data_preset"] == "tiny"
        if row["model"] == "my_gcn":
            assert (values["embedding"], values["conv"]) == ("ResEmbedding", "GCNNormConv")
            assert (values["residual_l2"], values["lr"]) == (0.01, 0.002)
            assert values["embedding_dim"] == 8
        else:
            assert (values["embedding"], values["conv"], values["residual_l2"]) == (
                "PlainEmbedding", "none", 0.0)
        (test_auc,) = events.Scalars("test/auc")  # tested once, in the run's own folder
        assert test_auc.value == pytest.approx(float(row["auc"]), abs=1e-5)
        steps = [e.step for e in events.Scalars("val/auc")]
        assert steps == sorted(set(steps))  # nothing left of the killed run
        config = (run_dir / "config.yaml").read_text()
        assert config.startswith("# resemb_pl ")
        assert yaml.safe_load(config)["seed_everything"] == int(row["seed"])
        assert "version" in yaml.safe_load((run_dir / "hparams.yaml").read_text())

    # Resuming with other settings is refused in one line.
    with pytest.raises(SystemExit) as exc:
        main(["compare", *args[:-1], "--trainer.max_epochs", "3", args[-1]])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("resemb-pl: error: out/results.csv was produced with other settings")


# -- the table, on hand-made rows ---------------------------------------------------------------
def test_a_run_stopped_by_patience_says_so(tmp_path, monkeypatch, capsys):
    # lr 0: the validation AUC never improves after the first epoch, so patience 1 stops the
    # run after the second of 5 epochs, and the best (first) checkpoint is tested.
    monkeypatch.chdir(tmp_path)
    main(["compare", "--data", TINY, "--models", DIN_PLAIN, "--seeds", "0", "--out", "out",
          "--patience", "1", "--trainer.max_epochs", "5", "--trainer.limit_train_batches", "2",
          "--model.optimizer.init_args.lr", "0", "--trainer.enable_progress_bar", "false",
          "--trainer.enable_model_summary", "false", f"--data.cache_dir={tmp_path / 'cache'}"])
    (row,) = rows_of(tmp_path / "out" / "results.csv")
    assert (row["epochs"], row["stopped_early"]) == ("2", "True")
    assert "epoch0-" in row["checkpoint"]


def test_compare_table_mean_std_rela_impr_and_wins():
    rows = [
        {"model": "a", "seed": "0", "auc": "0.70", "gauc": "0.60", "logloss": "0.50"},
        {"model": "a", "seed": "1", "auc": "0.80", "gauc": "0.70", "logloss": "0.40"},
        {"model": "b", "seed": "0", "auc": "0.75", "gauc": "0.65", "logloss": "0.45"},
        {"model": "b", "seed": "1", "auc": "0.70", "gauc": "0.60", "logloss": "0.55"},
        {"model": "c", "seed": "1", "auc": "0.90", "gauc": "0.80", "logloss": "0.30"},
    ]
    a, b, c = compare_table(rows, ["a", "b", "c"], [0, 1])
    assert (a["auc_mean"], a["auc_std"]) == pytest.approx((0.75, 0.05))
    assert a["auc"] == "0.7500 ± 0.0500"
    assert a["rela_impr"] is None
    assert a["wins"] is None
    # b: mean AUC 0.725 against 0.75: ((0.725 - 0.5) / (0.75 - 0.5) - 1) * 100 = -10%
    assert b["rela_impr"] == pytest.approx(-10.0)
    assert (b["wins"], b["paired"]) == (1, 2)  # seed 0: 0.75 > 0.70; seed 1: 0.70 < 0.80
    assert (c["n"], c["wins"], c["paired"]) == (1, 1, 1)  # only seed 1 ran
    assert c["rela_impr"] == pytest.approx(60.0)
    md = markdown([a, b, c], "T").splitlines()
    assert md[0] == "# T"
    assert md[4] == ("| a | 2 | 0.7500 ± 0.0500 | 0.6500 ± 0.0500 | 0.4500 ± 0.0500 | "
                     "baseline | – |")
    assert md[5].endswith("| -10.00% | 1/2 seeds |")


# -- the command line ---------------------------------------------------------------------------
def test_parse_args_passes_trainer_data_and_model_options_on():
    args, extra = parse_args(["--data", "d.yaml", "--models", "a.yaml", "b.yaml",
                              "--trainer.max_epochs", "2", "--seeds", "3", "4",
                              "--data.cache_dir=/tmp/c", "--model.optimizer.init_args.lr",
                              "-1e-3"])
    assert args.seeds == [3, 4]
    assert args.models == [Path("a.yaml"), Path("b.yaml")]
    assert extra == ["--trainer.max_epochs", "2", "--data.cache_dir=/tmp/c",
                     "--model.optimizer.init_args.lr", "-1e-3"]
    argv = fit_args(args, extra, Path("a.yaml"), "a", 3, Path("out/tb"))
    assert argv[0] == "fit"
    assert argv[-5:] == extra
    assert "--seed_everything=3" in argv
    assert "--model=a.yaml" in argv
    logger = next(a for a in argv if a.startswith("--trainer.logger="))
    assert '"version": "seed3"' in logger
    assert '"default_hp_metric": false' in logger
    assert any(a.startswith("--trainer.callbacks+=") and '"patience": 3' in a for a in argv)


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "d.yaml", "--models", "a.yaml", "--epochs", "2"], "'--epochs'"),
    (["--data", "d.yaml", "--models", "a.yaml", "--seeds", "-1"], "--seeds: must be >= 0"),
    (["--data", "d.yaml", "--models", "a.yaml", "--patience", "-2"], "--patience: must be >= 0"),
    (["--models", "a.yaml"], "--data"),
])
def test_parse_args_refuses(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse_args(argv)


def test_model_names_must_differ():
    assert model_names([Path("x/din_plain.yaml"), Path("my.yaml")]) == ["din_plain", "my"]
    with pytest.raises(ConfigError, match="a/din.yaml and b/din.yaml have the same name 'din'"):
        model_names([Path("a/din.yaml"), Path("b/din.yaml")])


def test_bad_model_file_is_one_line_before_any_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "list.yaml").write_text("- not a mapping\n")
    for model, why in (("missing.yaml", "--models missing.yaml: cannot read it"),
                       ("list.yaml", "--models list.yaml: must be a mapping")):
        with pytest.raises(SystemExit) as exc:
            main(["compare", "--data", TINY, "--models", DIN_PLAIN, model, "--out", "out"])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"resemb-pl: error: {why}")
    assert not (tmp_path / "out").exists()


def test_compare_needs_a_checkpoint_of_the_best_val_auc(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base.yaml").write_text("trainer:\n  max_epochs: 1\n")
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--config", "base.yaml", "--data", TINY, "--models", DIN_PLAIN,
              "--seeds", "0", "--out", "out", f"--data.cache_dir={tmp_path / 'cache'}"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("resemb_pl: ")]  # the package's info lines
    assert len(err) == 1
    assert err[0].startswith("resemb-pl: error: trainer.callbacks: compare tests each run's best "
                             "checkpoint and needs a ModelCheckpoint with monitor: val/auc")
    assert not (tmp_path / "out" / "results.csv").exists()


def test_compare_refuses_several_processes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--data", TINY, "--models", DIN_PLAIN, "--seeds", "0", "--out", "out",
              "--trainer", str(REPO / "configs" / "trainer" / "cpu.yaml"),
              f"--data.cache_dir={tmp_path / 'cache'}"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("resemb_pl: ")]
    assert err == ["resemb-pl: error: trainer: compare trains in one process, got 2 (strategy, "
                   "devices, num_nodes); run `resemb-pl fit` per model for DDP"]


# -- hyperparameters as TensorBoard shows them ---------------------------------------------------
def test_readable_hparams_are_flat_and_the_same_keys_for_every_embedding(monkeypatch):
    monkeypatch.setenv("PL_GLOBAL_SEED", "7")
    res = readable_hparams(
        {"embedding_dim": 18, "num_items": 10, "num_categories": 3, "_instantiator": "x",
         "embedding": {"class_path": "resemb_pl.nn.ResEmbedding",
                       "init_args": {"conv": {"class_path": "resemb_pl.nn.conv.MeanConv"}}},
         "backbone": {"class_path": "resemb_pl.nn.models.DIN"},
         "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 0.01}},
         "lr_scheduler": None},
        {"source": "parquet", "path": "clicks.parquet", "preset": "small", "batch_size": 64,
         "seed": 1, "max_len": 20},
    )
    plain = readable_hparams({"embedding": {"class_path": "resemb_pl.nn.PlainEmbedding",
                                            "init_args": {"l2": 0.1}}})
    assert res.keys() == plain.keys()
    assert "_instantiator" not in res
    assert all(isinstance(v, str | int | float) for v in res.values())
    # missing init args take the class's defaults: ResEmbedding's residual_l2, AdamW's decay
    assert (res["embedding"], res["conv"], res["residual_l2"], res["num_layers"]) == (
        "ResEmbedding", "MeanConv", 0.006, 1)
    assert (res["optimizer"], res["lr"], res["weight_decay"]) == ("AdamW", 0.01, 0.01)
    assert (res["data_source"], res["data_path"], res["data_preset"]) == (
        "parquet", "clicks.parquet", "")
    assert (res["batch_size"], res["data_seed"], res["seed"], res["lr_scheduler"]) == (
        64, 1, 7, "none")
    assert (plain["conv"], plain["residual_l2"], plain["embedding_l2"]) == ("none", 0.0, 0.1)


# -- configs ------------------------------------------------------------------------------------
def print_config(argv: list[str], capsys) -> dict:
    with pytest.raises(SystemExit) as exc:
        main(["fit", *argv, "--print_config"])
    assert exc.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


def test_quickstart_includes_the_shared_trainer_block(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the include is relative to quickstart.yaml, not the cwd
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    shared = print_config([f"--config={REPO / 'configs/default.yaml'}"], capsys)
    quick = print_config([f"--config={REPO / 'configs/quickstart.yaml'}"], capsys)
    assert quick["trainer"]["callbacks"] == shared["trainer"]["callbacks"]
    assert [c["class_path"].rpartition(".")[2] for c in quick["trainer"]["callbacks"]] == [
        "ModelCheckpoint", "EmbeddingMonitor", "LossCurves"]
    logger = quick["trainer"]["logger"]["init_args"]
    assert (logger["name"], logger["save_dir"], logger["default_hp_metric"]) == (
        "quickstart", "runs", False)
    assert (quick["trainer"]["max_epochs"], shared["trainer"]["max_epochs"]) == (4, 5)
    assert quick["model"]["embedding"]["class_path"] == "resemb_pl.nn.ResEmbedding"
    # EarlyStopping and LearningRateMonitor append to the shared callbacks, as README says.
    more = print_config([f"--config={REPO / 'configs/quickstart.yaml'}",
                         "--trainer.callbacks+=EarlyStopping",
                         "--trainer.callbacks.monitor=val/auc", "--trainer.callbacks.mode=max",
                         "--trainer.callbacks.patience=3",
                         "--trainer.callbacks+=LearningRateMonitor"], capsys)
    names = [c["class_path"].rpartition(".")[2] for c in more["trainer"]["callbacks"]]
    assert names == ["ModelCheckpoint", "EmbeddingMonitor", "LossCurves", "EarlyStopping",
                     "LearningRateMonitor"]
    assert more["trainer"]["callbacks"][3]["init_args"]["patience"] == 3
    assert os.getcwd() == str(tmp_path)
