"""The online pipeline composed: decode -> windows -> batcher -> scorer -> thresholds -> alerts.

Used by the daemon (records from Kafka) and by `streamdet evaluate` (a replayed test split), so a backtest runs the
exact code path of the live service. Pure: plain values in, plain values out; no Kafka, no Prometheus.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import numpy as np

from ..config import Config
from ..errors import DecodeError
from .alerts import AlertEvent, AlertManager
from .batcher import MicroBatcher
from .decode import Decoder
from .scorer import Scorer
from .thresholds import ThresholdBank
from .windows import WindowRequest, WindowStore


@dataclass
class ScoredPoint:
    entity: str
    ts: float
    score: float
    threshold: float
    over: bool
    source: Any
    warm: bool = True  # False for points scored in an edge-padded warm-up window (they never fire)


@dataclass
class StepResult:
    rejected: list = field(default_factory=list)  # [(raw, source, reason, detail)]
    scored: list[ScoredPoint] = field(default_factory=list)
    alerts: list[AlertEvent] = field(default_factory=list)
    batches: list = field(default_factory=list)  # [(batch size, inference seconds)]


class Pipeline:
    """All online stages for one bundle; `bundle` needs .module, .channels, .window, .calibration, .model_name,
    .sha256 (a streamdet.bundle.Bundle or any object with those attributes)."""

    def __init__(self, cfg: Config, bundle: Any, clock: Callable[[], float] = time.monotonic):
        channels = tuple(bundle.channels)
        self._cfg = cfg
        self.window = int(bundle.window)
        self.decoder = Decoder(channels, cfg.input.max_record_bytes, cfg.input.max_future_s)
        self.windows = WindowStore(self.window, len(channels), cfg.scoring.stride, cfg.input.max_entities,
                                   cfg.input.allowed_lateness_s, cfg.input.entity_idle_s, clock)
        self.batcher = MicroBatcher(cfg.scoring.max_batch, cfg.scoring.max_wait_ms, clock)
        self._serve(bundle)
        self.last_source: dict[str, Any] = {}  # entity -> source of the last record pushed into its window
        self.touched: set[str] = set()  # entities changed since the last checkpoint (the daemon clears it)
        self._skip_through: dict[str, tuple] = {}  # entity -> (topic, partition, offset) its restored state holds
        self.skipped = 0  # redelivered records already inside restored state

    def process(self, items: Iterable[tuple[bytes, Any]]) -> StepResult:
        """Decode and window the records; score every batch that fills up, and one that is due by time."""
        result = StepResult()
        for raw, source in items:
            try:
                record = self.decoder.decode(raw)
                if self._already_held(record.entity, source):
                    continue
                request = self.windows.push(record.entity, record.ts, record.values, source)
            except DecodeError as exc:
                result.rejected.append((raw, source, exc.reason, exc.detail))
                continue
            self.last_source[record.entity] = source
            self.touched.add(record.entity)
            self._enqueue([request] if request is not None else [], result)
        self._score_due(result)
        return result

    def _already_held(self, entity: str, source: Any) -> bool:
        """A redelivered record at or before the restored checkpoint of its entity is already in the windows."""
        held = self._skip_through.get(entity)
        if held is None or not isinstance(source, tuple) or len(source) < 3:
            return False
        if source[:2] == held[:2] and source[2] <= held[2]:
            self.skipped += 1
            return True
        del self._skip_through[entity]  # past the checkpoint: from here on every record is new
        return False

    def restored_through(self, entity: str, source: tuple) -> None:
        """The entity's restored state holds every record up to `source`; skip those when redelivered."""
        self.last_source[entity] = tuple(source)
        self._skip_through[entity] = tuple(source)

    def forget(self, entities) -> None:
        """Drop entities whose partitions moved to another instance (after their final checkpoint)."""
        for entity in entities:
            self.windows.remove(entity)
            self.thresholds.remove(entity)
            self.alerts.remove(entity)
            self.last_source.pop(entity, None)
            self.touched.discard(entity)
            self._skip_through.pop(entity, None)

    def poll(self) -> StepResult:
        """Score the batches that became due by time since the last call."""
        result = StepResult()
        self._score_due(result)
        return result

    def drain(self) -> StepResult:
        """Score every buffered point, partial strides included (shutdown, end of a replay)."""
        for request in self.windows.drain():
            self.batcher.add(request)
        return self.flush_batches()

    def flush_batches(self) -> StepResult:
        """Score every queued window now (before a checkpoint or a model swap); partial strides stay pending."""
        result = StepResult()
        while len(self.batcher):
            self._score(self.batcher.take(), result)
        return result

    def replace_model(self, bundle: Any) -> None:
        """Serve a new bundle from the next batch on (same channels). Windows keep their data; thresholds and
        alert streaks restart from the new calibration, because the score scale is the new model's."""
        if tuple(bundle.channels) != self.decoder.channels or int(bundle.window) != self.window:
            raise ValueError("the new bundle has another input layout (channels or window)")
        self._serve(bundle)

    def _serve(self, bundle: Any) -> None:
        """The model-dependent stages: scorer, thresholds from its calibration, alerts carrying its identity."""
        self.scorer = Scorer(bundle.module, self._cfg.scoring.threads)
        self.thresholds = ThresholdBank(self._cfg.threshold, bundle.calibration)
        self.alerts = AlertManager(self._cfg.alerting, self.decoder.channels,
                                   {"name": bundle.model_name, "sha256": bundle.sha256})

    @property
    def model_sha256(self) -> str:
        """The served model's weights digest (alerts and checkpoints carry it)."""
        return self.alerts.model["sha256"]

    def entities_of(self, partitions) -> list[str]:
        """Entities whose latest record came from one of `partitions` ((topic, partition) pairs)."""
        wanted = set(partitions)
        return [e for e, source in self.last_source.items() if tuple(source[:2]) in wanted]

    def seconds_until_due(self) -> float | None:
        """How long until the oldest batched request is due (None when nothing waits); for poll timeouts."""
        if not len(self.batcher):
            return None
        return max(0.0, self.batcher.max_wait_s - self.batcher.oldest_age())

    def pending_floor(self) -> dict[tuple[str, int], int]:
        """Per (topic, partition): the lowest offset whose record is buffered but not yet scored."""
        floor: dict[tuple[str, int], int] = {}
        sources = list(self.windows.pending_sources())
        for request in self.batcher:
            sources.extend(request.sources)
        for source in sources:
            if isinstance(source, tuple) and len(source) >= 3:
                key = (source[0], source[1])
                floor[key] = min(floor.get(key, source[2]), source[2])
        return floor

    def _enqueue(self, requests: list[WindowRequest], result: StepResult) -> None:
        for request in requests + self.windows.take_flushed():
            self.batcher.add(request)
            if self.batcher.full():
                self._score(self.batcher.take(), result)

    def _score_due(self, result: StepResult) -> None:
        while self.batcher.due():
            self._score(self.batcher.take(), result)

    def _score(self, requests: list[WindowRequest], result: StepResult) -> None:
        windows = np.stack([r.window for r in requests])  # [B, L, C]
        started = time.perf_counter()
        scores, contrib = self.scorer.score(windows)  # [B, L], [B, L, C]
        result.batches.append((len(requests), time.perf_counter() - started))
        rows = scores.tolist()  # [B][L] Python floats: one conversion per batch, not one per point
        for row, request in enumerate(requests):
            first = self.window - request.n_new  # the new points are the last n_new steps
            for j in range(request.n_new):
                self._decide(request, j, rows[row][first + j], contrib[row, first + j], result)

    def _decide(self, request: WindowRequest, j: int, score: float, contrib: np.ndarray, result: StepResult) -> None:
        """Threshold and alert one scored point; a non-finite score is reported but teaches nothing."""
        entity, ts, source = request.entity, float(request.ts[j]), request.sources[j]
        learn = request.warm and math.isfinite(score)
        threshold, over = self.thresholds.update(entity, score, learn=learn)
        event = self.alerts.update(entity, ts, score, threshold, over, contrib, source, warm=learn)
        result.scored.append(ScoredPoint(entity, ts, score, threshold, over, source, request.warm))
        if event is not None:
            result.alerts.append(event)

    def state_dict(self, entity: str) -> dict:
        """Window, threshold and alert state of one entity (plain data) for checkpoints."""
        return {"window": self.windows.state_dict(entity), "threshold": self.thresholds.state_dict(entity),
                "alert": self.alerts.state_dict(entity)}

    def load_state(self, entity: str, state: dict) -> None:
        self.windows.load_state(entity, state["window"])
        self.thresholds.load_state(entity, state["threshold"])
        self.alerts.load_state(entity, state["alert"])
