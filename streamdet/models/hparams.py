"""Checks of model hyper-parameters: a bad value fails at build time with the config key that holds it."""

from __future__ import annotations

from ..errors import ConfigError


def require(ok: bool, key: str, why: str, value: object) -> None:
    """Raise ConfigError naming `model.params.<key>` unless `ok`."""
    if not ok:
        raise ConfigError(f"model.params.{key}: {why}, got {value!r}")


def require_heads_divide(width: int, heads: int) -> None:
    require(heads >= 1 and width % heads == 0, "heads", f"must be >= 1 and divide width={width}", heads)
