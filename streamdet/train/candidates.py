"""The candidates of `model.name: auto`: parsed and resolved against the registry when the config loads, so a typo
fails at start-up naming the entry (train/select.py trains and ranks them). Imports neither config nor train, so
that config can check them without an import circle."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from ..errors import ConfigError

DEFAULT_CANDIDATES = ("knn", "knn normalisation=none", "knn span=5", "knn smooth=10", "pca_window",
                      "pca_window normalisation=none", "pca", "pca normalisation=none", "pca smooth=10",
                      "pca channel_norm=true", "autoencoder", "autoencoder smooth=10", "autoencoder channel_norm=true",
                      "autoencoder window=32", "usad")
# channel_norm variants only where validation found a gain (pca, autoencoder; not knn or lstm_ae, whose scores are
# already per-channel normalised): docs/evaluation.md "Score engineering"


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
    channel_norm: bool | None = None  # score engineering (train/engineering.py); None = model.score's setting
    windows: tuple[int, ...] | None = None
    standardise: bool | None = None  # per-entity online standardisation (pipeline/standardise.py)
    refit: bool | None = None  # fitted baselines refitted on the whole train split (train/whole_split.py)

    @property
    def base(self) -> tuple:
        """What training depends on: candidates differing only in score engineering share one trained model."""
        return (self.name, self.window, self.normalisation, self.preset, tuple(sorted(self.params.items())))

    def refits(self, train_cfg) -> bool:
        """Whether this candidate is refitted on the whole train split: its own key, else `train.refit`."""
        return bool(train_cfg.refit if self.refit is None else self.refit)

    def score_settings(self, defaults) -> "ScoreSettings":
        """This candidate's score engineering: its own keys, else `defaults` (model.score)."""
        def pick(mine, theirs):
            return theirs if mine is None else mine

        return ScoreSettings(bool(pick(self.channel_norm, defaults.channel_norm)),
                             int(pick(self.smooth, defaults.smooth) or 0),
                             tuple(pick(self.windows, defaults.windows)), bool(pick(self.standardise,
                                                                                    defaults.standardise)))


@dataclass(frozen=True)
class ScoreSettings:
    """Score engineering of one model (model.score, or an auto candidate's own keys)."""

    channel_norm: bool = False
    smooth: int = 0
    windows: tuple[int, ...] = ()
    standardise: bool = False

    def check(self, where: str, window: int) -> None:
        if self.smooth == 1 or self.smooth < 0:
            raise ConfigError(f"{where}: smooth must be 0 (off) or >= 2, got {self.smooth}")
        if any(int(w) < 2 for w in self.windows):
            raise ConfigError(f"{where}: windows must all be >= 2, got {list(self.windows)}")
        if self.windows and len(set(self.windows) | {window}) < 2:
            raise ConfigError(f"{where}: windows must add a length other than the model's window {window}")


def parse_candidate(spec: str) -> Candidate:
    """'name key=value ...': window, normalisation, preset, smooth, channel_norm, windows, standardise and refit are
    training settings, other keys model params."""
    name, *pairs = spec.split()
    settings: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"model.auto_candidates: {spec!r}: expected key=value after the model name, got {pair!r}")
        settings[key] = yaml.safe_load(value)
    window, smooth = settings.pop("window", None), settings.pop("smooth", None)
    windows = settings.pop("windows", None)
    if windows is not None and not isinstance(windows, list):
        raise ConfigError(f"model.auto_candidates: {spec!r}: windows takes a list, e.g. windows=[10,32]")
    flags = {key: settings.pop(key, None) for key in ("channel_norm", "standardise", "refit")}
    for key, value in flags.items():
        if value is not None and not isinstance(value, bool):
            raise ConfigError(f"model.auto_candidates: {spec!r}: {key} takes true or false, got {value!r}")
    return Candidate(spec, name, int(window) if window else None, settings.pop("normalisation", None),
                     settings.pop("preset", None), settings, int(smooth) if smooth is not None else None,
                     windows=tuple(int(w) for w in windows) if windows is not None else None, **flags)


def check_candidates(model_cfg) -> list[Candidate]:
    """Parse and resolve every candidate at config load, so a typo fails at start-up naming the entry."""
    from ..models import registry

    candidates = [parse_candidate(s) for s in (model_cfg.auto_candidates or DEFAULT_CANDIDATES)]
    for c in candidates:
        try:
            registry.resolve(c.name, c.preset if c.preset is not None else model_cfg.preset, c.params)
        except ConfigError as exc:
            raise ConfigError(f"model.auto_candidates: {c.spec!r}: {exc}") from None
        c.score_settings(model_cfg.score).check(f"model.auto_candidates: {c.spec!r}", c.window or model_cfg.window)
    return candidates


def check_score(model_cfg) -> ScoreSettings:
    """model.score as settings, checked at config load (the auto candidates check their own)."""
    settings = Candidate("", model_cfg.name, None, None, None, {}).score_settings(model_cfg.score)
    settings.check("model.score", model_cfg.window)
    return settings
