"""Generated tables and requests through the real command (``resemb_pl.cli.main``, in process).

Each generated run either succeeds with a correct result (a checkpoint whose vocabulary is the
table's ids in their one form; one probability per request row, in request order, with the
unknown and null ids counted as the test expects) or ends with exactly one
``resemb-pl: error:`` line and exit code 2, without a traceback and without changing any file
but its intended output. Ids and times come in every type (int, float with nulls, string,
bool, datetime, lists), with empty and duplicate rows, empty histories and unicode, written as
parquet or csv.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from resemb_pl.cli import main

SETTINGS = settings(max_examples=20, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
QUIET = ["--trainer.logger=false", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu"]
WORDS = ["a", "é", "日本", "x y", "6", "Ω-1", "zz", "007"]
DATES = pd.date_range("2024-01-01", periods=8, freq="h")


@contextlib.contextmanager
def chdir(path: str | Path):
    """``contextlib.chdir`` (Python 3.11) for Python 3.10."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run(args: list[str]) -> tuple[int, str]:
    """Run the command in process; return its exit code and its stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    return code, err.getvalue()


def outcome(code: int, stderr: str) -> None:
    """Count the kinds of outcome (``--hypothesis-show-statistics``): success or which error."""
    errors = [line for line in stderr.splitlines() if line.startswith("resemb-pl: error:")]
    reason = errors[0].rsplit(": ", 1)[-1] if errors else ""
    event("ok" if code == 0 else re.sub(r"[0-9'\"].*", "", reason)[:40])


def assert_one_error_line(code: int, stderr: str, *words: str) -> str:
    assert code == 2, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("resemb-pl: error:")]
    assert len(errors) == 1, stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def id_value(kind: str, j: int) -> object:
    """The ``j``-th id of a column of ``kind``."""
    return {"int": j, "float": float(j), "str": WORDS[j % len(WORDS)], "bool": j % 2 == 0,
            "datetime": DATES[j % len(DATES)], "list": [j, j + 1]}[kind]


def id_key(kind: str, j: int) -> str:
    """The one form in which the model must know id ``j`` of a column of ``kind`` (parquet)."""
    return {"int": str(j), "float": str(j), "str": WORDS[j % len(WORDS)],
            "bool": str(j % 2 == 0), "datetime": str(DATES[j % len(DATES)])}[kind]


# -- fit on generated interactions tables ---------------------------------------------------------
@dataclass
class Table:
    frame: pd.DataFrame
    fmt: str
    user_kind: str
    item_kind: str
    time_kind: str
    item_keys: set = field(default_factory=set)
    null_in: str | None = None


@st.composite
def tables(draw) -> Table:
    user_kind = draw(st.sampled_from(["int", "float", "str", "bool", "datetime", "list"]))
    item_kind = draw(st.sampled_from(["int", "float", "str", "datetime", "list"]))
    time_kind = draw(st.sampled_from(["int", "float", "datetime", "iso", "list"]))
    per_user = draw(st.lists(st.integers(0, 7), min_size=1, max_size=4))
    rows = []
    for u, count in enumerate(per_user):
        for _ in range(count):
            j = draw(st.integers(0, 7))
            t = draw(st.integers(0, 40)) / 10  # fractions of a second: the order within one
            time = {"int": int(t * 10), "float": t, "list": [t],
                    "datetime": DATES[0] + pd.Timedelta(seconds=t),
                    "iso": (DATES[0] + pd.Timedelta(seconds=t)).isoformat()}[time_kind]
            rows.append((id_value(user_kind, u), id_value(item_kind, j), time, j))
    if rows and draw(st.booleans()):  # duplicate events
        rows += draw(st.lists(st.sampled_from(rows), max_size=3))
    rows = draw(st.permutations(rows))
    frame = pd.DataFrame({
        "user_id": pd.Series([r[0] for r in rows], dtype=object),
        "item_id": pd.Series([r[1] for r in rows], dtype=object),
        "timestamp": pd.Series([r[2] for r in rows], dtype=object),
    })
    keys = {id_key(item_kind, r[3]) for r in rows} if item_kind != "list" else set()
    table = Table(frame, draw(st.sampled_from(["parquet", "csv"])), user_kind, item_kind,
                  time_kind, keys)
    if rows and draw(st.integers(0, 4)) == 0:  # a null in one column
        table.null_in = draw(st.sampled_from(["user_id", "item_id", "timestamp"]))
        frame.loc[draw(st.integers(0, len(rows) - 1)), table.null_in] = None
    if draw(st.booleans()):
        frame["category_id"] = draw(st.lists(st.sampled_from([1, 2, None, "c"]),
                                             min_size=len(rows), max_size=len(rows)))
    if draw(st.booleans()):
        frame["rating"] = draw(st.lists(st.sampled_from([1.0, 4.5, 5]), min_size=len(rows),
                                        max_size=len(rows)))
    for col in ("user_id", "item_id", "timestamp"):  # the column types pandas would give
        frame[col] = frame[col].infer_objects()
    return table


def write_table(table: Table, path: Path) -> None:
    if table.fmt == "csv":
        table.frame.to_csv(path, index=False)
    else:
        frame = table.frame.copy()
        for col in ("category_id",):
            if col in frame:
                frame[col] = frame[col].astype(str)
        frame.to_parquet(path)


@SETTINGS
@given(table=tables())
def test_fit_on_generated_tables(table):
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        root = Path(tmp)
        path = root / f"events.{table.fmt}"
        write_table(table, path)
        before = snapshot(root)
        code, stderr = run([
            "fit", "--data.source=interactions", f"--data.path={path}", "--data.cache_dir=cache",
            "--data.top_k=1", "--data.max_len=4", "--data.batch_size=8", "--model.embedding_dim=4",
            "--model.embedding=resemb_pl.nn.ResEmbedding",
            "--model.embedding.init_args.conv=resemb_pl.nn.conv.GCNNormConv",
            "--trainer.max_steps=2", "--trainer.num_sanity_val_steps=0",
            "--trainer.default_root_dir=run", "--seed_everything=0", *QUIET,
        ])
        outcome(code, stderr)
        after = snapshot(root)
        assert {k: v for k, v in after.items() if k in before} == before  # the input is intact
        checkpoints = sorted(root.glob("run/**/*.ckpt"))
        parquet_lists = table.fmt == "parquet" and len(table.frame) > 0 and "list" in (
            table.user_kind, table.item_kind, table.time_kind)
        if code == 0:
            assert "Traceback" not in stderr
            assert not parquet_lists, stderr[-3000:]
            assert table.null_in is None, stderr[-3000:]
            assert len(checkpoints) == 1
            vocab = torch.load(checkpoints[0], weights_only=True)["resemb_vocab"]["items"]
            if table.fmt == "parquet":
                assert set(vocab) == table.item_keys
            assert len(set(vocab)) == len(vocab)
        else:
            line = assert_one_error_line(code, stderr)
            if parquet_lists:
                assert "holds a list" in line or "missing" in line, line
            assert checkpoints == []
            # No run folder; at most the processed data, cached whole before a stage refused it.
            new = [k for k in after if k not in before]
            assert all(k.startswith("cache/") for k in new), new


# -- predict generated requests -----------------------------------------------------------------
KNOWN = list(range(10, 16))  # the item ids of the trained checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A model trained on 4 users x 6 events over items 10..15 (int ids)."""
    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame([(u, int(i), t) for u in range(4)
                          for t, i in enumerate(rng.choice(KNOWN, 5, replace=False))],
                         columns=["user_id", "item_id", "timestamp"])
    frame.to_parquet(root / "events.parquet")
    with chdir(root):
        code, stderr = run(["fit", "--data.source=interactions", "--data.path=events.parquet",
                            "--data.cache_dir=null", "--data.top_k=1", "--model.embedding_dim=4",
                            "--trainer.max_steps=3", "--trainer.default_root_dir=run",
                            "--trainer.num_sanity_val_steps=0", *QUIET])
    assert code == 0, stderr[-3000:]
    (ckpt,) = root.glob("run/**/*.ckpt")
    return ckpt


