"""YAML configuration -> frozen dataclasses.

Every section is a frozen dataclass; each component receives only its own section. Unknown keys, wrong types and
out-of-range values raise ConfigError naming the full key path (``scoring.max_batch: must be >= 1, got 0``), so a bad
config fails at start-up with one line. Strings may reference the environment as ``${VAR}`` or ``${VAR:-default}``
(used for secrets and for the data root). Relative paths are resolved against the config file's directory, so a config
works from any working directory.

    sections.py       the schema of each section (every key, its type, range and default)
    alertmanager.py   the alertmanager section and its checks
    loading.py        YAML -> checked dataclasses (extends, overrides, ${VAR}, types, ranges)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from .alertmanager import AlertmanagerAuthConfig, AlertmanagerConfig, AlertmanagerTLSConfig
from .loading import apply_overrides, build, read_yaml
from .sections import (AlertingConfig, DataConfig, InputConfig, KafkaConfig, LoggingConfig, MetricsConfig,
                       ModelConfig, PatchConfig, ScoreConfig, ScoringConfig, SecurityConfig, ThresholdConfig,
                       TrainConfig)

__all__ = ["AlertingConfig", "AlertmanagerAuthConfig", "AlertmanagerConfig", "AlertmanagerTLSConfig", "Config",
           "DataConfig", "InputConfig", "KafkaConfig", "LoggingConfig", "MetricsConfig", "ModelConfig", "PatchConfig",
           "ScoreConfig", "ScoringConfig", "SecurityConfig", "ThresholdConfig", "TrainConfig", "apply_overrides",
           "load_config", "to_dict"]


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    input: InputConfig = field(default_factory=InputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    base_dir: str = "."  # directory relative paths resolve against; set by the loader, not by users

    def path(self, value: str) -> Path:
        """Resolve a path from the config against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load, validate and resolve a config file (or the defaults when `path` is None)."""
    raw: dict = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path).resolve()
        raw = read_yaml(p)
        base = p.parent
    raw = apply_overrides(raw, overrides or [])
    cfg = build(Config, raw, "")
    _check_model(cfg.model)
    return dataclasses.replace(cfg, base_dir=str(base))


def _check_model(model: ModelConfig) -> None:
    """model.name, model.preset, model.params and model.patch against the registry, so typos fail at load."""
    from ..models import registry  # imports torch: deferred to the one call that needs it

    from ..train.candidates import check_candidates, check_score

    check_score(model)
    if model.name == "auto":
        check_candidates(model)
        return
    registry.resolve(model.name, model.preset, model.params)
    registry.check_patch(model.patch.size, model.patch.stride, model.window)


def to_dict(cfg: Config) -> dict:
    """The resolved configuration as plain data (for check-config and for recording in bundles)."""
    return dataclasses.asdict(cfg)
