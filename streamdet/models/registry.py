"""Registry of detectors: name -> class, written out. Adding a model is one import and one entry in MODELS.

Hyper-parameters resolve in one place: the model's `Params` dataclass defaults (= the "default" preset), then the
named preset's overrides, then `model.params`. `resolve` is what config loading calls to check a config early.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Type

import torch

from ..errors import ConfigError
from .anomaly_transformer import AnomalyTransformer
from .autoencoder import DenseAutoencoder
from .base import Detector
from .baselines import NearestNeighbour, PCARows, PCAWindow, RobustZScore
from .dcdetector import DCdetector
from .hparams import Hyper, make
from .hst import HalfSpaceTrees
from .knn_channel import ChannelNearestNeighbour
from .lstm_ae import LSTMAutoencoder
from .mixad import MIXAD
from .patching import Patched, check_patch, count_patches
from .patchtst_ae import PatchTSTAutoencoder
from .sar import SpatialAssociationTransformer
from .sd_mae import SelfDistilledMAE
from .tranad import TranAD
from .usad import USAD

MODELS: Dict[str, Type[Detector]] = {cls.name: cls for cls in (
    DenseAutoencoder, LSTMAutoencoder, USAD, TranAD, AnomalyTransformer, PatchTSTAutoencoder, DCdetector,
    SpatialAssociationTransformer, MIXAD, SelfDistilledMAE,
    RobustZScore, PCARows, PCAWindow, NearestNeighbour, ChannelNearestNeighbour, HalfSpaceTrees,
)}

DEFAULT_PRESET = "default"


def names() -> List[str]:
    return sorted(MODELS)


def preset_names(name: str) -> List[str]:
    """"default" (the Params defaults) and the model's named overrides."""
    return [DEFAULT_PRESET] + [p for p in model_class(name).presets if p != DEFAULT_PRESET]


def model_class(name: str) -> Type[Detector]:
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r} (known: {', '.join(names())})")
    return MODELS[name]


def resolve(name: str, preset: Optional[str] = None, params: Optional[dict] = None) -> Hyper:
    """The checked hyper-parameters of `name`: dataclass defaults <- preset overrides <- params."""
    cls = model_class(name)
    overrides: dict = {}
    if preset and preset != DEFAULT_PRESET:
        if preset not in cls.presets:
            raise ConfigError(f"model.preset: {name} has no preset {preset!r} "
                              f"(known: {', '.join(preset_names(name))})")
        overrides.update(cls.presets[preset])
    overrides.update(params or {})
    return make(cls.Params, overrides)


def build(name: str, n_channels: int, window: int, preset: Optional[str] = None, params: Optional[dict] = None,
          patch_size: int = 0, patch_stride: int = 0) -> Detector:
    """Build a detector from its registry name, a preset and explicit params (params override the preset);
    with patch_size > 0 the model is wrapped in patching (models/patching.py) and built for the patch tokens."""
    cls, hp = model_class(name), resolve(name, preset, params)
    if patch_size == 0:
        return cls(n_channels, window, hp)
    check_patch(patch_size, patch_stride, window)
    inner = cls(n_channels * patch_size, count_patches(window, patch_size, patch_stride), hp)
    return Patched(inner, n_channels, window, patch_size, patch_stride)


def rebuild(name: str, n_channels: int, window: int, hparams: dict, state: Dict[str, torch.Tensor]) -> Detector:
    """The eager model of a bundle: built from its recorded hyper-parameters (and patch), weights from `state` (the
    detector's own state dict, no `model.` prefix). For inspection (plots), never for serving."""
    params = {k: v for k, v in hparams.items() if k != "patch"}
    patch = hparams.get("patch") or {}
    model = build(name, n_channels, window, None, params, int(patch.get("size", 0)), int(patch.get("stride", 0)))
    model.load_state_dict(state)
    return model.eval()


__all__ = ["MODELS", "build", "check_patch", "model_class", "names", "preset_names", "rebuild", "resolve"]
