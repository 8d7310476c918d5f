"""The protocol of issue "The paper's claim at convergence" on one data set, resumable.

    python scripts/convergence.py --data configs/data/movielens_100k.yaml \
        --title MovieLens-100K --out reports/convergence/movielens_100k \
        --trainer.max_epochs 40

Three stages, each a ``resemb-pl compare`` that trains only the runs its ``results.csv`` lacks,
so the same command resumes where it stopped and a wider grid trains only the new values:

1. ``models/``: one DIN model config per family and value: ``din_plain``, ``din_l2_<λ>`` (table
   L2), ``din_mba_<λ>`` (DIN's mini-batch aware L2) and ``din_<conv>_<λ>`` res-embeddings.
2. ``tuning/``: every config on ``--tune-seed``; each family's value with the best validation
   AUC is chosen (``tuning/chosen.md``). Test metrics are never used to choose. With
   ``--extend N``, a family whose best value is the edge of its grid gets the next value
   (ten times beyond) and is tuned again, up to N times.
3. ``final/``: plain and the chosen configs over ``--seeds``; ``summary.md`` / ``summary.csv``
   tabulate mean ± std of test AUC, GAUC and logloss, RelaImpr against plain and against the
   best regularised plain (L2 or MBA, whichever has the higher mean validation AUC), the seeds
   won against it and the epochs each run took.

``--collect reports/convergence`` then writes ``reports/convergence/summary.md``: one row per
data set (plain, the best regularised plain, each res-embedding, the best res-embedding by
validation AUC against that baseline).

Every run early-stops on ``val/auc`` after ``--patience`` validations without improvement and is
tested at its best-validation checkpoint; other ``--trainer.*``, ``--data.*`` and ``--model.*``
options go to every run (the cap, ``--trainer.val_check_interval 0.5``, a batch size).
"""

from __future__ import annotations

import csv
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resemb_pl.atomic import atomic_open  # noqa: E402
from resemb_pl.boundary import ArgumentParser, command_boundary  # noqa: E402
from resemb_pl.compare import compare, parse_args  # noqa: E402
from resemb_pl.errors import ConfigError  # noqa: E402
from resemb_pl.experiments.grid import append_command  # noqa: E402
from resemb_pl.experiments.tables import compare_table, mean_std, write_table  # noqa: E402

#: The res-embedding families and their PyG layer.
CONVS = {"avg": "MeanConv", "gcn": "GCNNormConv", "att": "DotAttentionConv"}
REGULARISED = ("l2", "mba")

HEAD = """\
# issue 18 tuning on {title}: {name}
embedding_dim: 18
backbone: {{class_path: resemb_pl.nn.models.DIN}}
embedding:
"""
TAIL = """\
optimizer:
  class_path: torch.optim.Adam
  init_args: {lr: 0.001, fused: true}
"""
PLAIN = "  class_path: resemb_pl.nn.PlainEmbedding\n"
EMBEDDING = {
    "plain": PLAIN,
    "l2": PLAIN + "  init_args: {{l2: {value}, l2_mode: table}}\n",
    "mba": PLAIN + "  init_args: {{l2: {value}, l2_mode: mba}}\n",
    "res": ("  class_path: resemb_pl.nn.ResEmbedding\n  init_args:\n"
            "    conv: {{class_path: resemb_pl.nn.conv.{conv}}}\n    residual_l2: {value}\n"),
}


def model_text(title: str, family: str, value: str | None) -> tuple[str, str]:
    """The name and YAML text of one model config of ``family`` with coefficient ``value``."""
    name = "din_plain" if family == "plain" else f"din_{family}_{value}"
    kind = "res" if family in CONVS else family
    body = EMBEDDING[kind].format(value=value, conv=CONVS.get(family))
    return name, HEAD.format(title=title, name=name) + body + TAIL


def write_models(out: Path, title: str, grid: dict[str, list[str]]) -> dict[str, list[Path]]:
    """Write ``out/models/*.yaml`` (unchanged files are not rewritten); paths per family."""
    paths: dict[str, list[Path]] = {}
    for family, values in grid.items():
        for value in values:
            name, text = model_text(title, family, value)
            path = out / "models" / f"{name}.yaml"
            if not path.is_file() or path.read_text() != text:
                with atomic_open(path, "w") as fh:
                    fh.write(text)
            paths.setdefault(family, []).append(path)
    return paths


def read_rows(folder: Path, name: str = "results.csv") -> list[dict[str, str]]:
    with open(folder / name, newline="") as fh:
        return list(csv.DictReader(fh))


