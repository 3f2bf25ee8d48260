"""The probe every served bundle must pass: windows of its own training mean score with finite values.

A bundle that fails it (damaged weights or constants, a training that diverged) scores NaN for its entities, and a
NaN never crosses a threshold: those hosts would go unwatched without a word. So a bundle directory refuses such a
bundle at start-up and on reload (its entities fall back to the default, one log line says why), and a default or
single bundle that fails stops the start or rejects the reload.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..errors import StreamdetError
from .linear_lstm import NotGroupable

PROBE_CHUNK = 128  # bundles probed per grouped call


def mean_probe(bundles: Sequence) -> Tensor:
    """One window of each bundle's training mean, bundle after bundle: [len(bundles), L, C]."""
    return torch.from_numpy(np.stack([np.tile(np.asarray(b.mean, dtype=np.float32), (int(b.window), 1))
                                      for b in bundles]))


def finite_rows(scores: Tensor, contrib: Tensor) -> Tensor:
    """Per row: every score and every contribution finite. scores [B, T], contrib [B, T, C] -> [B] bool."""
    return torch.isfinite(scores).all(dim=1) & torch.isfinite(contrib).flatten(1).all(dim=1)


def check_finite(bundle, path) -> None:
    """StreamdetError naming `path` unless the bundle's own module scores the probe finitely."""
    with torch.inference_mode():
        scores, contrib = bundle.module(mean_probe([bundle]))
    if not bool(finite_rows(scores, contrib).all()):
        raise StreamdetError(why_non_finite(path))


def why_non_finite(path) -> str:
    return f"{path}: the model scores windows of its own training mean with non-finite values (damaged or " \
           "diverged weights)"


def broken_members(group, members: Sequence) -> dict[str, str]:
    """sha256 -> why, for the members of a stacked group (bundle/grouped.py) that score the probe with non-finite
    values, probed in grouped calls of PROBE_CHUNK bundles; {} when the group cannot score at all (grouped.check()
    then says why and each bundle is probed by its own module)."""
    broken = {}
    for start in range(0, len(members), PROBE_CHUNK):
        chunk = members[start:start + PROBE_CHUNK]
        index = torch.tensor([group.index[b.sha256] for b in chunk])
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # vmap's per-sample fallback warns: check() reports that
                ok = finite_rows(*group.score(mean_probe(chunk), index))
        except (RuntimeError, NotGroupable):
            return {}
        broken.update({b.sha256: why_non_finite(b.path) for b, fine in zip(chunk, ok.tolist()) if not fine})
    return broken
