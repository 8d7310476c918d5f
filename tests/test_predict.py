import dataclasses
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from resemb_pl.checkpoint import load_checkpoint
from resemb_pl.cli import ResembCLI, main
from resemb_pl.data.catalogue import Catalogue
from resemb_pl.data.datamodule import CTRDataModule, SampleDataset
from resemb_pl.data.interactions import canonicalize
from resemb_pl.data.requests import read_requests
from resemb_pl.errors import CheckpointError, DataError
from resemb_pl.task import CTRTask

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="module")
def trained(quickstart_checkpoint):
    q = quickstart_checkpoint
    return q.root, q.ckpt.parent, q.cache


def vocabulary(path: Path) -> np.ndarray:
    """The original item ids of a checkpoint, as requests read them."""
    return Catalogue.from_checkpoint(load_checkpoint(path), str(path)).item_vocab


def _requests(dm: CTRDataModule) -> pd.DataFrame:
    """The test samples of ``dm`` as a requests table with original ids."""
    s, vocab = dm.samples("test"), dm.catalogue.item_vocab
    return pd.DataFrame({
        "user_id": s.user,
        "history": [list(vocab[s.history(i) - 1]) for i in range(len(s))],
        "item_id": vocab[s.target - 1],
    })


def test_predict_from_checkpoint_alone_equals_test(trained, tmp_path, monkeypatch):
    root, shared, cache = trained
    # A new user's folder of its own (other tests write beside the shared checkpoint, in any
    # order): the checkpoint and a requests file, nothing else.
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(shared / "model.ckpt", alone / "model.ckpt")
    ckpt = torch.load(alone / "model.ckpt", weights_only=True)
    hparams = {k: v for k, v in ckpt["datamodule_hyper_parameters"].items() if k[0] != "_"}
    dm = CTRDataModule(**hparams | {"cache_dir": cache})
    _requests(dm).to_parquet(alone / "requests.parquet")
    monkeypatch.setattr("sys.argv", ["resemb-pl"])

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


def test_unknown_ids_are_padding(trained, monkeypatch, capsys):
    _, alone, _ = trained
    vocab = vocabulary(alone / "model.ckpt")
    a, b, c = vocab[:3]
    pd.DataFrame({
        "history": [[a, b], [a, "unknown-1", b], [a, b], [a, b]],
        "item_id": [c, c, "unknown-2", vocab[-1]],
    }).to_parquet(alone / "unknown.parquet")
    monkeypatch.chdir(alone)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    main(["predict", "--ckpt_path=model.ckpt", "--data.path=unknown.parquet",
          "--data.output=out/unknown.parquet", *QUIET])
    assert "1 of 4 candidate ids and 1 of 9 history ids are unknown" in capsys.readouterr().err
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
    assert counts == {"rows": 2, "unknown_candidates": 1, "history_ids": 3, "unknown_history": 1,
                      "null_history": 0}


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
        vocabulary(bare)

    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", f"--data.path={file}"])
    assert exit_info.value.code == 2
    assert "--ckpt_path is required to score a requests file" in capsys.readouterr().err


VOCAB = np.array(["6", "7", "8", "a", "é"])


def _parquet(path: Path, **columns) -> Path:
    pd.DataFrame(columns).to_parquet(path)
    return path


@pytest.mark.parametrize(
    "candidates",
    [[6, 7, 8], [6.0, 7.0, 8.0], ["6", "7", "8"], np.array([6, 7, 8], dtype=np.uint8),
     pd.array([6, 7, 8], dtype="Int64")],
    ids=["int", "float", "str", "uint8", "nullable_int"],
)
def test_requests_ids_have_one_form_whatever_their_type(tmp_path, candidates):
    file = _parquet(tmp_path / "r.parquet", history=[[8], [], [7.0, 6]], item_id=candidates)
    samples, counts = read_requests(file, VOCAB)
    assert samples.target.tolist() == [1, 2, 3]
    assert samples.seq.tolist() == [3, 2, 1]
    assert counts["unknown_candidates"] == counts["unknown_history"] == 0


def test_requests_null_history_ids_are_dropped_and_counted(tmp_path, caplog):
    # An int column with a null is a float column: 6 must stay 6, not become "6.0".
    file = _parquet(tmp_path / "r.parquet", history=[[6, None, 7], [None], [], None],
                    item_id=[6.0, 7.0, 9.0, 8.0], user_id=["u", None, "u", "v"])
    with caplog.at_level(logging.INFO, logger="resemb_pl.data.requests"):
        samples, counts = read_requests(file, VOCAB)
    assert [samples.history(i).tolist() for i in range(4)] == [[1, 2], [], [], []]
    assert samples.target.tolist() == [1, 2, 0, 3]
    assert counts == {"rows": 4, "unknown_candidates": 1, "history_ids": 2, "unknown_history": 0,
                      "null_history": 2}
    assert "r.parquet: dropped 2 null id(s) from the histories" in caplog.text
    assert samples.user.tolist() == [0, 2, 0, 1]  # the null user is a group of its own


