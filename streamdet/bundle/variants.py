"""Copies of a TorchScript bundle with other weights: many distinct bundles of one architecture, cheaply.

Exporting a bundle scripts the model again (about 0.8 s for lstm_ae); a benchmark that needs a thousand per-entity
bundles (tools/bench_fleet.py) instead loads the exported module, gives it new weights and saves it with its
metadata updated (weights sha256, training record). The copy is a real bundle: `load_bundle` checks its digest.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import torch

from . import Bundle, load_bundle, torchscript, weights_sha256
from .meta import dumps


def save_variant(base: Bundle, path, change: Callable[[dict], None], training: dict) -> Bundle:
    """Write `base` with its state dict changed in place by `change(state)` to `path`, and load it back."""
    if base.format != torchscript.FORMAT:
        raise ValueError(f"{base.path}: variants are made of TorchScript bundles, not {base.format}")
    module, _ = torchscript.load(base.path)
    with torch.no_grad():
        change(module.state_dict())  # the module's own tensors: changed in place
    meta = copy.deepcopy(base.meta)
    meta["weights_sha256"], meta["training"] = weights_sha256(module), training
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torchscript.save(module, str(tmp), dumps(meta))
    tmp.replace(path)
    return load_bundle(path)
