"""Properties specific to DCdetector, the spatial-association transformer, MIXAD and SD-MAE.

The registry-wide suite checks the shared contract; these check what each design promises on its own: channel
independence, division-local associations, causal memory-shift scores, mask coverage and the semi-supervised margin.
"""

from __future__ import annotations

import pytest
import torch

from streamdet.errors import ConfigError
from streamdet.models import registry
from streamdet.models.layers import pad_to_multiple
from streamdet.models.mixad import MIXADParams
from streamdet.models.sd_mae import interleaved_masks

L, C = 32, 4


def tiny(name: str, **params):
    torch.manual_seed(0)
    return registry.build(name, C, L, "tiny", params).eval()


def wave(n: int = 3) -> torch.Tensor:
    t = torch.arange(L, dtype=torch.float32)[None, :, None] + 7.0 * torch.arange(n)[:, None, None]
    return torch.sin(t / 4.0 + torch.arange(C)[None, None, :])  # [B, L, C]


def score_both(model, x: torch.Tensor, changed: torch.Tensor):
    with torch.inference_mode():
        return model(x), model(changed)


def test_dcdetector_channels_are_independent():
    """Channel independence: a change in channel 1 moves channel 1's contributions only."""
    x = wave()
    changed = x.clone()
    changed[:, 10, 1] += 5.0
    (_, before), (_, after) = score_both(tiny("dcdetector"), x, changed)
    others = [0, 2, 3]
    torch.testing.assert_close(after[..., others], before[..., others])
    assert not torch.allclose(after[..., 1], before[..., 1])


def test_dcdetector_score_is_the_mean_channel_discrepancy():
    scores, contrib = tiny("dcdetector")(wave())
    torch.testing.assert_close(scores, contrib.mean(dim=-1))


@pytest.mark.parametrize("heads", [1, 4])
def test_dcdetector_scores_with_the_attention_maps_its_layers_define(heads):
    """Scoring folds embed and projection into the tokens' own dimensions (eval); training runs the layers as
    written. Both give the same maps, so the scores are those of the trained model."""
    torch.manual_seed(0)
    model = registry.build("dcdetector", C, L, "default", {"heads": heads}).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.3)  # away from the initial values, where a wrong fold could hide
    series = wave().permute(0, 2, 1).reshape(-1, L)
    for view in model.views:
        patches = pad_to_multiple(series, view.patch).reshape(-1, view.n_patches, view.patch)
        for attention, tokens in ((view.patch_wise, patches), (view.in_patch, patches.transpose(1, 2))):
            with torch.inference_mode():
                scored = attention(tokens)
            attention.train()
            torch.testing.assert_close(scored, attention(tokens).detach(), rtol=1e-4, atol=1e-5)
            attention.eval()


def test_sar_associations_stay_inside_their_series_division():
    """Tokens of one division never see another: a change in division 2 leaves the other divisions' scores."""
    model = tiny("sar")
    span = model.segment_len
    x = wave()
    changed = x.clone()
    changed[:, 2 * span: 3 * span, 0] += 3.0
    (s_before, before), (s_after, after) = score_both(model, x, changed)
    outside = torch.ones(L, dtype=torch.bool)
    outside[2 * span: 3 * span] = False
    torch.testing.assert_close(after[:, outside], before[:, outside])
    assert bool((s_after[:, ~outside] != s_before[:, ~outside]).any())


def test_mixad_shift_is_causal_and_step_zero_copies_step_one():
    """The memory-attention shift at step t depends on steps <= t only (the encoder reads forwards), so changing the
    last step changes the last score only, and mostly the changed node's."""
    model = tiny("mixad")
    x = wave()
    changed = x.clone()
    changed[:, -1, 2] += 4.0
    (s_before, c_before), (s_after, c_after) = score_both(model, x, changed)
    torch.testing.assert_close(s_after[:, :-1], s_before[:, :-1])
    assert bool((s_after[:, -1] > s_before[:, -1]).all())
    assert bool((c_after[:, -1, 2] - c_before[:, -1, 2] > 0).all()), "the changed node should explain the change"
    torch.testing.assert_close(c_before[:, 0], c_before[:, 1])