def test_requests_refuse_a_null_candidate_and_a_list_id(tmp_path):
    file = _parquet(tmp_path / "r.parquet", history=[[6], [7]], item_id=[6, None])
    with pytest.raises(DataError, match=r"r.parquet: column 'item_id' has a missing value at "
                                        r"row 1; every request needs a candidate item"):
        read_requests(file, VOCAB)
    file = _parquet(tmp_path / "l.parquet", history=[[6], [7]], item_id=[[6], [7, 8]])
    with pytest.raises(DataError, match=r"l.parquet: column 'item_id' holds a list at row 0, not"):
        read_requests(file, VOCAB)
    file = _parquet(tmp_path / "n.parquet", history=[[[6]], [[7]]], item_id=[6, 7])
    with pytest.raises(DataError, match=r"n.parquet: column 'history' holds a list at row 0, not"):
        read_requests(file, VOCAB)
    file = _parquet(tmp_path / "u.parquet", history=[[6]], item_id=[6], user_id=[["u"]])
    with pytest.raises(DataError, match=r"u.parquet: column 'user_id' holds a list at row 0"):
        read_requests(file, VOCAB)


def test_requests_with_no_rows_and_with_only_empty_histories(tmp_path):
    empty = pd.DataFrame({"history": pd.Series([], dtype=object),
                          "item_id": pd.Series([], dtype="int64")})
    empty.to_parquet(tmp_path / "e.parquet")
    samples, counts = read_requests(tmp_path / "e.parquet", VOCAB)
    assert len(samples) == counts["rows"] == 0
    file = _parquet(tmp_path / "c.parquet", history=[[], []], item_id=[7, 6])
    samples, counts = read_requests(file, VOCAB)
    assert samples.hist_len.tolist() == [0, 0]
    assert len(samples.seq) == 0
    assert samples.target.tolist() == [2, 1]
    batch = SampleDataset(samples, np.zeros(len(VOCAB) + 1, np.int64)).__getitems__([0, 1])
    assert batch["hist"].tolist() == [[0], [0]]  # all padding, no IndexError


def test_requests_csv_history_is_ids_separated_by_spaces(tmp_path):
    file = tmp_path / "r.csv"
    file.write_text("user_id,history,item_id\nu,6  7.0 8,8\nu,,6\nv,9,7\n", encoding="utf-8")
    samples, counts = read_requests(file, VOCAB)
    assert [samples.history(i).tolist() for i in range(3)] == [[1, 2, 3], [], [0]]
    assert samples.target.tolist() == [3, 1, 2]
    assert counts["unknown_history"] == 1
    file.write_text("history,item_id\né a,a\n7 é,6\n", encoding="utf-8")
    samples, _ = read_requests(file, VOCAB)  # text ids (with a number among them)
    assert [samples.history(i).tolist() for i in range(2)] == [[5, 4], [2, 5]]
    assert samples.target.tolist() == [4, 1]
    file.write_text('history,item_id\n"[6, 7]",8\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"r.csv: column 'history' row 0 is '\[6, 7\]'; in a csv, "
                                        r"a history is the item ids separated by spaces"):
        read_requests(file, VOCAB)


def test_float_trained_ids_match_integer_requests(tmp_path):
    # Training read the item ids from a float column (as an int column with a null becomes).
    frame = pd.DataFrame({"user_id": [1.0, 1.0, 2.0], "item_id": [6.0, 7.0, 8.0],
                          "timestamp": [1, 2, 1]})
    data = canonicalize(frame, category=None)
    vocab = np.asarray(data.item_vocab).astype(str)  # what the data module stores
    assert vocab.tolist() == ["6", "7", "8"]
    file = _parquet(tmp_path / "r.parquet", history=[[6, 7]], item_id=[8])
    samples, counts = read_requests(file, vocab)
    assert samples.seq.tolist() == [1, 2]
    assert samples.target.tolist() == [3]
    assert counts["unknown_candidates"] == counts["unknown_history"] == 0


