"""README's recipe "Add an experiment": a toy experiment outside the package, on the public helpers.

The toy below is what ``scripts/<name>.py`` holds: the plain embedding at several dimensions,
with the size of its table as an extra column. It is run on the tiny preset; its table, its
resume and its one-line errors are checked.
"""

import argparse
import csv
from pathlib import Path

import pytest

from resemb_pl.experiments import (
    add_pm,
    cell_model,
    check_names,
    fit_and_test,
    run_script,
    script_parser,
    setup,
    summarize,
    write_table,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "configs" / "data" / "synthetic_small.yaml")
COLUMNS = ("auc", "embedding_params", "num_items")
TRAINED: list[str] = []  # the cells the toy trained, in order


# -- the toy experiment: scripts/toy_dims.py ---------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Toy: the plain embedding at several dimensions."""
    p = script_parser(main.__doc__, seeds=1, epochs=1)
    p.add_argument("--embeddings", nargs="+", default=["plain"])
    p.add_argument("--dims", type=int, nargs="+", default=[4, 8])
    return run_script("toy_dims", p, argv, run)


def run(args: argparse.Namespace) -> None:
    check_names(embeddings=args.embeddings)  # an unknown name fails before any training
    s = setup(args, "toy_dims")
    cells = [{"embedding": e, "dim": d, "seed": seed}
             for e in args.embeddings for d in args.dims for seed in args.seeds]

    def train(cell: dict) -> dict:
        TRAINED.append(f"{cell['embedding']}-{cell['dim']}")
        return fit_and_test(s.data, cell_model(args, cell), cell["seed"], s.budget,
                            on_tested=lambda task, dm: {"num_items": dm.num_items})

    rows = s.grid().run(cells, train)
    table = summarize(rows, ["embedding", "dim"], COLUMNS)
    add_pm(table, ["auc"])
    write_table(s.out_dir / "toy_dims", table, ["embedding", "dim", "n", *COLUMNS[:1],
                                                 "embedding_params_mean", "num_items_mean"],
                f"Toy on {s.dataset}: the plain embedding by dimension")


# -- its test -----------------------------------------------------------------------------------
def tiny(tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", DATA, "--preset", "tiny", "--cache-dir", str(tmp_path / "cache"),
            "--limit-train-batches", "2", "--limit-val-batches", "1", "--accelerator", "cpu",
            "--out", str(tmp_path / "reports"), *extra]


def read(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_toy_experiment_writes_its_table_and_resumes(tmp_path, capsys):
    TRAINED.clear()
    assert main(tiny(tmp_path)) == 0
    assert TRAINED == ["plain-4", "plain-8"]
    out = tmp_path / "reports" / "toy_dims" / "synthetic_tiny"
    results = read(out / "results.csv")
    assert [(r["embedding"], r["dim"], r["seed"]) for r in results] == [
        ("plain", "4", "0"), ("plain", "8", "0")]

    table = read(out / "toy_dims.csv")
    assert [(t["embedding"], t["dim"], t["n"]) for t in table] == [
        ("plain", "4", "1"), ("plain", "8", "1")]
    for t, r in zip(table, results, strict=True):
        # one seed: the table's AUC is the run's, ± 0; the plain table has num_items + 1 rows
        assert t["auc"] == f"{float(r['auc']):.4f} ± 0.0000"
        assert 0 < float(r["auc"]) < 1
        items = int(float(t["num_items_mean"]))
        assert items > 0
        assert float(t["embedding_params_mean"]) == (items + 1) * int(t["dim"])
    md = (out / "toy_dims.md").read_text().splitlines()
    assert md[0] == "# Toy on synthetic_tiny: the plain embedding by dimension"
    assert md[2] == "| embedding | dim | n | auc | embedding_params_mean | num_items_mean |"

    # The same command again trains nothing; one more dimension trains only that cell.
    TRAINED.clear()
    assert main(tiny(tmp_path)) == 0
    assert TRAINED == []
    assert main(tiny(tmp_path, "--dims", "4", "8", "2")) == 0
    assert TRAINED == ["plain-2"]
    assert "2 of 3 cells already done, skipping them" in capsys.readouterr().out
    assert [t["dim"] for t in read(out / "toy_dims.csv")] == ["4", "8", "2"]
    assert len((out / "command.txt").read_text().splitlines()) == 3


@pytest.mark.parametrize(("extra", "message"), [
    (["--embeddings", "sage"], "toy_dims: error: unknown embedding 'sage'; choose from plain"),
    (["--epochs", "0"], "toy_dims: error: --epochs"),
    (["--dims", "four"], "toy_dims: error: argument --dims: invalid int value: 'four'"),
])
def test_toy_experiment_bad_input_is_one_line_before_any_training(tmp_path, capsys, extra,
                                                                   message):
    TRAINED.clear()
    assert main(tiny(tmp_path, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message)
    assert "\n" not in err
    assert TRAINED == []
    assert not (tmp_path / "reports" / "toy_dims").exists()
