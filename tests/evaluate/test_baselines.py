"""Baselines: registered, fitted by prepare(), contract shapes, and they flag an injected fault on its channel."""

import pytest
import torch

from streamdet.models import registry

BASELINES = ["robust_z", "pca", "pca_window", "knn", "knn_channel", "hst"]
C, L = 6, 24


def _correlated(n: int, g: torch.Generator) -> torch.Tensor:
    """Windows [n, L, C] whose channels follow two shared latent signals plus noise."""
    latent = torch.randn(n, L, 2, generator=g).cumsum(dim=1) * 0.2  # [n, L, 2]
    mix = torch.tensor([[1.0, 0.5, 0.0, 1.0, -0.5, 0.2], [0.0, 0.5, 1.0, -1.0, 0.5, 0.8]])  # [2, C]
    return latent @ mix + 0.05 * torch.randn(n, L, C, generator=g)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    train, test = _correlated(300, g), _correlated(8, g)
    faulty = test.clone()
    faulty[:, 16:, 4] += 6.0  # a level shift on channel 4 over the last 8 steps
    return train, test, faulty


def test_all_registered_and_not_trainable():
    assert set(BASELINES) <= set(registry.names())
    for name in BASELINES:
        assert registry.build(name, C, L, "tiny").trainable is False


@pytest.mark.parametrize("name", BASELINES)
def test_fault_scores_higher_and_names_channel(name, data):
    train, test, faulty = data
    model = registry.build(name, C, L, "default")
    model.prepare(train)
    model.eval()
    with torch.no_grad():
        clean_scores, _ = model(test)
        scores, contrib = model(faulty)
    assert scores.shape == (8, L) and contrib.shape == (8, L, C)
    assert bool((contrib >= 0).all()) and bool(torch.isfinite(scores).all())
    normal_high = torch.quantile(clean_scores.flatten(), 0.95)
    assert (scores[:, 16:] > normal_high).float().mean() >= 0.9  # nearly every faulty step beats 95 % of clean ones
    assert int(contrib[:, 20].sum(dim=0).argmax()) == 4


@pytest.mark.parametrize("name", BASELINES)
def test_row_independence(name, data):
    train, test, _ = data
    model = registry.build(name, C, L, "tiny")
    model.prepare(train)
    with torch.no_grad():
        batch, _ = model(test)
        single, _ = model(test[3:4])
    assert torch.allclose(batch[3:4], single, atol=1e-5)


def test_prepare_fills_buffers_deterministically(data):
    train = data[0]
    a, b = registry.build("hst", C, L, "tiny"), registry.build("hst", C, L, "tiny")
    a.prepare(train)
    b.prepare(train)
    assert a.mass[:, 0].eq(train.shape[0] * L).all()  # every training row passes the root
    assert torch.equal(a.split_value, b.split_value) and torch.equal(a.mass, b.mass)


def test_knn_neighbours_average_distances_so_a_pattern_seen_once_in_training_still_stands_out(data):
    """neighbours=k scores the mean distance to the k nearest reference sub-windows: a fault whose copy slipped into
    the training data once is at distance ~0 from that copy (k = 1 misses it) but far from every other reference, once
    k exceeds the number of sub-windows the copy fills (a level shift's overlapping sub-windows are near-duplicates)."""
    train, test, faulty = data
    contaminated = torch.cat([train, faulty[:1]])  # one faulty window among 300 clean ones; every sub-window once:
    scores = {}
    for k in (1, 10):  # 10: more than the sub-windows the faulty stretch fills in that one window
        model = registry.build("knn", C, L, "default", {"span": 4, "references": 301 * (L - 3), "neighbours": k})
        model.prepare(contaminated)
        with torch.no_grad():
            scores[k], contrib = model(faulty[:1])
            clean, _ = model(test)
        if k == 10:  # the brute-force mean of the ten nearest distances, and channels averaged the same way
            from streamdet.models.baselines import subwindows
            q = subwindows(faulty[:1], 4)[0]  # [L, 4*C]
            squared = ((q[:, None] - model.reference[None]) ** 2).sum(dim=-1)  # [L, references]
            nearest = squared.topk(10, largest=False).values  # [L, 3]
            assert torch.allclose(scores[k][0], nearest.sqrt().mean(dim=1), atol=1e-4)
            assert torch.allclose(contrib[0].sum(dim=-1), nearest.mean(dim=1), atol=1e-4)
    tail = slice(20, L)  # sub-windows wholly inside the faulty stretch
    assert float(scores[1][0, tail].max()) < 1e-3
    assert float(scores[10][0, tail].min()) > float(torch.quantile(clean.flatten(), 0.99))  # above clean windows
