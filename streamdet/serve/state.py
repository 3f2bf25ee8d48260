"""Per-entity state checkpoints in a Kafka changelog topic (like a Kafka Streams state store).

Each checkpoint is one record keyed by entity: the entity's windows, threshold and alert state (engine.Pipeline
.state_dict) plus the source of the last record pushed into its window (the ledger's `held`). The delivery writes
checkpoints of the entities touched since the previous one, has them acknowledged, and only then commits offsets,
so a committed offset is never ahead of a checkpoint. On start and on partition assignment it reads the changelog
to its end, restores the entities of the assigned partitions, and skips redelivered records the restored state
already holds: the scores that follow equal those of a run that never stopped.

The codec is explicit (no pickle: a changelog is shared data and must never execute code on load): JSON via orjson,
with tagged forms for numpy arrays, tuples and non-finite floats. Record sources are Kafka `Source`s here: a column of
4-element tuples (a window's sources) comes back as Sources.
"""

from __future__ import annotations

import base64
import logging
import math
import time
from typing import Any, Iterable

import numpy as np
import orjson

from ..errors import StreamdetError
from ..io.readers import read_to_end
from ..types import Source

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RESTORE_TIMEOUT_S = 60.0


class StateError(StreamdetError):
    """A checkpoint cannot be decoded or does not fit the running model."""


_PLAIN = frozenset({str, int, float, bool, type(None)})
_TUPLES = frozenset({tuple, Source})


def _is_tuple_column(value: list) -> bool:
    """A list of plain-scalar tuples or None, like a window's record sources: packed in one step (it is most of a
    checkpoint's elements, and packing it element by element dominated the cost of checkpointing)."""
    return all(v is None or type(v) in _TUPLES for v in value) and \
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
            return [None if v is None else _source_or_tuple(v) for v in value["__tl__"]]
        if "__f__" in value:
            return float(value["__f__"])
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    return value


def _source_or_tuple(items: list) -> tuple:
    return Source(*items) if len(items) == 4 else tuple(items)


def encode_checkpoint(entity: str, state: dict, last_source: Source, model_sha256: str) -> bytes:
    return orjson.dumps({"version": FORMAT_VERSION, "entity": entity, "model_sha256": model_sha256,
                         "last_source": list(last_source), "written": time.time(), "state": _pack(state)})


def decode_checkpoint(raw: bytes) -> dict:
    try:
        message = orjson.loads(raw)
        if message.get("version") != FORMAT_VERSION:
            raise StateError(f"checkpoint format {message.get('version')!r} is not {FORMAT_VERSION}")
        message["last_source"] = Source(*_unpack(message["last_source"]))
        message["state"] = _unpack(message["state"])
        return message
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise StateError(f"undecodable checkpoint ({exc.__class__.__name__}: {exc})") from None


class Checkpointer:
    """Writes checkpoints through the daemon's producer and restores them from the changelog topic."""

    def __init__(self, kafka, client):
        self.kafka = kafka  # the kafka config section, pointed at the running broker
        self.topic = kafka.state_topic
        self.client = client
        self.written = 0

    def write(self, pipeline, ledger, entities: Iterable[str]) -> int:
        """Produce one checkpoint per entity (not flushed: the delivery flushes before committing)."""
        n = 0
        for entity in entities:
            last = ledger.held.get(entity)
            if last is None or not pipeline.holds(entity):
                continue
            value = encode_checkpoint(entity, pipeline.state_dict(entity), last, pipeline.model_sha256)
            self.client.produce(self.topic, entity.encode(), value)
            n += 1
        self.written += n
        return n

    def restore(self, pipeline, ledger, partitions: set) -> int:
        """Load the latest checkpoint of every entity whose records come from `partitions`; returns how many."""
        latest = read_changelog(self.kafka, self.topic)
        restored = 0
        for entity, message in latest.items():
            through: Source = message["last_source"]
            if through.tp not in partitions:
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
            ledger.restored(entity, through)
            restored += 1
        log.info("restored %d entities from %s", restored, self.topic)
        return restored


def read_changelog(kafka, topic: str, timeout_s: float = RESTORE_TIMEOUT_S) -> dict[str, dict]:
    """The latest decodable checkpoint per entity, reading every partition of the changelog to its end."""
    latest: dict[str, dict] = {}
    for key, value in read_to_end(kafka, topic, timeout_s):
        if key is None or value is None:
            continue
        try:
            message = decode_checkpoint(value)
        except StateError as exc:
            log.warning("skipping a checkpoint of %s: %s", key, exc)
            continue
        latest[key.decode("utf-8", "replace")] = message
    return latest
