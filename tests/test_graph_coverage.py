"""scripts/graph_coverage.py on a hand-made click log."""

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("graph_coverage",
                                                  ROOT / "scripts" / "graph_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coverage_by_hand(script, tmp_path, capsys):
    # a: 1 2 3 4, d: 4 6 1 2, c: 1 2 7. Split last: test targets 4 (a), 2 (d), 7 (c); training
    # pairs a: 1 -> 2 and d: 4 -> 6; the graph holds s_1..s_{n-2}: 1-2 (a), 4-6 (d), 1 (c).
    users = list("aaaa") + list("dddd") + list("ccc")
    items = [1, 2, 3, 4, 4, 6, 1, 2, 1, 2, 7]
    pd.DataFrame({"user_id": users, "item_id": items, "timestamp": range(len(items)),
                  "category_id": [1] * len(items)}).to_parquet(tmp_path / "log.parquet")
    config = tmp_path / "log.yaml"
    config.write_text(f"source: interactions\npath: {tmp_path / 'log.parquet'}\nwindow: 1\n"
                      f"top_k: 2\ncache_dir: {tmp_path / 'cache'}\n")
    out = tmp_path / "coverage.txt"
    script.main(["--data", str(config), "--out", str(out)])
    row = script.coverage(script.load(config))
    assert row["items"] == 6
    assert row["edges"] == 4  # 1 <-> 2 and 4 <-> 6
    assert row["covered"] == pytest.approx(4 / 6)
    # Item 7 has no neighbour and is in no training sample; 4 and 2 have one neighbour each.
    assert row["test"] == {"targets": 3, "no nbr": pytest.approx(1 / 3),
                           "cold": pytest.approx(1 / 3), "deg": pytest.approx(2 / 3)}
    assert row["train"] == {"targets": 2, "no nbr": 0.0, "cold": 0.0, "deg": 1.0}
    line = next(x for x in out.read_text().splitlines() if x.startswith("log "))
    assert line.split()[1:4] == ["6", "4", "0.667"]
    assert line in capsys.readouterr().out


def test_a_missing_config_is_one_line(script, tmp_path):
    from resemb_pl.errors import ConfigError

    with pytest.raises(ConfigError, match="no such data config"):
        script.main.__wrapped__(["--data", str(tmp_path / "nope.yaml")])
