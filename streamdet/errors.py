"""The few exception types streamdet raises on purpose.

Anything that is a StreamdetError is an expected, user-facing failure: the CLI prints its message on one line and
exits with code 2. Everything else is a bug and gets a traceback.
"""


class StreamdetError(Exception):
    """Base class for expected failures with a message a user can act on."""


class ConfigError(StreamdetError):
    """A configuration value is missing, unknown, of the wrong type or out of range; the message names the key path."""


class BundleError(StreamdetError):
    """A model bundle cannot be loaded, is corrupt, or does not match the configuration."""


class DecodeError(StreamdetError):
    """An input record cannot be used. `reason` is a short, bounded label for metrics and the dead-letter topic."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class DataError(StreamdetError):
    """A dataset is missing or malformed (wrong path, wrong columns, label length mismatch)."""