def reuse_tuning(tuning: Path, final: Path, names: set[str], seed: int) -> None:
    """Copy the tuning runs of the chosen ``names`` on ``seed`` into ``final``'s results.

    They are the same runs (same configs, settings and seed), so the final stage trains only
    the other seeds. Nothing is copied into a final folder made with other settings (compare
    refuses to resume it anyway) or that has the runs already.
    """
    settings = (tuning / "results.settings.json").read_text()
    target = final / "results.settings.json"
    if target.is_file() and target.read_text() != settings:
        return
    rows = read_rows(final) if (final / "results.csv").is_file() else []
    done = {r["cell"] for r in rows}
    new = [r for r in read_rows(tuning)
           if r["model"] in names and int(r["seed"]) == seed and r["cell"] not in done]
    if not new:
        return
    final.mkdir(parents=True, exist_ok=True)
    with atomic_open(target, "w") as fh:
        fh.write(settings)
    fields = list(dict.fromkeys(k for r in rows + new for k in r))
    with atomic_open(final / "results.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fields)
        writer.writeheader()
        writer.writerows(rows + new)


def extend(grid: dict[str, list], chosen: dict[str, str]) -> dict[str, list]:
    """``grid`` with one more value, ten times beyond, for each family whose chosen value is
    the largest or smallest of its values (an optimum at the edge is not known to be one)."""
    wider = {}
    for family, values in grid.items():
        wider[family] = list(values)
        if family == "plain" or len(values) < 2:
            continue
        value = chosen[family].split("_", 2)[2]
        numbers = sorted(float(v) for v in values)
        if float(value) == numbers[-1]:
            wider[family].append(f"{numbers[-1] * 10:g}")
        elif float(value) == numbers[0]:
            wider[family].insert(0, f"{numbers[0] / 10:g}")
    return wider


def choose(rows: list[dict[str, str]], paths: dict[str, list[Path]]) -> tuple[dict, list[dict]]:
    """Each family's config with the best validation AUC, and the table of ``chosen.md``."""
    val = {r["model"]: float(r["best_val_auc"]) for r in rows}
    test = {r["model"]: float(r["auc"]) for r in rows}
    chosen, table = {}, []
    for family, fam_paths in paths.items():
        best = max(fam_paths, key=lambda p: val[p.stem])
        chosen[family] = best
        table.append({"family": family, "chosen": best.stem,
                      "validation AUC (test AUC)": " · ".join(
                          f"{p.stem}: {val[p.stem]:.4f} ({test[p.stem]:.4f})" for p in fam_paths)})
    return chosen, table


def summary(rows: list[dict[str, str]], names: list[str], seeds: list[int]) -> list[dict]:
    """The final table: against plain, against the best regularised plain, epochs."""
    val = {n: mean_std(r["best_val_auc"] for r in rows if r["model"] == n)[0] for n in names}
    regularised = [n for n in names if n.split("_")[1] in REGULARISED]
    best_reg = max(regularised, key=val.__getitem__) if regularised else None
    vs_plain = compare_table(rows, names, seeds)
    vs_reg = compare_table(rows, names, seeds, baseline=best_reg) if best_reg else vs_plain
    table = []
    for a, b in zip(vs_plain, vs_reg, strict=True):
        name = a["model"]
        entry = {"model": name, "runs": a["n"], "val AUC": f"{val[name]:.4f}",
                 "test AUC": a["auc"], "test GAUC": a["gauc"], "test logloss": a["logloss"],
                 "RelaImpr vs plain": _pct(a["rela_impr"]),
                 "seeds won vs plain": seeds_won(rows, name, names[0], seeds)}
        if best_reg:
            entry[f"RelaImpr vs {best_reg}"] = _pct(b["rela_impr"])
            entry[f"seeds won vs {best_reg}"] = seeds_won(rows, name, best_reg, seeds)
        entry["epochs"] = "/".join(str(r["epochs"]) for r in rows if r["model"] == name)
        table.append(entry)
    return table


def seeds_won(rows: list[dict[str, str]], name: str, base: str, seeds: list[int]) -> str:
    """``"w/n AUC, w/n GAUC"``: the seeds, among the ``n`` both ran, where ``name`` tests
    higher than ``base``; ``–`` for the baseline itself."""
    if name == base:
        return "–"
    score = {(r["model"], int(r["seed"]), m): float(r[m]) for r in rows for m in ("auc", "gauc")}
    paired = [s for s in seeds if (name, s, "auc") in score and (base, s, "auc") in score]
    return ", ".join(
        f"{sum(score[(name, s, m)] > score[(base, s, m)] for s in paired)}/{len(paired)} {label}"
        for m, label in (("auc", "AUC"), ("gauc", "GAUC")))


def _pct(value: float | None) -> str:
    return "baseline" if value is None else f"{value:+.2f}%"


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="convergence", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, help="a data config")
    p.add_argument("--title", help="the data set's name in the configs' header")
    p.add_argument("--out", type=Path, help="reports/convergence/<data set>")
    p.add_argument("--l2", nargs="*", default=["0.1", "1", "10"], help="table L2 values")
    p.add_argument("--mba", nargs="*", default=["0.1", "1", "10"], help="MBA values")
    p.add_argument("--res", nargs="*", default=["0.006", "1", "100"],
                   help="residual_l2 values of every res-embedding family")
    p.add_argument("--convs", nargs="*", default=list(CONVS), choices=list(CONVS))
    p.add_argument("--tune-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--patience", type=int, default=2)
    p.add_argument("--extend", type=int, default=0, metavar="N",
                   help="up to N times, add a value beyond the edge of each family's grid "
                        "where its best value lies, and tune again (default 0)")
    p.add_argument("--tune-only", action="store_true", help="stop after the tuning stage")
    p.add_argument("--collect", type=Path, metavar="ROOT",
                   help="instead: one row per data set from ROOT/*/summary.csv into "
                        "ROOT/summary.md")
    return p


