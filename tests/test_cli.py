"""CLI smoke tests: fit on the tiny preset through ``resemb-pl`` and check the TensorBoard logs."""

import sys
from pathlib import Path

import pytest

from resemb_pl.cli import main

REPO = Path(__file__).resolve().parents[1]


def scalars(log_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (event,) = log_dir.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(event))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.parametrize("conv", ["MeanConv", "GCNNormConv", "DotAttentionConv"])
def test_quickstart_config_trains_and_logs(tmp_path, monkeypatch, conv):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["resemb-pl"])
    main([
        "fit", f"--config={REPO / 'configs/quickstart.yaml'}", "--data.preset=tiny",
        "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
        "--trainer.log_every_n_steps=1",
        f"--model.embedding.init_args.conv.class_path=resemb_pl.nn.conv.{conv}",
    ])
    tags = scalars(tmp_path / "runs")
    assert {"train/loss", "val/auc", "val/gauc", "val/logloss"} <= tags
    assert (tmp_path / "runs/quickstart/version_0/checkpoints/last.ckpt").exists()
    main([
        "test", f"--config={REPO / 'configs/quickstart.yaml'}", "--data.preset=tiny",
        "--trainer.enable_progress_bar=false",
        "--ckpt_path=runs/quickstart/version_0/checkpoints/last.ckpt",
    ])
    assert {"test/auc", "test/gauc", "test/logloss"} <= scalars(tmp_path / "runs/quickstart/version_1")


def test_bad_data_argument_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", f"--config={REPO / 'configs/quickstart.yaml'}", "--data.preset=huge"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert err == ["resemb-pl: error: data.preset: unknown preset 'huge'; "
                   "choose from ['books', 'electronics', 'small', 'tiny']"]


def test_constructor_refusal_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", f"--config={REPO / 'configs/quickstart.yaml'}", "--data.preset=tiny",
              "--model.embedding.init_args.propagation=local",
              "--model.embedding.init_args.conv.class_path=torch_geometric.nn.GCNConv"])
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines()
           if not line.startswith("resemb_pl: ")]
    assert len(err) == 1
    assert err[0].startswith("resemb-pl: error: propagation='local' is not exact for ['GCNConv']")