@dataclass
class Requests:
    frame: pd.DataFrame
    fmt: str
    csv_lists: bool  # a csv whose history cells are Python lists (refused)
    unknown_candidates: int
    history_ids: int
    unknown_history: int
    null_history: int
    null_candidate: int | None
    parquet_lists: bool


@st.composite
def requests(draw) -> Requests:
    fmt = draw(st.sampled_from(["parquet", "csv"]))
    cand_kind = draw(st.sampled_from(["int", "float", "str", "bool", "datetime", "list"]))
    hist_kind = draw(st.sampled_from(["int", "float", "str", "empty"]
                                     + (["nested"] if fmt == "parquet" else [])))
    csv_lists = fmt == "csv" and draw(st.integers(0, 3)) == 0
    rows = draw(st.integers(0, 6))
    unknown = {"int": 99, "float": 99.5}

    def one_id(kind: str, known: bool) -> tuple[object, bool]:
        j = draw(st.sampled_from(KNOWN))
        if kind in ("bool", "datetime", "list"):
            return id_value(kind, j), False
        if not known:
            return (draw(st.sampled_from(["x", "é", "日本"])) if kind == "str"
                    else unknown[kind]), False
        return {"int": j, "float": float(j), "str": str(j)}[kind], True

    cands, hists = [], []
    unknown_candidates, null_candidate = 0, None
    for r in range(rows):
        value, known = one_id(cand_kind, draw(st.booleans()))
        if cand_kind in ("int", "float", "str") and draw(st.integers(0, 9)) == 0:
            value = None
            null_candidate = r if null_candidate is None else null_candidate
        unknown_candidates += not known
        cands.append(value)
        if hist_kind == "nested":
            hists.append([([j], True) for j in draw(st.lists(st.sampled_from(KNOWN), min_size=1,
                                                              max_size=2))])
            continue
        history = []
        for _ in range(0 if hist_kind == "empty" else draw(st.integers(0, 4))):
            if fmt == "parquet" and draw(st.integers(0, 5)) == 0:
                history.append((None, None))  # a null id
                continue
            value, known = one_id(hist_kind, draw(st.booleans()))
            if fmt == "csv" and hist_kind == "str" and not known:
                value = "x"  # a csv token has no spaces
            history.append((value, known))
        if fmt == "parquet" and draw(st.integers(0, 9)) == 0:
            history = None  # a null cell: no history
        hists.append(history)
    ids = [(v, k) for h in hists if h for v, k in h]
    counts = {"history_ids": sum(v is not None for v, _ in ids),
              "unknown_history": sum(v is not None and not k for v, k in ids),
              "null_history": sum(v is None for v, _ in ids)}
    hists = [None if h is None else [v for v, _ in h] for h in hists]
    frame = pd.DataFrame({"history": pd.Series(hists, dtype=object),
                          "item_id": pd.Series(cands, dtype=object).infer_objects()})
    if draw(st.booleans()):
        frame["user_id"] = draw(st.lists(st.sampled_from(["u", "v", "ü"]), min_size=rows,
                                         max_size=rows))
    if fmt == "csv" and not csv_lists:
        frame["history"] = [" ".join(map(str, h)) if h else "" for h in hists]
    parquet_lists = fmt == "parquet" and (cand_kind == "list" or hist_kind == "nested")
    return Requests(frame, fmt, csv_lists and rows > 0, unknown_candidates=unknown_candidates,
                    null_candidate=null_candidate, parquet_lists=parquet_lists and rows > 0,
                    **counts)


