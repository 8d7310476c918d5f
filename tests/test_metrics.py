import math

import pytest
import torch
from torchmetrics.functional.classification import binary_auroc

from resemb_pl.metrics import GroupAUC, LogLoss, envelope_radius, group_auc, rela_impr


def test_gauc_hand_computation():
    p = torch.tensor([0.1, 0.4, 0.35, 0.8, 0.5, 0.5, 0.2, 0.3, 0.9])
    y = torch.tensor([0, 0, 1, 1, 1, 0, 0, 1, 1])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 2, 2])
    # user 0: pairs (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4, 4 impressions
    # user 1: 0.5 vs 0.5 tie (1/2), 0.5 > 0.2 (1) -> 3/4, 3 impressions
    # user 2: one label only -> skipped
    assert group_auc(p, y, g).item() == pytest.approx((4 * 0.75 + 3 * 0.75) / 7)
    p2 = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.8])
    y2 = torch.tensor([1, 0, 1, 0, 0])
    g2 = torch.tensor([5, 5, 7, 7, 7])  # user 5: AUC 1 (2 imps); user 7: 0 (3 imps)
    assert group_auc(p2, y2, g2).item() == pytest.approx((2 * 1.0 + 3 * 0.0) / 5)


def test_gauc_matches_per_user_auroc_on_random_data():
    gen = torch.Generator().manual_seed(0)
    p = torch.randint(0, 20, (500,), generator=gen).float() / 20  # many ties
    y = torch.randint(0, 2, (500,), generator=gen)
    g = torch.randint(0, 30, (500,), generator=gen)
    num = den = 0.0
    for u in g.unique():
        m = g == u
        if y[m].min() != y[m].max():
            num += m.sum().item() * binary_auroc(p[m], y[m]).item()
            den += m.sum().item()
    assert group_auc(p, y, g).item() == pytest.approx(num / den, abs=1e-6)


def test_gauc_metric_accumulates_batches_and_no_valid_user_is_nan():
    m = GroupAUC()
    m.update(torch.tensor([0.1, 0.4]), torch.tensor([0, 1]), torch.tensor([0, 0]))
    m.update(torch.tensor([0.3]), torch.tensor([0]), torch.tensor([0]))
    assert m.compute().item() == pytest.approx(1.0)
    assert math.isnan(group_auc(torch.tensor([0.5]), torch.tensor([1]), torch.tensor([0])).item())


def test_logloss():
    m = LogLoss()
    logits = torch.tensor([0.0, 2.0])
    m.update(logits, torch.tensor([1.0, 0.0]))
    want = (math.log(2) + math.log(1 + math.e**2)) / 2
    assert m.compute().item() == pytest.approx(want, rel=1e-6)


def test_rela_impr():
    assert rela_impr(0.9090, 0.8635) == pytest.approx(12.517, abs=1e-3)


def test_envelope_radius_hand_made():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 4.0], [5.0, 5.0]])
    z = torch.tensor([0, 0, 1, 1, -1])  # last item has no domain
    r = envelope_radius(x, z)
    assert r["r_max"] == pytest.approx(2.0)  # domain 1: centre (10, 2), radius 2
    assert r["r_mean"] == pytest.approx(1.5)  # domain 0 radius 1
    assert r["r_all"] == pytest.approx(math.hypot(5.5, 1.0))  # centre (5.5, 1)
    assert r["r_ratio"] == pytest.approx(1.5 / math.hypot(5.5, 1.0))


def test_envelope_radius_without_domains_is_nan():
    r = envelope_radius(torch.randn(3, 2), torch.tensor([-1, -1, -1]))
    assert all(math.isnan(v) for v in r.values())
