"""Each research model's scoring mechanism, at its DEFAULT hyper-parameters (issue 19 item 2).

Every test recomputes the score the way the paper defines it, from the model's own parts but with formulas written
out here, and/or checks the behaviour the mechanism exists for; removing or switching the mechanism off (e.g. a
uniform weighting, a frozen encoder, a missing instance normalisation) makes it fail. Small inputs, untrained
models: the mechanisms are deterministic functions of the weights, so training is not needed to check them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamdet.bundle import export_bundle, load_bundle
from streamdet.models import registry
from streamdet.models.mixad import js_divergence

L, C = 32, 4


def default(name: str, **params):
    """The model at its default preset (params only where the window needs it), seeded, in eval mode."""
    torch.manual_seed(0)
    return registry.build(name, C, L, None, params).eval()


def wave(n: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(L, dtype=torch.float32)[None, :, None] + 5.0 * torch.arange(n)[:, None, None]
    return torch.sin(t / 4.0 + torch.arange(C)[None, None, :]) + 0.1 * torch.randn(n, L, C, generator=g)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (torch.log(p + 1e-6) - torch.log(q + 1e-6))).sum(-1)


def test_anomaly_transformer_weights_the_error_by_the_papers_association_discrepancy():
    """softmax over the window of (-discrepancy x 50), the reference code's weighting; not the 2,500x milder one."""
    model, x = default("anomaly_transformer"), wave()
    with torch.inference_mode():
        scores, _ = model(x)
        x_hat, series, priors = model.run(x)
    discrepancy = sum((kl(s, p) + kl(p, s)).mean(dim=1) for s, p in zip(series, priors))  # [B, L]
    error = ((x_hat - x) ** 2).mean(dim=-1)
    torch.testing.assert_close(scores, torch.softmax(-discrepancy * 50.0, dim=-1) * L * error, rtol=1e-4, atol=1e-6)
    weights = scores / error
    assert bool((weights.amax(dim=1) / weights.amin(dim=1) > 10).all()), "the weighting must not be near uniform"


def test_anomaly_transformer_mild_option_is_the_divided_weighting():
    model, x = default("anomaly_transformer", association_weighting="mild"), wave()
    with torch.inference_mode():
        scores, _ = model(x)
        x_hat, series, priors = model.run(x)
    discrepancy = sum((kl(s, p) + kl(p, s)).mean(dim=1) for s, p in zip(series, priors))
    error = ((x_hat - x) ** 2).mean(dim=-1)
    torch.testing.assert_close(scores, torch.softmax(-discrepancy / 50.0, dim=-1) * L * error, rtol=1e-4, atol=1e-6)


def js(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = (p + q) / 2
    return 0.5 * (kl(p, m) + kl(q, m))


def test_mixad_scores_the_shift_of_each_nodes_memory_attention():
    model, x = default("mixad"), wave()
    with torch.inference_mode():
        scores, contrib = model(x)
        _, attention, _ = model.read_memory(model.encode(x, model.supports()))  # [B, L, C, M]
    shift = js(attention[:, 1:], attention[:, :-1])  # [B, L-1, C]
    torch.testing.assert_close(contrib[:, 1:], shift, rtol=1e-3, atol=1e-6)
    torch.testing.assert_close(scores, contrib.amax(dim=-1))
    jumped = x.clone()
    jumped[:, 20:, 2] += 3.0  # a level shift in node 2 at step 20
    with torch.inference_mode():
        _, after = model(jumped)
    assert bool((after[:, 20, 2] > contrib[:, 20, 2]).all()), "the jump must move node 2's memory attention"


def test_mixad_attention_shift_is_never_negative_for_nearly_equal_attention():
    """The Jensen-Shannon divergence of two nearly equal distributions rounds below zero without care; a negative
    contribution would fail the bundle's export (it happened on SMD machine-3-10)."""
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3.0 * torch.randn(10_000, 5, generator=g), dim=-1)
    q = torch.softmax(torch.log(p) + 1e-4 * torch.randn(10_000, 5, generator=g), dim=-1)
    shift = js_divergence(p, q)
    assert bool((shift >= 0).all()) and float(shift.max()) < 1e-6
    assert float(js_divergence(p, p.flip(0)).min()) > 0  # different distributions still diverge


