"""Per-entity state checkpoints in a Kafka changelog topic (like a Kafka Streams state store).

Each checkpoint is one record keyed by entity: the entity's windows, threshold and alert state (engine.Pipeline
.state_dict) plus the source (topic, partition, offset) of the last record pushed into its window. The daemon writes
checkpoints of the entities touched since the previous one, has them acknowledged, and only then commits offsets,
so a committed offset is never ahead of a checkpoint. On start and on partition assignment it reads the changelog
to its end, restores the entities of the assigned partitions, and skips redelivered records the restored state
already holds: the scores that follow equal those of a run that never stopped.

The codec is explicit (no pickle: a changelog is shared data and must never execute code on load): JSON via orjson,
with tagged forms for numpy arrays, tuples and non-finite floats.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from typing import Any, Iterable, Optional

import numpy as np
import orjson

from .errors import StreamdetError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RESTORE_TIMEOUT_S = 60.0


class StateError(StreamdetError):
    """A checkpoint cannot be decoded or does not fit the running model."""


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _is_tuple_column(value: list) -> bool:
    """A list of plain-scalar tuples or None, like a window's record sources: packed in one step (it is most of a
    checkpoint's elements, and packing it element by element dominated the cost of checkpointing)."""
    return all(v is None or type(v) is tuple for v in value) and \
        all(type(x) in _PLAIN and (type(x) is not float or math.isfinite(x)) for v in value if v for x in v)


def _pack(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        return {"__nd__": [str(data.dtype), list(data.shape), base64.b64encode(data.tobytes()).decode("ascii")]}
    if isinstance(value, dict):
        return {str(k): _pack(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__t__": [_pack(v) for v in value]}
    if isinstance(value, list):
        if value and _is_tuple_column(value):
            return {"__tl__": [None if v is None else list(v) for v in value]}
        return [_pack(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return {"__f__": repr(float(value))}
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if "__nd__" in value:
            dtype, shape, data = value["__nd__"]
            return np.frombuffer(base64.b64decode(data), dtype=np.dtype(dtype)).reshape(shape).copy()
        if "__t__" in value:
            return tuple(_unpack(v) for v in value["__t__"])
        if "__tl__" in value:
            return [None if v is None else tuple(v) for v in value["__tl__"]]
        if "__f__" in value:
            return float(value["__f__"])
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    return value


def encode_checkpoint(entity: str, state: dict, last_source: tuple, model_sha256: str) -> bytes:
    return orjson.dumps({"version": FORMAT_VERSION, "entity": entity, "model_sha256": model_sha256,
                         "last_source": _pack(tuple(last_source)), "written": time.time(), "state": _pack(state)})


def decode_checkpoint(raw: bytes) -> dict:
    try:
        message = orjson.loads(raw)
        if message.get("version") != FORMAT_VERSION:
            raise StateError(f"checkpoint format {message.get('version')!r} is not {FORMAT_VERSION}")
        message["last_source"] = _unpack(message["last_source"])
        message["state"] = _unpack(message["state"])
        return message
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"undecodable checkpoint ({exc.__class__.__name__}: {exc})") from None


class Checkpointer:
    """Writes checkpoints through the daemon's producer and restores them from the changelog topic."""

    def __init__(self, cfg, client, bootstrap: str):
        self.cfg = cfg
        self.topic = cfg.kafka.state_topic
        self.client = client
        self.bootstrap = bootstrap
        self.written = 0

    def write(self, pipeline, entities: Iterable[str]) -> int:
        """Produce one checkpoint per entity (not flushed: the daemon's commit flushes before committing)."""
        n = 0
        for entity in entities:
            last = pipeline.last_source.get(entity)
            if last is None or entity not in pipeline.windows:
                continue
            value = encode_checkpoint(entity, pipeline.state_dict(entity), last, pipeline.model_sha256)
            self.client.produce(self.topic, entity.encode(), value)
            n += 1
        self.written += n
        return n

    def restore(self, pipeline, partitions: set) -> int:
        """Load the latest checkpoint of every entity whose records come from `partitions`; returns how many."""
        latest = read_changelog(self.cfg, self.topic, self.bootstrap)
        restored = 0
        for entity, message in latest.items():
            topic, partition, offset = message["last_source"][:3]
            if (topic, partition) not in partitions:
                continue
            if message["model_sha256"] != pipeline.model_sha256:
                log.warning("checkpoint of %s is for another model; starting it cold", entity,
                            extra={"entity": entity})
                continue
            try:
                pipeline.load_state(entity, message["state"])
            except Exception as exc:  # a checkpoint from an incompatible config: start cold, never crash
                log.warning("checkpoint of %s rejected (%s); starting it cold", entity, exc, extra={"entity": entity})
                continue
            pipeline.restored_through(entity, (topic, partition, offset))
            restored += 1
        log.info("restored %d entities from %s", restored, self.topic)
        return restored


def read_changelog(cfg, topic: str, bootstrap: str, timeout_s: float = RESTORE_TIMEOUT_S) -> dict[str, dict]:
    """The latest decodable checkpoint per entity, reading every partition of the changelog to its end."""
    from .io.kafka import read_to_end

    latest: dict[str, dict] = {}
    for key, value in read_to_end(cfg, topic, bootstrap, timeout_s):
        if key is None or value is None:
            continue
        try:
            message = decode_checkpoint(value)
        except StateError as exc:
            log.warning("skipping a checkpoint of %s: %s", key, exc)
            continue
        latest[key.decode("utf-8", "replace")] = message
    return latest

