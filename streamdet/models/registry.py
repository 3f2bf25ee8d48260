"""Registry of detectors: name -> class. Explicit, so that adding a model is one import and one line."""

from __future__ import annotations

from typing import Dict, Optional, Type

from ..errors import ConfigError
from .base import Detector

MODELS: Dict[str, Type[Detector]] = {}


def register(cls: Type[Detector]) -> Type[Detector]:
    MODELS[cls.name] = cls
    return cls


def _load_all() -> None:
    """Import every model module (each registers itself with @register)."""
    from . import lstm_ae  # noqa: F401

    for mod in ("autoencoder", "usad", "tranad", "anomaly_transformer", "patchtst_ae", "dcdetector", "sar",
                "mixad", "sd_mae", "baselines"):
        try:
            __import__(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:  # a model file not written yet
            if exc.name != f"{__package__}.{mod}":
                raise


def names() -> list[str]:
    _load_all()
    return sorted(MODELS)


def build(name: str, n_channels: int, window: int, preset: Optional[str] = None, params: Optional[dict] = None,
          ) -> Detector:
    """Build a detector from its registry name, a preset and explicit params (params override the preset)."""
    _load_all()
    if name not in MODELS:
        raise ConfigError(f"model.name: unknown model {name!r} (known: {', '.join(sorted(MODELS))})")
    cls = MODELS[name]
    hp = dict(cls.presets.get("default", {}))
    if preset:
        if preset not in cls.presets:
            raise ConfigError(f"model.preset: {name} has no preset {preset!r} (known: {', '.join(cls.presets)})")
        hp.update(cls.presets[preset])
    hp.update(params or {})
    try:
        model = cls(n_channels=n_channels, window=window, **hp)
    except TypeError as exc:
        raise ConfigError(f"model.params: {exc}") from None
    model._hparams = hp
    return model
