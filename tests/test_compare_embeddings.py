import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "data" / "synthetic_tiny.yaml")


@pytest.fixture
def deterministic_undone(monkeypatch):
    """The script trains with ``deterministic: true`` on a CPU, which Lightning sets for the
    whole process (torch's flag and ``CUBLAS_WORKSPACE_CONFIG``); put both back afterwards."""
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # monkeypatch restores it
    before = (torch.are_deterministic_algorithms_enabled(),
              torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


@pytest.mark.usefixtures("deterministic_undone")
def test_compare_writes_one_row_per_run_and_the_summary(tmp_path, monkeypatch, capsys,
                                                        load_script):
    monkeypatch.chdir(tmp_path)  # the data config's default cache folder lands here
    out = tmp_path / "compare" / "tiny.csv"
    argv = ["--data", TINY, "--epochs", "1", "--embeddings", "plain", "att", "--seeds", "0",
            "--accelerator", "cpu", "--out", str(out)]
    assert load_script("compare_embeddings").main(argv) == 0
    with open(out, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["embedding", "seed", "auc", "gauc", "logloss"]
    assert [(r["embedding"], r["seed"]) for r in rows] == [("plain", "0"), ("att", "0")]
    for r in rows:
        assert 0.0 < float(r["auc"]) < 1.0
        assert 0.0 < float(r["gauc"]) < 1.0
        assert 0.0 < float(r["logloss"]) < 5.0
    printed = capsys.readouterr().out.splitlines()
    table = printed[-3:]  # the summary ends the output
    assert table[0].split() == ["embedding", "n", "auc", "gauc", "logloss"]
    for line, r in zip(table[1:], rows, strict=True):
        words = line.split()
        assert words[:2] == [r["embedding"], "1"]
        # one seed: each metric is its value ± 0
        assert words[2:] == [w for k in ("auc", "gauc", "logloss")
                             for w in (f"{float(r[k]):.4f}", "±", "0.0000")]
    # the runs went through `resemb-pl compare`: its folder beside the CSV, resumable
    folder = tmp_path / "compare" / "tiny"
    assert sorted(p.name for p in (folder / "models").iterdir()) == ["att.yaml", "plain.yaml"]
    with open(folder / "results.csv", newline="") as fh:
        done = {(r["model"], r["seed"]): r for r in csv.DictReader(fh)}
    for r in rows:
        assert float(done[(r["embedding"], "0")]["auc"]) == pytest.approx(float(r["auc"]))
    assert "| plain | 1 |" in (folder / "compare.md").read_text()


def test_compare_bad_data_config_is_one_line_and_writes_nothing(tmp_path, capsys, load_script):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: synthetic\nno_such_argument: 1\n")
    out = tmp_path / "out.csv"
    assert load_script("compare_embeddings").main(["--data", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare_embeddings: error:")
    assert "no_such_argument" in err
    assert "\n" not in err
    assert not out.exists()
    assert not out.with_suffix("").exists()


@pytest.mark.usefixtures("deterministic_undone")
def test_compare_killed_then_rerun_trains_only_the_missing_cells(tmp_path, monkeypatch, capsys,
                                                                 load_script):
    out = tmp_path / "compare" / "tiny.csv"
    argv = ["--data", TINY, "--epochs", "1", "--embeddings", "plain", "att", "--seeds",
            "0", "--accelerator", "cpu", "--out", str(out)]
    results = tmp_path / "compare" / "tiny" / "results.csv"

    # The script in its own process, killed once its first cell is in results.csv.
    log = tmp_path / "killed.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "compare_embeddings.py"),
                                 *argv], cwd=tmp_path, stdout=fh, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not (results.exists() and read_rows(results)):
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "the first cell did not finish in time"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = read_rows(results)
    assert len(before) == 1
    assert not out.exists()  # the summary CSV comes only after the whole grid

    # The same command again: the finished cells are kept as they were, the others train.
    monkeypatch.chdir(tmp_path)
    assert load_script("compare_embeddings").main(argv) == 0
    assert "1 of 2 cells already done, skipping them" in capsys.readouterr().out
    rows = read_rows(results)
    assert [(r["model"], r["seed"]) for r in rows] == [("plain", "0"), ("att", "0")]
    assert rows[0] == before[0]
    summary = read_rows(out)
    assert [r["embedding"] for r in summary] == ["plain", "att"]
    for r, done in zip(summary, rows, strict=True):
        assert float(r["auc"]) == pytest.approx(float(done["auc"]), abs=1e-6)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