def test_predict_cold_start_csv_and_no_rows(trained, monkeypatch):
    _, alone, _ = trained
    vocab = vocabulary(alone / "model.ckpt")
    history = [[], [], list(vocab[:3]), [vocab[4]]]
    candidates = [vocab[5], vocab[6], vocab[5], vocab[6]]
    tmp = alone / "cold"
    tmp.mkdir()
    monkeypatch.chdir(tmp)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    _parquet(tmp / "cold.parquet", history=history[:2], item_id=candidates[:2])
    _parquet(tmp / "mixed.parquet", history=history, item_id=candidates)
    pd.DataFrame({"history": [" ".join(h) for h in history], "item_id": candidates}).to_csv(
        tmp / "mixed.csv", index=False)
    scores = {}
    for name in ("cold.parquet", "mixed.parquet", "mixed.csv"):
        main(["predict", f"--ckpt_path={alone / 'model.ckpt'}", f"--data.path={name}",
              f"--data.output=p_{name}.parquet", *QUIET])
        scores[name] = pd.read_parquet(tmp / f"p_{name}.parquet")["probability"].to_numpy()
    cold = scores["cold.parquet"]
    assert len(cold) == 2
    assert np.isfinite(cold).all()
    assert ((cold > 0) & (cold < 1)).all()
    np.testing.assert_allclose(scores["mixed.parquet"][:2], scores["cold.parquet"], atol=1e-6)
    np.testing.assert_allclose(scores["mixed.csv"], scores["mixed.parquet"], atol=1e-6)

    # No rows: the output is an empty table, not the file of an earlier run.
    pd.DataFrame({"probability": [0.5, 0.5]}).to_parquet(tmp / "p_empty.parquet")
    pd.DataFrame({"history": pd.Series([], dtype=object),
                  "item_id": pd.Series([], dtype="int64")}).to_parquet(tmp / "empty.parquet")
    main(["predict", f"--ckpt_path={alone / 'model.ckpt'}", "--data.path=empty.parquet",
          "--data.output=p_empty.parquet", *QUIET])
    out = pd.read_parquet(tmp / "p_empty.parquet")
    assert list(out.columns) == ["probability"]
    assert len(out) == 0


def _old_format(ckpt: dict) -> dict:
    """A checkpoint as resemb-pl wrote it before the Catalogue (version 1): the vocabularies in
    ``resemb_vocab``, the item -> category table as the task's buffer ``item_category``."""
    entry = ckpt["resemb_vocab"]
    ckpt["resemb_vocab"] = {"items": entry["items"], "categories": entry["categories"]}
    ckpt["state_dict"]["item_category"] = entry["item_category"]
    return ckpt


def test_checkpoint_written_before_the_catalogue_still_scores(trained, tmp_path, monkeypatch):
    from resemb_pl.export import item_table, load_task

    _, alone, _ = trained
    new = torch.load(alone / "model.ckpt", weights_only=True)
    torch.save(_old_format(torch.load(alone / "model.ckpt", weights_only=True)),
               tmp_path / "old.ckpt")
    # Version 1 kept no item domains (synthetic data's true interests); the rest is the same.
    expected = dataclasses.replace(Catalogue.from_checkpoint(new), item_domain=None)
    assert Catalogue.from_checkpoint(load_checkpoint(tmp_path / "old.ckpt")) == expected
    vocab = vocabulary(alone / "model.ckpt")
    pd.DataFrame({"history": [list(vocab[:3]), [vocab[7]], []],
                  "item_id": [vocab[4], vocab[9], vocab[1]]}).to_parquet(tmp_path / "r.parquet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    scores = {}
    for name, ckpt in (("old", tmp_path / "old.ckpt"), ("new", alone / "model.ckpt")):
        main(["predict", f"--ckpt_path={ckpt}", "--data.path=r.parquet",
              f"--data.output={name}.parquet", *QUIET])
        scores[name] = pd.read_parquet(tmp_path / f"{name}.parquet")["probability"].to_numpy()
    np.testing.assert_array_equal(scores["old"], scores["new"])
    assert scores["new"].std() > 0
    old_task = load_task(tmp_path / "old.ckpt")
    assert "item_category" not in old_task.state_dict()
    assert old_task.catalogue == expected
    np.testing.assert_array_equal(item_table(old_task).embedding,
                                  item_table(load_task(alone / "model.ckpt")).embedding)


def test_checkpoint_of_another_catalogue_version_is_one_line(trained, tmp_path, monkeypatch,
                                                              capsys):
    _, alone, _ = trained
    ckpt = torch.load(alone / "model.ckpt", weights_only=True)
    ckpt["resemb_vocab"]["version"] = 99
    torch.save(ckpt, tmp_path / "future.ckpt")
    pd.DataFrame({"history": [[]], "item_id": ["x"]}).to_parquet(tmp_path / "r.parquet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["resemb-pl"])
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "--ckpt_path=future.ckpt", "--data.path=r.parquet", *QUIET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("resemb-pl: error: future.ckpt: its catalogue (resemb_vocab) is version "
                       "99; this resemb-pl reads versions 1 to 2")
