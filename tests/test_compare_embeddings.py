import csv
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "data" / "synthetic_tiny.yaml")


def load_compare():
    path = ROOT / "scripts" / "compare_embeddings.py"
    spec = importlib.util.spec_from_file_location("script_compare_embeddings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_writes_one_row_per_run_and_the_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the data config's default cache folder lands here
    out = tmp_path / "compare" / "tiny.csv"
    argv = ["--data", TINY, "--epochs", "1", "--embeddings", "plain", "att", "--seeds", "0",
            "--accelerator", "cpu", "--out", str(out)]
    assert load_compare().main(argv) == 0
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
    table = printed[printed.index("") + 1:]
    assert table[0].split() == ["embedding", "n", "auc", "gauc", "logloss"]
    for line, r in zip(table[1:], rows, strict=True):
        words = line.split()
        assert words[:2] == [r["embedding"], "1"]
        # one seed: each metric is its value ± 0
        assert words[2:] == [w for k in ("auc", "gauc", "logloss")
                             for w in (f"{float(r[k]):.4f}", "±", "0.0000")]


def test_compare_bad_data_config_is_one_line_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: synthetic\nno_such_argument: 1\n")
    out = tmp_path / "out.csv"
    assert load_compare().main(["--data", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare_embeddings: error:")
    assert "no_such_argument" in err
    assert "\n" not in err
    assert not out.exists()
