"""Model-specific options the registry-wide suite does not reach."""

from __future__ import annotations

import pytest
import torch

from streamdet.errors import ConfigError
from streamdet.models import registry


@pytest.mark.parametrize("mode,patches", [("sliding", 7), ("disjoint", 4)])
def test_patchtst_patch_modes_cover_every_step(mode, patches):
    model = registry.build("patchtst_ae", 3, 32, "tiny", {"patch_mode": mode, "patch_len": 8, "patch_stride": 4})
    assert model.index.shape == (patches, 8)
    assert bool((model.coverage > 0).all())
    scores, contrib = model.eval()(torch.randn(2, 32, 3))
    assert scores.shape == (2, 32) and contrib.shape == (2, 32, 3)


def test_patchtst_rejects_an_unknown_patch_mode_by_name():
    with pytest.raises(ConfigError, match="patch_mode"):
        registry.build("patchtst_ae", 3, 32, "tiny", {"patch_mode": "random"})
