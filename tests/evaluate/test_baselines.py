"""Baselines: registered, fitted by prepare(), contract shapes, and they flag an injected fault on its channel."""

import pytest
import torch

from streamdet.models import registry

BASELINES = ["robust_z", "pca", "pca_window", "knn", "hst"]
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
