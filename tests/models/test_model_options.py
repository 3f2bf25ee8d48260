"""What each first-half model promises on its own, beyond the registry-wide contract in test_zoo.py: PatchTST patch
modes and channel independence, USAD/TranAD epoch weights and gradient routing, Anomaly Transformer associations
and minimax stop-gradients."""

from __future__ import annotations

import pytest
import torch

from streamdet.errors import ConfigError
from streamdet.models import registry
from streamdet.models.layers import kl_rows

from .helpers import C, L, tiny, wave


@pytest.mark.parametrize("mode,patches", [("sliding", 7), ("disjoint", 4)])
def test_patchtst_patch_modes_cover_every_step(mode, patches):
    model = registry.build("patchtst_ae", 3, 32, "tiny", {"patch_mode": mode, "patch_len": 8, "patch_stride": 4})
    assert model.index.shape == (patches, 8)
    assert bool((model.coverage > 0).all())
    scores, contrib = model.eval()(torch.randn(2, 32, 3))
    assert scores.shape == (2, 32) and contrib.shape == (2, 32, 3)


@pytest.mark.parametrize("name,params,key", [
    ("patchtst_ae", {"patch_mode": "random"}, "patch_mode"),
    ("patchtst_ae", {"patch_len": 0}, "patch_len"),
    ("patchtst_ae", {"heads": 3}, "heads"),
    ("tranad", {"heads": 3}, "heads"),
    ("anomaly_transformer", {"heads": 3}, "heads"),
    ("anomaly_transformer", {"temperature": 0.0}, "temperature"),
    ("autoencoder", {"latent": 0}, "latent"),
    ("usad", {"alpha": 0.0, "beta": 0.0}, "alpha"),
])
def test_bad_hyper_parameters_fail_at_build_naming_their_key(name, params, key):
    with pytest.raises(ConfigError, match=rf"model\.params\.{key}:"):
        registry.build(name, 3, 32, "tiny", params)



def test_patchtst_channels_are_independent():
    """Channel independence: a change in channel 2 moves channel 2's contributions only."""
    model, x = tiny("patchtst_ae"), wave()
    changed = x.clone()
    changed[:, 12, 2] += 4.0
    with torch.inference_mode():
        before, after = model(x)[1], model(changed)[1]
    torch.testing.assert_close(after[..., [0, 1, 3]], before[..., [0, 1, 3]])
    assert not torch.allclose(after[..., 2], before[..., 2])


def test_usad_first_epoch_is_plain_reconstruction_and_later_epochs_add_the_game():
    """Weights 1/n and 1 - 1/n: at epoch 0 only the two reconstruction errors count."""
    model, x = tiny("usad"), wave(4)
    flat = x.reshape(4, L * C)
    z = model.encoder(flat)
    plain = ((flat - model.decoder1(z)) ** 2).mean() + ((flat - model.decoder2(z)) ** 2).mean()
    torch.testing.assert_close(model.loss(x, epoch=0), plain)
    assert not torch.allclose(model.loss(x, epoch=4), plain)


def test_usad_score_weights_the_two_reconstructions():
    x = wave(2)
    ae1_only = tiny("usad", alpha=1.0, beta=0.0)
    with torch.inference_mode():
        scores, _ = ae1_only(x)
        ae1 = ae1_only.decoder1(ae1_only.encoder(x.reshape(2, L * C))).reshape(2, L, C)
    torch.testing.assert_close(scores, ((x - ae1) ** 2).mean(dim=-1))


def usad_phases(model, x):
    """USAD's two phases written out plainly, every parameter live: (loss of phase 1, loss of phase 2) at n."""
    flat = x.reshape(x.shape[0], -1)
    z = model.encoder(flat)
    ae1 = model.decoder1(z)
    game = ((flat - model.decoder2(model.encoder(ae1))) ** 2).mean()
    return ((flat - ae1) ** 2).mean(), ((flat - model.decoder2(z)) ** 2).mean(), game