def write_requests(req: Requests, path: Path, reverse: bool = False) -> None:
    frame = req.frame.iloc[::-1].reset_index(drop=True) if reverse else req.frame
    if req.fmt == "csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)


def predict(ckpt: Path, path: Path, output: Path) -> tuple[int, str]:
    return run(["predict", f"--ckpt_path={ckpt}", f"--data.path={path}",
                f"--data.output={output}", "--trainer.default_root_dir=run", *QUIET])


@SETTINGS
@given(req=requests())
def test_predict_generated_requests(checkpoint, req):
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp):
        root = Path(tmp)
        path, output = root / f"requests.{req.fmt}", root / "out.parquet"
        write_requests(req, path)
        pd.DataFrame({"probability": [-1.0] * 3}).to_parquet(output)  # an earlier run's
        before = snapshot(root)
        code, stderr = predict(checkpoint, path, output)
        outcome(code, stderr)
        after = snapshot(root)
        rows = len(req.frame)
        if code != 0:
            line = assert_one_error_line(code, stderr)
            assert after == before  # nothing written, the earlier output whole
            assert req.csv_lists or req.parquet_lists or req.null_candidate is not None, line
            if req.null_candidate is not None and not (req.csv_lists or req.parquet_lists):
                assert f"'item_id' has a missing value at row {req.null_candidate}" in line
            return
        assert "Traceback" not in stderr
        assert not req.csv_lists
        assert not req.parquet_lists
        assert req.null_candidate is None
        # Only the output changed, beside the run's log folder (LightningCLI's config.yaml).
        assert {k: v for k, v in after.items() if k != "out.parquet" and k[:4] != "run/"} == {
            k: v for k, v in before.items() if k != "out.parquet"}
        scores = pd.read_parquet(output)["probability"].to_numpy()
        assert len(scores) == rows
        assert np.isfinite(scores).all()
        assert ((scores > 0) & (scores < 1)).all()
        if req.unknown_candidates or req.unknown_history:
            assert (f"{req.unknown_candidates} of {rows} candidate ids and {req.unknown_history} "
                    f"of {req.history_ids} history ids are unknown") in stderr, stderr[-2000:]
        else:
            assert f"{rows} requests, every item id known to the model" in stderr, stderr[-2000:]
        if req.null_history:
            assert f"dropped {req.null_history} null id(s) from the histories" in stderr
        if rows > 1:  # the same requests upside down give the same scores upside down
            write_requests(req, root / f"reversed.{req.fmt}", reverse=True)
            code, stderr = predict(checkpoint, root / f"reversed.{req.fmt}", root / "rev.parquet")
            assert code == 0, stderr[-3000:]
            reversed_ = pd.read_parquet(root / "rev.parquet")["probability"].to_numpy()
            np.testing.assert_allclose(reversed_[::-1], scores, rtol=0, atol=1e-6)
