import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from resemb_pl.cli import ResembCLI, main
from resemb_pl.data.datamodule import CTRDataModule
from resemb_pl.data.requests import checkpoint_vocabulary, read_requests
from resemb_pl.errors import CheckpointError, DataError
from resemb_pl.task import CTRTask

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def trained(quickstart_checkpoint):
    q = quickstart_checkpoint
    return q.root, q.ckpt.parent, q.cache


def _requests(dm: CTRDataModule) -> pd.DataFrame:
    """The test samples of ``dm`` as a requests table with original ids."""
    s, vocab = dm.samples("test"), dm.arrays["item_vocab"]
    return pd.DataFrame({
        "user_id": s.user,
        "history": [list(vocab[s.history(i) - 1]) for i in range(len(s))],
        "item_id": vocab[s.target - 1],
    })


def test_predict_from_checkpoint_alone_equals_test(trained, monkeypatch):
    root, alone, cache = trained
    ckpt = torch.load(alone / "model.ckpt", weights_only=True)
    hparams = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if k[0] != "_"}
    dm = CTRDataModule(**hparams | {"cache_dir": cache})
    _requests(dm).to_parquet(alone / "requests.parquet")
    monkeypatch.setattr("sys.argv", ["resemb-pl"])

    # A new user's folder: the checkpoint and a requests file, nothing else.
    monkeypatch.chdir(alone)
    assert sorted(p.name for p in alone.iterdir()) == ["model.ckpt", "requests.parquet"]
    main(["predict", "--ckpt_path=model.ckpt", "--data.path=requests.parquet", *QUIET])
    scores = pd.read_parquet(alone / "predictions.parquet")["probability"].to_numpy()

    # The same samples through the training data: `resemb-pl predict` on the test split, and
    # the metrics of `resemb-pl test`.
    monkeypatch.chdir(root)
    args = [f"--config={QUICKSTART}", "--data.preset=tiny", f"--data.cache_dir={cache}",
            f"--ckpt_path={alone / 'model.ckpt'}", *QUIET]
    main(["predict", *args, "--data.output=test_scores.parquet"])
    reference = pd.read_parquet(root / "test_scores.parquet")["probability"].to_numpy()
    tested = ResembCLI(CTRTask, CTRDataModule, auto_configure_optimizers=False,
                       save_config_kwargs={"overwrite": True}, args=["test", *args])

    assert len(scores) == len(dm.samples("test")) > 100
    np.testing.assert_allclose(scores, reference, rtol=0, atol=1e-6)
    assert scores.std() > 1e-4  # not a constant
    label = torch.from_numpy(dm.samples("test").label).long()
    auc = binary_auroc(torch.from_numpy(scores), label)
    assert float(auc) == pytest.approx(float(tested.trainer.callback_metrics["test/auc"]), abs=1e-6)


def test_unknown_ids_are_padding(trained, monkeypatch, caplog):
    _, alone, _ = trained
    vocab = checkpoint_vocabulary(alone / "model.ckpt")["item_vocab"]
    a, b, c = vocab[:3]
    pd.DataFrame({
        "history": [[a, b], [a, "unknown-1", b], [a, b], [a, b]],
        "item_id": [c, c, "unknown-2", vocab[-1]],
    }).to_parquet(alone / "unknown.parquet")
    monkeypatch.chdir(alone)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    with caplog.at_level(logging.WARNING, logger="resemb_pl.data.requests"):
        main(["predict", "--ckpt_path=model.ckpt", "--data.path=unknown.parquet",
              "--data.output=out/unknown.parquet", *QUIET])
    assert "1 of 4 candidate ids and 1 of 9 history ids are unknown" in caplog.text
    p = pd.read_parquet(alone / "out" / "unknown.parquet")["probability"].to_numpy()
    assert p[1] == pytest.approx(p[0], abs=1e-7)  # an unknown history item is ignored
    assert abs(p[2] - p[0]) > 1e-6
    assert abs(p[3] - p[0]) > 1e-6


def test_read_requests_maps_ids_and_cuts_histories(tmp_path):
    file = tmp_path / "r.parquet"
    pd.DataFrame({"history": [["a", "x", "c"], []], "item_id": ["b", "zz"],
                  "user_id": ["u", "u"]}).to_parquet(file)
    samples, counts = read_requests(file, np.array(["a", "b", "c"]), max_len=2)
    assert samples.seq.tolist() == [1, 0, 3]
    assert samples.history(0).tolist() == [0, 3]
    assert samples.hist_len.tolist() == [2, 0]
    assert samples.target.tolist() == [2, 0]
    assert samples.user.tolist() == [0, 0]
    assert counts == {"rows": 2, "unknown_candidates": 1, "history_ids": 3, "unknown_history": 1}


def test_read_requests_integer_ids(tmp_path):
    file = tmp_path / "r.parquet"
    pd.DataFrame({"history": [[10, 30]], "item_id": [20]}).to_parquet(file)
    samples, _ = read_requests(file, np.array(["10", "20", "30"]))
    assert samples.history(0).tolist() == [1, 3]
    assert samples.target.tolist() == [2]


def test_requests_errors(tmp_path, trained, monkeypatch, capsys):
    file = tmp_path / "r.parquet"
    pd.DataFrame({"history": [["a"]]}).to_parquet(file)
    with pytest.raises(DataError, match=r"r.parquet: missing column\(s\) \['item_id'\]"):
        read_requests(file, np.array(["a"]))
    pd.DataFrame({"history": ["a"], "item_id": ["a"]}).to_parquet(file)
    with pytest.raises(DataError, match="column 'history' row 0 is not a list"):
        read_requests(file, np.array(["a"]))
    with pytest.raises(DataError, match="no such requests file"):
        read_requests(tmp_path / "missing.parquet", np.array(["a"]))

    bare = tmp_path / "bare.ckpt"
    ckpt = torch.load(trained[1] / "model.ckpt", weights_only=True)
    del ckpt["resemb_vocab"]
    torch.save(ckpt, bare)
    with pytest.raises(CheckpointError, match="bare.ckpt: the checkpoint has no id vocabulary"):
        checkpoint_vocabulary(bare)

    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", f"--data.path={file}"])
    assert exit_info.value.code == 2
    assert "--ckpt_path is required to score a requests file" in capsys.readouterr().err
