import numpy as np
import pytest

from resemb_pl.data.synthetic import PRESETS, SyntheticConfig, generate
from resemb_pl.errors import ConfigError


def test_seeded_and_canonical():
    a, b, c = generate("tiny", seed=1), generate("tiny", seed=1), generate("tiny", seed=2)
    assert a.frame.equals(b.frame)
    assert not a.frame.equals(c.frame)
    f = a.frame
    assert list(f.columns) == ["user_id", "item_id", "category_id", "timestamp"]
    assert (np.diff(f["user_id"]) >= 0).all()  # sorted by user then time
    same_user = np.diff(f["user_id"]) == 0
    assert (np.diff(f["timestamp"])[same_user] == 1).all()
    assert f["item_id"].between(1, a.num_items).all()
    assert not f.duplicated(["user_id", "item_id"]).any()
    assert (f.groupby("user_id").size() >= 3).all()


def test_true_domains_and_categories():
    cfg = PRESETS["tiny"]
    data = generate("tiny", seed=0)
    dom = data.item_domain
    assert len(dom) == cfg.num_items + 1
    assert set(np.unique(dom[1:])) == set(range(cfg.num_domains))
    # Categories group whole domains: every domain maps to exactly one category.
    cat = data.item_category()
    pairs = {(d, c) for d, c in zip(dom[1:], cat[1:], strict=True)}
    assert len(pairs) == cfg.num_domains
    assert cat[0] == 0 and (cat[1:] >= 1).all()


def test_interest_delay_structure():
    # Within a period of T clicks, items share one domain: consecutive clicks share a domain
    # far more often than random pairs would.
    data = generate(SyntheticConfig(2000, 500, 25, 5, 2, 2, 4, 4, 1.0), seed=0)
    f = data.frame
    d = data.item_domain[f["item_id"].to_numpy()]
    same_user = np.diff(f["user_id"].to_numpy()) == 0
    consecutive = (d[1:] == d[:-1])[same_user].mean()
    assert consecutive > 0.6


@pytest.mark.parametrize("name", ["tiny", "small", "electronics", "books"])
def test_presets_exist(name):
    assert name in PRESETS


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        generate("huge")
