"""The candidates of `model.name: auto`: parsed and resolved against the registry when the config loads, so a typo
fails at start-up naming the entry (train/select.py trains and ranks them). Imports neither config nor train, so
that config can check them without an import circle."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from ..errors import ConfigError

DEFAULT_CANDIDATES = ("knn", "knn normalisation=none", "knn span=5", "knn smooth=10", "pca_window",
                      "pca_window normalisation=none", "pca", "pca normalisation=none", "pca smooth=10", "autoencoder",
                      "autoencoder smooth=10", "autoencoder window=32", "usad")


@dataclass(frozen=True)
class Candidate:
    """One entry of the candidate list, e.g. "knn span=5 normalisation=none"."""

    spec: str
    name: str
    window: int | None
    normalisation: str | None
    preset: str | None
    params: dict
    smooth: int | None = None  # causal moving average of the scores over this many steps (train/smoothing.py)

    @property
    def base(self) -> tuple:
        """What training depends on: candidates differing only in smoothing share one trained model."""
        return (self.name, self.window, self.normalisation, self.preset, tuple(sorted(self.params.items())))


def parse_candidate(spec: str) -> Candidate:
    """'name key=value ...': window, normalisation, preset and smooth are training settings, other keys model
    params."""
    name, *pairs = spec.split()
    settings: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"model.auto_candidates: {spec!r}: expected key=value after the model name, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    window, smooth = settings.pop("window", None), settings.pop("smooth", None)
    return Candidate(spec, name, int(window) if window else None, settings.pop("normalisation", None),
                     settings.pop("preset", None), settings, int(smooth) if smooth else None)


def check_candidates(model_cfg) -> list[Candidate]:
    """Parse and resolve every candidate at config load, so a typo fails at start-up naming the entry."""
    from ..models import registry

    candidates = [parse_candidate(s) for s in (model_cfg.auto_candidates or DEFAULT_CANDIDATES)]
    for c in candidates:
        try:
            registry.resolve(c.name, c.preset if c.preset is not None else model_cfg.preset, c.params)
        except ConfigError as exc:
            raise ConfigError(f"model.auto_candidates: {c.spec!r}: {exc}") from None
    return candidates