def saved_bytes_and_grads(recompute: bool, x: torch.Tensor):
    """What MIXAD's training loss keeps for the backward pass (bytes), and the gradients it then produces."""
    torch.manual_seed(0)
    model = registry.build("mixad", C, L, "tiny", {"recompute": recompute}).train()
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor

    torch.manual_seed(1)  # the same Gumbel draw of the graph for both
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model.loss(x, 0)
    loss.backward()
    return saved[0], {name: p.grad for name, p in model.named_parameters()}


def test_mixad_training_recomputes_recurrent_steps_instead_of_storing_them():
    """By default the graph GRU steps are recomputed in the backward pass (what kept MIXAD's training at 17 GB on an
    SMD machine): far less is stored, and the gradients are the same."""
    x = wave(8)
    stored, expected = saved_bytes_and_grads(False, x)
    recomputed, grads = saved_bytes_and_grads(True, x)
    assert recomputed < stored / 3, (recomputed, stored)
    assert MIXADParams().recompute  # the default
    for name, grad in expected.items():
        torch.testing.assert_close(grads[name], grad, msg=name)


@pytest.mark.parametrize("ratio", [0.2, 0.6, 0.8])
def test_sd_mae_inference_masks_hide_every_step_at_the_mask_ratio(ratio):
    masks = interleaved_masks(L, ratio)  # [K, L]
    assert bool((masks.sum(dim=0) >= 1).all())
    assert abs(masks.mean().item() - ratio) <= 0.1


def test_sd_mae_scoring_is_deterministic_despite_random_training_masks():
    model, x = tiny("sd_mae"), wave()
    with torch.inference_mode():
        first, second = model(x), model(x)
    torch.testing.assert_close(first[0], second[0], rtol=0.0, atol=0.0)


def discrepancy_on(model, x: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean teacher-student gap on the labelled steps under the fixed inference masks."""
    K = model.masks.shape[0]
    masks = model.masks.repeat(x.shape[0], 1)  # [B*K, L]
    with torch.inference_mode():
        teacher, student = model.decode(x.repeat_interleave(K, dim=0), masks)
    gap = ((teacher - student) ** 2).mean(dim=-1).reshape(x.shape[0], K, L)  # [B, K, L]
    return float(gap[labels.unsqueeze(1).expand_as(gap) > 0].mean())


def test_sd_mae_margin_loss_pushes_labelled_anomalies_apart():
    """Semi-supervised: labels on training anomalies raise the discrepancy there compared with no labels."""
    torch.set_num_threads(1)
    x = wave(32) + 0.05 * torch.randn(32, L, C, generator=torch.Generator().manual_seed(1))
    labels = torch.zeros(32, L)
    labels[::2, 12:15] = 1.0
    x[labels > 0] += 3.0
    gaps = []
    for given in (None, labels):
        model = tiny("sd_mae").train()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
        for step in range(40):
            opt.zero_grad()
            model.loss(x, epoch=step // 10, labels=given).backward()
            opt.step()
        gaps.append(discrepancy_on(model.eval(), x, labels))
    assert gaps[1] > 1.5 * gaps[0], gaps


@pytest.mark.parametrize("name,params,key", [
    ("dcdetector", {"patch_sizes": [0, 4]}, "patch_sizes"),
    ("dcdetector", {"width": 10, "heads": 3}, "heads"),
    ("sar", {"segments": 0}, "segments"),
    ("mixad", {"memories": 0}, "memories"),
    ("sd_mae", {"mask_ratio": 1.0}, "mask_ratio"),
])
def test_bad_hyper_parameters_name_their_key(name, params, key):
    with pytest.raises(ConfigError, match=f"model.params.{key}"):
        registry.build(name, C, L, "tiny", params)