def test_mixad_graph_is_learned_from_the_memory_and_diffuses_both_ways():
    model = default("mixad")
    forward, backward = model.supports()  # eval: the noise-free graph
    assert not torch.allclose(forward, backward), "two directions: A(E1, E2) and A(E2, E1)"
    model.train()
    forward, backward = model.supports()
    probe = torch.randn(C, C, generator=torch.Generator().manual_seed(0))
    ((forward + backward) * probe).sum().backward()  # straight-through sampling lets the memory learn the graph
    assert model.memory.grad is not None and bool(model.memory.grad.abs().sum() > 0)
    model.eval()
    torch.testing.assert_close(model.supports()[0], model.supports()[0])  # scoring is deterministic


def test_sar_channels_never_attend_to_themselves_and_rebuild_through_a_bottleneck():
    model, x = default("sar"), wave()
    _, assoc = model.associate(x)  # [B, S, H, C, C]
    assert float(assoc.detach().diagonal(dim1=-2, dim2=-1).abs().max()) < 1e-6
    assert model.value.out_features < model.embed.out_features, "reduction space narrower than the tokens"


def test_sar_score_weights_errors_by_association_descent_across_channels():
    model, x = default("sar"), wave()
    with torch.inference_mode():
        _, contrib = model(x)
        rebuilt, assoc = model.associate(x)
        prior = torch.softmax(model.prior_logits + torch.eye(C) * -1e9, dim=-1)[None, None]
    discrepancy = (kl(assoc, prior) + kl(prior, assoc)).mean(dim=2)  # [B, S, C]
    weight = 0.5 + 0.5 * C * torch.softmax(-discrepancy, dim=-1)
    weight = weight.repeat_interleave(model.segment_len, dim=1)[:, :L]
    torch.testing.assert_close(contrib, (rebuilt - x) ** 2 * weight, rtol=1e-4, atol=1e-6)
    assert float((contrib / ((rebuilt - x) ** 2 + 1e-12)).std()) > 1e-3, "the weighting must vary"


def test_sar_minimax_moves_the_prior_towards_and_the_association_away():
    """Minimise: only the prior term reaches the prior. Maximise: the association term enters with a minus sign."""
    model, x = default("sar").train(), wave(4)
    model.decode[2].p = 0.0  # dropout off, so that two evaluations see the same network
    (prior_grad,) = torch.autograd.grad(model.loss(x, 0), [model.prior_logits])
    _, assoc = model.associate(x)
    prior = torch.softmax(model.prior_logits + torch.eye(C) * -1e9, dim=-1)[None, None]
    prior_term = (kl(assoc.detach(), prior) + kl(prior, assoc.detach())).mean()
    (expected,) = torch.autograd.grad(3.0 * prior_term, [model.prior_logits])
    torch.testing.assert_close(prior_grad, expected, rtol=1e-4, atol=1e-7)
    qk = model.qk.weight
    (full,) = torch.autograd.grad(model.loss(x, 0), [qk])
    rebuilt, assoc = model.associate(x)
    series_term = (kl(assoc, prior.detach()) + kl(prior.detach(), assoc)).mean()
    (want,) = torch.autograd.grad(((rebuilt - x) ** 2).mean() - 3.0 * series_term, [qk])
    torch.testing.assert_close(full, want, rtol=1e-4, atol=1e-7)


