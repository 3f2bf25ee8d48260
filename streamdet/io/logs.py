"""Logging set-up: `text` for people, `json` (one object per line) for log shippers.

Context travels as `extra={...}` (entity, partition, offset, ...): the text format appends it as key=value pairs,
the json format as fields, so both carry the same information.
"""

from __future__ import annotations

import logging
import sys
import time

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context worth printing.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def _extras(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD}


class TextFormatter(logging.Formatter):
    """`2025-01-01T12:00:00 INFO streamdet.daemon: message key=value ...`"""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the extras, and exc when there is a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        event = {"ts": round(record.created, 6), "time": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                                        time.gmtime(record.created)),
                 "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        event.update(_extras(record))
        if record.exc_info:
            event["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(event, default=str).decode()


def setup_logging(logging_cfg, stream=None) -> None:
    """Configure the root logger once from `logging.level` and `logging.format` (replacing earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if logging_cfg.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging_cfg.level)
    # kafka-python logs every retry of an outage at WARNING/ERROR; the daemon logs each state change itself
    # (broker unreachable / reachable again), so the client's own lines are kept for DEBUG sessions only
    logging.getLogger("kafka").setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL)