def run(argv: list[str]) -> list[dict] | None:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.collect:
        return collect(args.collect)
    for key in ("data", "title", "out"):
        if getattr(args, key) is None:
            parser.error(f"--{key} is required (or --collect)")
    parse_args(["--data", str(args.data), "--models", "-", *extra])  # bad extras: nothing written
    if args.extend < 0:
        raise ConfigError(f"--extend: must be >= 0, got {args.extend}")
    for values, key in ((args.l2, "--l2"), (args.mba, "--mba"), (args.res, "--res")):
        for value in values:
            try:
                if float(value) <= 0:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"{key}: values must be positive numbers, got {value!r}"
                                  ) from None
    grid = {"plain": [None], "l2": args.l2, "mba": args.mba,
            **dict.fromkeys(args.convs, args.res)}
    grid = {k: v for k, v in grid.items() if v}
    append_command(args.out, shlex.join(["python", "scripts/convergence.py", *argv]))
    common = ["--data", str(args.data), "--patience", str(args.patience), *extra]
    tuning = args.out / "tuning"
    for _ in range(args.extend + 1):
        paths = write_models(args.out, args.title, grid)
        everything = [str(p) for fam in paths.values() for p in fam]
        compare(["--models", *everything, "--seeds", str(args.tune_seed), "--out", str(tuning),
                 *common])
        chosen, table = choose(read_rows(tuning), paths)
        wider = extend(grid, {family: p.stem for family, p in chosen.items()})
        if wider == grid:
            break
        grid = wider
    write_table(tuning / "chosen.md", table, list(table[0]),
                f"{args.title}: tuning on seed {args.tune_seed}, chosen by validation AUC")
    if args.tune_only:
        return None
    final = args.out / "final"
    if args.tune_seed in args.seeds:
        reuse_tuning(tuning, final, {p.stem for p in chosen.values()}, args.tune_seed)
    names = [str(p) for p in chosen.values()]
    compare(["--models", *names, "--seeds", *map(str, args.seeds), "--out", str(final),
             *common])
    rows = read_rows(final)
    table = summary(rows, [p.stem for p in chosen.values()], args.seeds)
    title = (f"{args.title} at convergence: test metrics of the best-validation checkpoint, "
             f"mean ± std over seeds {' '.join(map(str, args.seeds))}")
    write_table(args.out / "summary.md", table, list(table[0]), title)
    with open(args.out / "summary.md") as fh:
        print(fh.read())
    return table


def collect(root: Path) -> list[dict]:
    """One row per ``root/<data set>/summary.csv``: plain, the best regularised plain and each
    res-embedding (test AUC mean ± std), and the best res-embedding against that baseline."""
    table = []
    for path in sorted(root.glob("*/summary.csv")):
        rows = read_rows(path.parent, "summary.csv")
        family = {r["model"].split("_")[1]: r for r in rows}
        base = next((k for k in rows[0] if k.startswith("RelaImpr vs din_")), None)
        reg = base.removeprefix("RelaImpr vs ") if base else None
        entry = {"data set": path.parent.name, "runs per model": rows[0]["runs"],
                 "plain": family["plain"]["test AUC"],
                 "best regularised plain": (f"{reg.removeprefix('din_')}: "
                                            + next(r["test AUC"] for r in rows
                                                   if r["model"] == reg)) if reg else "–"}
        res = [r for r in rows if r["model"].split("_")[1] in CONVS]
        for conv in CONVS:
            r = family.get(conv)
            entry[conv.upper()] = f"λ={r['model'].split('_')[2]}: {r['test AUC']}" if r else "–"
        if res:
            best = max(res, key=lambda r: float(r["val AUC"]))
            entry["best res (by val AUC) vs plain"] = (
                f"{best['model']}: {best['RelaImpr vs plain']}, won {best['seeds won vs plain']}")
            if reg:
                entry["vs regularised"] = (f"{best[base]}, won {best[f'seeds won vs {reg}']}")
        table.append(entry)
    if table:
        columns = list(dict.fromkeys(k for r in table for k in r))
        write_table(root / "summary.md", table, columns,
                    "At convergence: test AUC (mean ± std over seeds) of each data set's "
                    "chosen settings")
    return table


@command_boundary("convergence")
def main(argv: list[str] | None = None) -> None:
    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