def tranad_phases(model, x):
    o1 = model.decoder1(model.encode(x, torch.zeros_like(x)))
    h1 = model.encode(x, torch.zeros_like(x))
    game = ((model.decoder2(model.encode(x, (o1 - x) ** 2)) - x) ** 2).mean()
    return ((o1 - x) ** 2).mean(), ((model.decoder2(h1) - x) ** 2).mean(), game


@pytest.mark.parametrize("name,phases", [("usad", usad_phases), ("tranad", tranad_phases)])
def test_adversarial_phases_train_their_own_decoder(name, phases):
    """Decoder 1 learns rec1/n + w*game (fool decoder 2); decoder 2 learns rec2/n - w*game (expose decoder 1),
    with w = 1 - 1/n. Had the maximised term leaked into decoder 1, the game would cancel in its gradient."""
    model, x, epoch = tiny(name), wave(4), 4
    n = epoch + 1.0
    d1, d2 = list(model.decoder1.parameters()), list(model.decoder2.parameters())
    # USAD steps each phase with its own optimiser (phase 0: encoder + D1, phase 1: encoder + D2); TranAD has one loss
    got1 = torch.autograd.grad(model.phase_loss(x, epoch, 0), d1)
    got2 = torch.autograd.grad(model.phase_loss(x, epoch, model.phases - 1), d2)
    rec1, rec2, game = phases(model, x)
    want1 = torch.autograd.grad(rec1 / n + (1 - 1 / n) * game, d1, retain_graph=True)
    want2 = torch.autograd.grad(rec2 / n - (1 - 1 / n) * game, d2)
    for got, want in zip(got1 + got2, want1 + want2):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def test_anomaly_transformer_prior_rows_are_distributions_and_hot_temperature_is_plain_error():
    model, x = tiny("anomaly_transformer", association_weighting="mild", temperature=1e9), wave(2)
    with torch.inference_mode():
        x_hat, series, priors = model.run(x)
        scores, _ = model(x)
    for s, p in zip(series, priors):
        torch.testing.assert_close(p.sum(dim=-1), torch.ones_like(p[..., 0]))
        torch.testing.assert_close(s.sum(dim=-1), torch.ones_like(s[..., 0]))
    torch.testing.assert_close(scores, ((x_hat - x) ** 2).mean(dim=-1))


def test_anomaly_transformer_minimax_splits_the_gradients():
    """Minimise phase: the prior's width (sigma) learns only from the prior term; the series only from the series
    term. So sigma's gradient is the gradient of k * prior_term / layers alone."""
    model, x = tiny("anomaly_transformer", k=3.0), wave(4)
    sigma = [layer.attention.sigma.weight for layer in model.layers]
    (full,) = torch.autograd.grad(model.loss(x, epoch=0), sigma[:1])
    _, series, priors = model.run(x)
    prior_term = sum((kl_rows(p, s.detach()) + kl_rows(s.detach(), p)).mean() for s, p in zip(series, priors))
    (expected,) = torch.autograd.grad(3.0 * prior_term / len(series), sigma[:1])
    torch.testing.assert_close(full, expected)


@pytest.mark.parametrize("whole_window", [False, True])
def test_pca_window_scores_the_newest_row_or_the_whole_sub_window(whole_window):
    """Against the definition written out: each step's `span`-row sub-window, flattened, projected off the fitted
    components; the step's score is the squared residual of its newest row, or (whole_window) of all its rows."""
    span = 4
    model = registry.build("pca_window", C, L, "tiny", {"span": span, "whole_window": whole_window})
    model.prepare(wave(64))
    x = wave(2) + 0.3 * torch.randn(2, L, C, generator=torch.Generator().manual_seed(1))
    scores, contributions = model(x)
    padded = torch.cat([x[:, :1].expand(2, span - 1, C), x], dim=1)
    for t in (0, span, L - 1):
        flat = padded[:, t:t + span].reshape(2, span * C) - model.centre
        residual = ((flat - flat @ model.basis @ model.basis.T) ** 2).reshape(2, span, C)
        expected = residual.mean(dim=1) if whole_window else residual[:, -1]
        torch.testing.assert_close(contributions[:, t], expected, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(scores[:, t], expected.mean(dim=-1), rtol=1e-4, atol=1e-6)