def test_lstm_ae_decodes_in_reverse_order_from_the_encoders_state():
    """The last step is decoded first, from the encoder's final state alone; each earlier step follows."""
    model, x = default("lstm_ae"), wave()
    with torch.inference_mode():
        _, (h, _) = model.encoder(x)
        rebuilt = model.reconstruct(x, teacher=False)
        changed = x.clone()
        changed[:, 0] += 1.0
        observed = model.reconstruct(x, teacher=True)
        observed_changed = model.reconstruct(changed, teacher=True)
        free_changed = model.reconstruct(changed, teacher=False)
        from_state = model.output(h[-1])
    torch.testing.assert_close(rebuilt[:, -1], from_state)
    torch.testing.assert_close(observed[:, -1], from_state)
    # teacher forcing feeds x_(t+1) to decode step t, so x_1 is fed to no decoder step: x_hat changes through the
    # encoder state alone, identically with and without forcing at the last step
    torch.testing.assert_close(observed_changed[:, -1], free_changed[:, -1])


@pytest.mark.parametrize("layers", [1, 2])
def test_lstm_ae_free_running_decoder_feeds_each_step_its_own_prediction(layers):
    """Scoring decodes as the paper does at inference: each step's input is the previous step's prediction. Written
    out here with the model's own LSTM and Linear, step by step; the model folds the one-layer case into one matmul
    per step (reassociated products), which must decode the same."""
    model, x = default("lstm_ae", layers=layers), wave()
    with torch.inference_mode():
        _, state = model.encoder(x)
        previous = model.output(state[0][-1]).unsqueeze(1)  # step L, from the encoder's state alone
        steps = [previous]
        for _ in range(L - 1):
            out, state = model.decoder(previous, state)
            previous = model.output(out)
            steps.append(previous)
        expected = torch.cat(steps, dim=1).flip(1)
        torch.testing.assert_close(model.reconstruct(x, teacher=False), expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(model.reconstruct(x, teacher=True), expected, atol=1e-3), "not teacher forcing"


def test_lstm_ae_scores_the_mahalanobis_distance_of_validation_fitted_errors(tmp_path):
    model, val = default("lstm_ae"), wave(40, seed=3)
    model.fit_validation(val)
    with torch.inference_mode():
        errors = (val - model.reconstruct(val, teacher=False)).abs().reshape(-1, C).double().numpy()
    mean, cov = errors.mean(axis=0), np.cov(errors, rowvar=False)
    cov += 1e-3 * np.diag(cov).mean() * np.eye(C)
    x = wave(2, seed=9)
    with torch.inference_mode():
        scores, _ = model(x)
        e = (x - model.reconstruct(x, teacher=False)).abs().double().numpy() - mean  # [B, L, C]
    expected = np.einsum("blc,cd,bld->bl", e, np.linalg.inv(cov), e)
    np.testing.assert_allclose(scores.numpy(), expected, rtol=1e-3, atol=1e-5)
    assert not np.allclose(scores.numpy(), (e ** 2).sum(-1), rtol=0.05), "not the plain squared error"
    export_bundle(model, tmp_path / "b.pt", channels=[f"c{i}" for i in range(C)], mean=np.zeros(C), std=np.ones(C),
                  calibration={"n": 1}, training={})
    with torch.inference_mode():  # the error model travels inside the bundle
        torch.testing.assert_close(load_bundle(tmp_path / "b.pt").module(x)[0], scores, rtol=1e-4, atol=1e-5)


def test_usad_trains_the_shared_encoder_in_both_phases():
    model, x, epoch = default("usad"), wave(4), 4
    encoder = list(model.encoder.parameters())
    assert model.phases == 2
    for phase in (0, 1):
        ids = {id(p) for p in model.phase_parameters(phase)}
        assert all(id(p) in ids for p in encoder), f"phase {phase} must step the encoder"
    flat = x.reshape(4, -1)
    (with_game,) = torch.autograd.grad(model.phase_loss(x, epoch, 1), encoder[:1])
    (reconstruction_only,) = torch.autograd.grad(((flat - model.decoder2(model.encoder(flat))) ** 2).mean() / 5.0,
                                                 encoder[:1])
    assert not torch.allclose(with_game, reconstruction_only), "phase 2's adversarial term must reach the encoder"


def test_tranad_second_phase_is_conditioned_on_the_first_phases_focus_score():
    model, x = default("tranad"), wave()
    with torch.inference_mode():
        scores, contrib = model(x)
        o1 = model.decoder1(model.encode(x, torch.zeros_like(x)))
        focus = (o1 - x) ** 2
        o2 = model.decoder2(model.encode(x, focus))
        unconditioned = model.decoder2(model.encode(x, torch.zeros_like(x)))
    torch.testing.assert_close(contrib, 0.5 * focus + 0.5 * (o2 - x) ** 2)
    assert not torch.allclose(o2, unconditioned, atol=1e-4), "the focus score must change phase 2"


def as_written(model):
    """`model` running its layers as torch defines them (train mode, every dropout off): the reference for the
    scoring paths that compute the same thing faster."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(module, torch.nn.MultiheadAttention):
            module.dropout = 0.0
    return model.train()


@pytest.mark.parametrize("name", ["tranad", "sd_mae", "patchtst_ae"])
def test_transformer_models_score_what_their_layers_define(name):
    """In eval the attention runs batch-first through one SDPA call (layers.attend), and TranAD's decoders compute
    their queries' self-attention once per batch (it does not depend on the window); the scores are those of
    nn.MultiheadAttention / nn.TransformerDecoderLayer as written."""
    model, x = default(name), wave()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)  # no zero biases or identity norms for a mistake to hide behind
    with torch.inference_mode():
        scored = model(x)[1]
        reference = as_written(model)(x)[1]
    torch.testing.assert_close(scored, reference, rtol=1e-4, atol=1e-6)


def test_patchtst_reconstructs_patches_and_averages_them_back_onto_steps():
    model, x = default("patchtst_ae"), wave()
    assert model.index.shape[1] == 16 and int(model.index[1, 0] - model.index[0, 0]) == 8
    with torch.inference_mode():
        series = x.permute(0, 2, 1).reshape(-1, L)
        out = model.decode(model.encoder(model.position(model.embed(series[:, model.index]))))  # [N, P, 16]
        total, count = torch.zeros_like(series), torch.zeros(L)
        for p, steps in enumerate(model.index):
            total[:, steps] += out[:, p]
            count[steps] += 1
        rebuilt = (total / count).reshape(3, C, L).permute(0, 2, 1)
        torch.testing.assert_close(model(x)[1], (rebuilt - x) ** 2, rtol=1e-4, atol=1e-6)


def test_dcdetector_views_are_instance_normalised():
    """Per-window, per-channel normalisation: scaling and shifting a channel's window leaves its scores."""
    model, x = default("dcdetector"), wave()
    moved = x * torch.tensor([3.0, 0.5, 10.0, 1.0]) + torch.tensor([5.0, -2.0, 100.0, 0.0])
    with torch.inference_mode():
        torch.testing.assert_close(model(moved)[1], model(x)[1], rtol=1e-3, atol=1e-5)
        raw = default("dcdetector", instance_norm=False)  # the measured option compares levels too
        assert not torch.allclose(raw(moved)[1], raw(x)[1], rtol=1e-3, atol=1e-5)


def test_dcdetector_score_is_the_symmetric_kl_between_the_two_views():
    """Built the paper's way: each view as a step x step distribution (patch-wise map repeated over the patch,
    in-patch map tiled over patches, rows normalised), then KL(P||N) + KL(N||P) per step."""
    torch.manual_seed(0)
    window = 40  # a multiple of both default patch sizes (5, 10): the maps tile exactly
    model = registry.build("dcdetector", C, window).eval()
    x = torch.sin(torch.arange(2 * window * C, dtype=torch.float32).reshape(2, window, C) / 3.0)
    series = x.permute(0, 2, 1).reshape(-1, window)
    series = (series - series.mean(-1, keepdim=True)) / torch.sqrt(series.var(-1, unbiased=False, keepdim=True) + 1e-5)
    total = torch.zeros(series.shape[0], window)
    for view in model.views:
        p, n_patches = view.patch, view.n_patches
        patches = series.reshape(-1, n_patches, p)
        a_patch = view.patch_wise(patches)  # [N, H, P, P]
        a_in = view.in_patch(patches.transpose(1, 2))  # [N, H, p, p]
        big_patch = a_patch.repeat_interleave(p, dim=-2).repeat_interleave(p, dim=-1) / p  # [N, H, L, L]
        big_in = a_in.repeat(1, 1, n_patches, n_patches) / n_patches
        total += (kl(big_patch, big_in) + kl(big_in, big_patch)).mean(dim=1)
    with torch.inference_mode():
        _, contrib = model(x)
    expected = (total / len(model.views)).reshape(2, C, window).permute(0, 2, 1)
    torch.testing.assert_close(contrib, expected.clamp(min=0), rtol=2e-3, atol=2e-4)


def test_sd_mae_scores_teacher_student_discrepancy_with_a_deep_teacher_and_one_layer_student():
    model, x = default("sd_mae"), wave(2)
    assert len(model.teacher[0].blocks) == 4 and len(model.student[0].blocks) == 1
    with torch.inference_mode():
        _, contrib = model(x)
        total, hidden = torch.zeros_like(x), torch.zeros(L)
        for mask in model.masks:
            teacher, student = model.decode(x, mask.expand(2, L))
            gap = (teacher - student) ** 2 + 1.0 * (teacher - x) ** 2
            total += gap * mask[None, :, None]
            hidden += mask
    torch.testing.assert_close(contrib, total / hidden[None, :, None], rtol=1e-4, atol=1e-6)
    with torch.inference_mode():
        discrepancy_only = default("sd_mae", recon_weight=0.0)(x)[1]
    assert bool((discrepancy_only > 0).any()), "the two decoders disagree: the discrepancy carries the score"


def test_autoencoder_reconstructs_through_its_bottleneck():
    model, x = default("autoencoder"), wave()
    assert model.encoder[-1].out_features == 32 < L * C
    with torch.inference_mode():
        rebuilt = model.decoder(model.encoder(x.reshape(3, -1))).reshape(3, L, C)
        torch.testing.assert_close(model(x)[1], (x - rebuilt) ** 2)


@pytest.mark.parametrize("size,stride", [(4, 2), (4, 4)])
def test_patching_scores_every_point_from_the_patches_that_cover_it(size, stride):
    """Sliding (stride < size) or disjoint patches become tokens of the wrapped model; each point's contribution is
    the mean over the patches covering it of that patch token's contribution at the point."""
    torch.manual_seed(0)
    model = registry.build("lstm_ae", C, L, None, None, size, stride).eval()
    x = wave()
    with torch.inference_mode():
        scores, contrib = model(x)
        tokens = torch.stack([x[:, s:s + size].reshape(3, size * C) for s in range(0, L - size + 1, stride)], 1)
        _, inner = model.inner(tokens)  # [B, P, size*C]
    total, count = torch.zeros_like(x), torch.zeros(L)
    for p, start in enumerate(range(0, L - size + 1, stride)):
        total[:, start:start + size] += inner[:, p].reshape(3, size, C)
        count[start:start + size] += 1
    torch.testing.assert_close(contrib, total / count[None, :, None], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(scores, contrib.mean(dim=-1))
    assert model.inner.window == (L - size) // stride + 1 and model.inner.n_channels == size * C


def test_the_trainer_steps_usads_two_phases_in_turn_with_their_own_optimisers():
    from streamdet.config import TrainConfig
    from streamdet.train.trainer import fit

    torch.manual_seed(0)
    model = registry.build("usad", C, L, "tiny")
    phases, original = [], model.phase_loss

    def recording(x, epoch, phase, labels=None):
        phases.append(phase)
        return original(x, epoch, phase, labels)

    model.phase_loss = recording
    windows = wave(64).numpy()
    fit(model, windows, windows[:8], TrainConfig(epochs=1, batch_size=16, device="cpu"), progress=False)
    assert phases[:8] == [0, 1] * 4, "each batch: phase 1 (encoder + D1) then phase 2 (encoder + D2)"
