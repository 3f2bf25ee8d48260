"""Hyper-parameters: one frozen dataclass per model whose defaults ARE the default preset and whose checks live in it.

A bad value fails when the dataclass is built (at config load and at model build) with the config key that holds
it, `model.params.<key>`. Presets are overrides of the dataclass defaults (DESIGN.md §3).
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Dict

from ..errors import ConfigError


def require(ok: bool, key: str, why: str, value: object) -> None:
    """Raise ConfigError naming `model.params.<key>` unless `ok`."""
    if not ok:
        raise ConfigError(f"model.params.{key}: {why}, got {value!r}")


def require_heads_divide(width: int, heads: int) -> None:
    require(heads >= 1 and width % heads == 0, "heads", f"must be >= 1 and divide width={width}", heads)


@dataclasses.dataclass(frozen=True)
class Hyper:
    """Base of every model's hyper-parameters: types are checked (ints stay ints, YAML ints become floats where a
    float is declared, lists become tuples), then the subclass's `check()` runs."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(getattr(self, f.name), hints[f.name], f.name))
        self.check()

    def check(self) -> None:
        """Range checks of the subclass (raise through `require`)."""

    def as_dict(self) -> Dict[str, Any]:
        """Plain JSON-ready values (tuples as lists), as the bundle records them."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        require(isinstance(value, (list, tuple)), key, "must be a list", value)
        item = typing.get_args(hint)[0]
        return tuple(_coerce(v, item, key) for v in value)
    if hint is float:
        require(isinstance(value, (int, float)) and not isinstance(value, bool), key, "must be a number", value)
        return float(value)
    if hint is int:
        require(isinstance(value, int) and not isinstance(value, bool), key, "must be an integer", value)
        return value
    if hint is bool:
        require(isinstance(value, bool), key, "must be true or false", value)
        return value
    if hint is str:
        require(isinstance(value, str), key, "must be a string", value)
    return value


def make(cls: type, overrides: Dict[str, Any]) -> Hyper:
    """cls(**overrides) with an unknown key named as `model.params.<key>` (with the known ones)."""
    known = [f.name for f in dataclasses.fields(cls)]
    for key in overrides:
        if key not in known:
            raise ConfigError(f"model.params.{key}: unknown hyper-parameter (known: {', '.join(known) or 'none'})")
    return cls(**overrides)
