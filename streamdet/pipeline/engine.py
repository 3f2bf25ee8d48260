"""The online pipeline composed: decode -> windows -> batcher -> scorer -> thresholds -> alerts.

Used by the daemon (records from Kafka) and by `streamdet evaluate` (a replayed test split), so a backtest runs the
exact code path of the live service. Pure: plain values in, plain values out; no Kafka, no Prometheus.

Throughput: records are decoded per batch, and each scored window's new points are thresholded and alerted as one
chunk (numpy), so the Python cost per record stays small. With `scoring.overlap` the model runs on one worker
thread (torch releases the GIL) while this thread decodes and windows the next records: inference and the rest of
the pipeline use two cores. Results are still handled in batch order on the calling thread, so scores, thresholds
and alerts are identical with and without overlap; a batch in flight counts as pending (`pending_sources`).

About 390 lines on purpose: this is the one place where a record's whole path reads top to bottom, from decoding
through the model's in-flight batches to alerts and each entity's checkpoint state; each stage's logic lives in its
own module (decode, intake, windows, pacing, batcher, routing, thresholds, alerts). Taking out the in-flight queue
(the likeliest part) would leave about 340 lines and split the ordering rule above across two files.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from ..types import Reject, StepResult, Verdicts
from .alerts import AlertManager
from .batcher import MicroBatcher
from .decode import Decoder
from .departures import Departures
from .intake import Intake, SampleIntake, row_payload
from .pacing import AdaptiveStride
from .routing import ModelRouter, as_bundle_set
from .settings import PipelineSettings
from .standardise import ScoreStandardiser
from .thresholds import ResolveLevels, ThresholdBank
from .stride import bundle_context, check_replacement, serving_stride
from .windows import WindowRequest, WindowStore

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 2  # batches handed to the inference thread and not yet handled: one running, one waiting
# With overlap, the inference thread needs the GIL back each time the model returns; at Python's default 5 ms
# switch interval it waited on the decoding thread that long per batch and scored at half speed (measured with
# tools/bench_pipeline.py: pipeline alone 60k -> 69k records/s at 0.2 ms).
GIL_SWITCH_S = 0.0002
RESULT_CHECK_S = 0.002  # with adaptive scoring, how soon the loop looks again for a batch the model is scoring


def inference_threads(threads: int, overlap: bool) -> int:
    """scoring.threads, or with overlap and threads 0 one core fewer than the machine has: the other core is the
    caller's, decoding while the model runs (0 without overlap = torch's default). Compiled models are built for it."""
    if threads or not overlap:
        return threads
    return max(1, (os.cpu_count() or 2) - 1)


class Pipeline:
    """All online stages for one bundle or a bundle set (per-entity and group bundles over a fleet default; see
    streamdet/bundleset.py). A bundle needs .module, .channels, .window, .calibration, .model_name, .sha256 (a
    streamdet.bundle.Bundle or any object with those attributes); every bundle of a set has the default's layout.
    `cfg` holds the pipeline's own config sections only (PipelineSettings.of(config))."""

    def __init__(self, cfg: PipelineSettings, bundle: Any, clock: Callable[[], float] = time.monotonic,
                 overlap: bool | None = None):
        default = as_bundle_set(bundle).default
        channels = tuple(default.channels)
        self._cfg = cfg
        self.window = int(default.window)
        self._context = max(bundle_context(b) for b in as_bundle_set(bundle).distinct())
        self.decoder = Decoder(channels, cfg.input.max_record_bytes, cfg.input.max_future_s)
        s = cfg.scoring
        self.pace = AdaptiveStride(self._stride(default), cfg.max_poll_records, s.max_batch, s.adaptive, clock)
        self.windows = WindowStore(self.window, len(channels), self.pace.stride, cfg.input.max_entities,
                                   cfg.input.allowed_lateness_s, cfg.input.entity_idle_s, clock, s.max_delay_s)
        self.batcher = MicroBatcher(cfg.scoring.max_batch, cfg.scoring.max_wait_ms, clock)
        overlap = cfg.scoring.overlap if overlap is None else overlap
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="streamdet-infer") if overlap else None
        if overlap:
            sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_S))  # process-wide, see GIL_SWITCH_S
        self._in_flight: deque[tuple[list[WindowRequest], Future]] = deque()  # oldest first
        self._done = StepResult()  # handled batches not yet returned to the caller
        self._departures = Departures(cfg.alerting.resolve_idle_s, clock)  # silent and evicted entities
        self._serve(bundle)
        # per-sample formats (collectd, telegraf, influx, prometheus): messages are assembled into rows first
        self.intake = SampleIntake(cfg.input, channels, clock) if cfg.input.format != "streamdet" else None

    def process(self, items: Iterable[tuple[bytes, Any]],
                already_held: Optional[Callable[[str, Any], bool]] = None, backlog: int = 0) -> StepResult:
        """Decode and window the records; score every batch that fills up, and one that is due by time. `backlog`:
        records still behind the consumer after this poll (the client's lag), for the adaptive stride.

        `already_held(entity, source)`, when given, drops records the entity's window already holds (the owner's
        redelivery after a restored checkpoint). The result's `held` names each entity whose window took records,
        with the source of the last one (per-sample formats: the last record its assembly took)."""
        items = list(items)
        self.windows.set_stride(self.pace.observe(len(items), self._queued_windows(), backlog))
        if self.intake is not None:
            self._take_rows(self.intake.take(items, already_held))
            self._score_due()
            return self._take_done(wait=False)
        decoded = self.decoder.decode([raw for raw, _ in items])
        rejected = list(decoded.rejected)  # (input index, DecodeError); windowing adds late / entity_cap
        index = decoded.index
        if already_held is not None:
            keep = [k for k, i in enumerate(index) if not already_held(decoded.entities[k], items[i][1])]
            index = [index[k] for k in keep]
            decoded.entities = [decoded.entities[k] for k in keep]
            decoded.ts = [decoded.ts[k] for k in keep]
            decoded.values = decoded.values[keep]
        sources = [items[i][1] for i in index]
        pushed = self.windows.push(decoded.entities, decoded.ts, decoded.values, sources)
        held = self._done.held
        for entity, k in pushed.last.items():
            held[entity] = sources[k]
        rejected += [(index[k], exc) for k, exc in pushed.rejected]
        rejected.sort(key=lambda pair: pair[0])
        self._done.rejected += [Reject(items[i][0], items[i][1], exc.reason, exc.detail) for i, exc in rejected]
        for _, request in pushed.requests:
            self._enqueue(request)
        self._score_due()
        return self._take_done(wait=False)

    def _take_rows(self, rows: Intake) -> None:
        """Rows assembled from per-sample messages into the windows (the rejects go to the dead-letter topic)."""
        done = self._done
        done.rejected += [Reject(*reject) for reject in rows.rejects]
        done.held.update(rows.held)
        pushed = self.windows.push(rows.entities, rows.ts, rows.values, rows.sources)
        channels = self.decoder.channels
        done.rejected += [Reject(row_payload(rows.entities[k], rows.ts[k], rows.values[k], channels), rows.sources[k],
                                 exc.reason, exc.detail) for k, exc in pushed.rejected]
        for _, request in pushed.requests:
            self._enqueue(request)

    def forget(self, entities) -> None:
        """Drop entities whose partitions moved to another instance (after their final checkpoint)."""
        self._handle_in_flight(wait=True)  # normally none: the final checkpoint flushed them
        for entity in entities:
            self.windows.remove(entity)
            self.drop_scoring_state(entity)
            if self.intake is not None:
                self.intake.forget(entity)

    def drop_scoring_state(self, entity: str) -> None:
        """Everything but the window and the rows being assembled (departures.py, forget)."""
        self.thresholds.remove(entity)
        self.standardiser.remove(entity)
        self.alerts.remove(entity)
        self.router.forget(entity)

    def poll(self, backlog: int = 0) -> StepResult:
        """Score the batches that became due by time (and the points overdue for their stride) since the last call;
        return what finished meanwhile. Rows past their assembly deadline go to the windows first. `backlog`: as
        for process (an empty poll with records still behind the consumer is not a calm one)."""
        self.windows.set_stride(self.pace.observe(0, self._queued_windows(), backlog))
        if self.intake is not None:
            self._take_rows(self.intake.due())
        self._score_due()
        return self._take_done(wait=False)

    def drain(self) -> StepResult:
        """Score every buffered point, partial strides included (shutdown, end of a replay)."""
        if self.intake is not None:
            self._take_rows(self.intake.drain())
        for request in self.windows.drain():
            self.batcher.add(request)
        return self.flush_batches()

    def flush_batches(self) -> StepResult:
        """Score every queued window now and wait for them (before a checkpoint or a model swap); partial strides
        stay pending."""
        while len(self.batcher):
            self._submit(self.batcher.take())
        return self._take_done(wait=True)

    def close(self) -> None:
        """Stop the inference thread (after flush_batches or drain; queued work is finished first)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def replace_model(self, bundle: Any) -> None:
        """Serve a new bundle (or bundle set) from the next batch on (same channels and window). Windows keep their
        data; the thresholds and alert streaks of each entity whose bundle changed restart from its new
        calibration, because the score scale is the new model's. An alert open at the swap stays open and resolves
        on the new model's scores: dropping it would leave its firing event without a resolved one."""
        self.check_replacement(bundle)
        self._handle_in_flight(wait=True)  # batches already sent are handled with the model that scored them
        if self.router.is_fleet:  # a fleet's stages look nothing up per entity: bundles of their own need them anew
            previous = self.alerts
            self._serve(bundle)
            self.alerts.carry_open(previous)
            return
        changed = self.router.replace(bundle)
        self.thresholds.prepare(self.router.calibrations())
        for entity in changed:
            self.thresholds.remove(entity)
            self.standardiser.remove(entity)
            self.alerts.restart(entity)

    def check_replacement(self, bundle: Any) -> None:
        """A StreamdetError when `bundle` (or a set) cannot replace the served model (stride.check_replacement)."""
        check_replacement(as_bundle_set(bundle).distinct(), self.decoder.channels, self.window, self.pace.ceiling)

    def _serve(self, bundle: Any) -> None:
        """The model-dependent stages: scorers, thresholds from each bundle's calibration, alerts carrying the
        identity of the bundle that scored."""
        self.router = ModelRouter(bundle, self._inference_threads(), self._cfg.scoring.max_batch)
        default, per_entity = self.router.default, not self.router.is_fleet
        self.thresholds = ThresholdBank(self._cfg.threshold, default.calibration,
                                        self.router.calibration_of if per_entity else None)
        if per_entity:
            self.thresholds.prepare(self.router.calibrations())
        self.standardiser = ScoreStandardiser(  # per-entity score levels, where the bundle was calibrated with them
            lambda entity: self.router.calibration_of(entity)[1].get("standardise"),
            enabled=any("standardise" in b.calibration for b in as_bundle_set(bundle).distinct()))
        quantile = self._cfg.alerting.resolve_quantile
        self.alerts = AlertManager(self._cfg.alerting, self.decoder.channels,
                                   {"name": default.model_name, "sha256": default.sha256},
                                   self.router.model_of if per_entity else None,
                                   lambda entity: self.router.calibration_of(entity)[1].get("attribution"),
                                   ResolveLevels(quantile, self.router.calibration_of, self.router.calibrations())
                                   if quantile else None)

    def _stride(self, bundle: Any) -> int:
        return serving_stride(self._cfg.scoring.stride, self.window, self._context, bundle)

    def _inference_threads(self) -> int:
        return inference_threads(self._cfg.scoring.threads, self._executor is not None)

    @property
    def model_sha256(self) -> str:
        """The default model's weights digest."""
        return self.alerts.model["sha256"]

    def model_sha256_of(self, entity: str) -> str:
        """The weights digest of the bundle that scores `entity` (alerts and its checkpoints carry it)."""
        return self.alerts.model_of(entity)["sha256"]

    def holds(self, entity: str) -> bool:
        """Whether the entity has a live window or rows being assembled (its state can be checkpointed)."""
        return entity in self.windows or (self.intake is not None and self.intake.holds(entity))

    @property
    def n_entities(self) -> int:
        return len(self.windows)

    def seconds_until_due(self) -> float | None:
        """How long until the oldest batched request is due or a buffered point overdue (None when nothing waits);
        for poll timeouts."""
        overdue = self.windows.seconds_until_overdue()
        if self.intake is not None:  # a row past its assembly deadline is due too
            overdue = min((t for t in (overdue, self.intake.seconds_until_due()) if t is not None), default=None)
        if self._in_flight and self.pace.adaptive:  # results are handled as soon as the model returns them
            overdue = RESULT_CHECK_S if overdue is None else min(overdue, RESULT_CHECK_S)
        if not len(self.batcher):
            return overdue
        due = max(0.0, self.batcher.max_wait_s - self.batcher.oldest_age())
        return due if overdue is None else min(due, overdue)

    def pending_sources(self) -> Iterator[Any]:
        """Sources of every record taken but not yet scored: in rows being assembled (each row's first record, its
        lowest offset), buffered in windows, queued, or in flight."""
        if self.intake is not None:
            yield from self.intake.pending_sources()
        yield from self.windows.pending_sources()
        for request in self.batcher:
            yield from request.sources
        for requests, _ in self._in_flight:
            for request in requests:
                yield from request.sources

    def unscored_entities(self) -> set[str]:
        """Entities with a window cut from their ring but not yet scored and handled (queued or in flight): their
        state would hold those points as scored, so a checkpoint round writes them only after flush_batches."""
        busy = {request.entity for request in self.batcher}
        for requests, _ in self._in_flight:
            busy.update(request.entity for request in requests)
        return busy

    def _enqueue(self, request: WindowRequest) -> None:
        self.batcher.add(request)
        if self.batcher.full():
            self._submit(self.batcher.take())

    def _score_due(self) -> None:
        # points that waited scoring.max_delay_s for their stride, or all waiting points once the load has dropped
        for request in self.windows.take_waiting() if self.pace.calm else self.windows.take_overdue():
            self._enqueue(request)
        while self.batcher.due():
            self._submit(self.batcher.take())
        self._handle_in_flight(wait=False)
        if self.pace.adaptive and len(self.batcher) and not self._in_flight:  # the model is idle: score now
            self._submit(self.batcher.take())

    def _queued_windows(self) -> int:
        """Windows waiting for the model beyond the batch it is scoring: with the poll's size, the measure of
        falling behind (a batch in flight is work in progress, not a backlog)."""
        waiting = sum(len(requests) for requests, _ in list(self._in_flight)[1:])
        return len(self.batcher) + waiting

    def _submit(self, requests: list[WindowRequest]) -> None:
        """Hand one batch to the model: on the inference thread with overlap (at most MAX_IN_FLIGHT outstanding),
        else right here."""
        windows = np.stack([r.window for r in requests])  # [B, L, C]
        keys = self.router.keys_of([r.entity for r in requests])  # which bundle scores each row (None: one)
        width = max(r.n_new for r in requests)  # the steps whose scores the batch needs: its windows' new points
        if self._executor is None:
            self._handle(requests, self._infer(windows, keys, width))
            return
        while len(self._in_flight) >= MAX_IN_FLIGHT:
            self._handle(*self._pop_in_flight())
        self._in_flight.append((requests, self._executor.submit(self._infer, windows, keys, width)))
        self._handle_in_flight(wait=False)

    def _infer(self, windows: np.ndarray, keys, width: int) -> tuple[np.ndarray, np.ndarray, float]:
        started = time.perf_counter()
        scores, contrib = self.router.score(windows, keys, width)  # [B, W], [B, W, C]: the last W steps
        return scores, contrib, time.perf_counter() - started

    def _pop_in_flight(self) -> tuple[list[WindowRequest], tuple]:
        requests, future = self._in_flight.popleft()
        return requests, future.result()  # re-raises a model error on the calling thread

    def _handle_in_flight(self, wait: bool) -> None:
        """Handle finished batches in submission order (all of them, waiting, when `wait`)."""
        while self._in_flight and (wait or self._in_flight[0][1].done()):
            self._handle(*self._pop_in_flight())

    def _take_done(self, wait: bool) -> StepResult:
        self._handle_in_flight(wait)
        self._departures.settle(self, self._done)
        done, self._done = self._done, StepResult()
        return done

    def _handle(self, requests: list[WindowRequest], inferred: tuple) -> None:
        """Threshold the new points of a scored batch at once, then the alert state of each window's chunk.

        Usually every window brings a whole stride; partial ones (warm-up ends, drains, overdue points) bring fewer
        new points, right-aligned: the columns before them are masked out. Non-finite scores are reported but
        teach nothing and never fire."""
        scores, contrib, seconds = inferred  # [B, W], [B, W, C]: the windows' last W steps
        result = self._done
        result.batches.append((len(requests), seconds))
        width = scores.shape[1]  # the batch's widest new points, as _submit asked for
        new = scores.astype(np.float64)  # [B, W]
        finite = np.isfinite(new)
        learn = finite & np.array([request.warm for request in requests])[:, None]  # [B, W]
        partial = [width - request.n_new for request in requests]  # leading columns that are not new points
        if any(partial):
            learn &= np.arange(width)[None, :] >= np.array(partial)[:, None]
        new = self.standardiser.apply([r.entity for r in requests], new, learn)
        thresholds, over = self.thresholds.decide([r.entity for r in requests], new, learn)
        any_over = over.any(axis=1).tolist()
        all_finite = bool(finite.all())
        for row, request in enumerate(requests):
            cut = partial[row]
            warm = request.warm if all_finite else learn[row, cut:]
            bad = 0 if all_finite else int((~finite[row, cut:]).sum())
            if bad:
                result.nonfinite[request.entity] = result.nonfinite.get(request.entity, 0) + bad
            result.alerts += self.alerts.update(request.entity, request.ts, new[row, cut:], thresholds[row, cut:],
                                                over[row, cut:], contrib[row, cut:],
                                                request.sources, warm=warm, any_over=any_over[row] if not cut else None,
                                                window=request.window)
            result.scored.append(Verdicts(request.entity, request.ts, new[row, cut:], thresholds[row, cut:],
                                          over[row, cut:], request.sources, request.warm))

    def state_dict(self, entity: str, settled: bool = False) -> dict:
        """Window, threshold and alert state of one entity (plain data) for checkpoints. Batches in flight are
        handled first (their results are returned by the next call), so the state includes their points; unless
        `settled`: the caller knows that no window of this entity is queued or in flight (`unscored_entities`), so
        the state is whole without waiting for the model."""
        if not settled:
            self._handle_in_flight(wait=True)
        state = {}
        if entity in self.windows:
            state.update(window=self.windows.state_dict(entity), threshold=self.thresholds.state_dict(entity),
                         alert=self.alerts.state_dict(entity))
            standardise = self.standardiser.state_dict(entity)
            if standardise is not None:
                state["standardise"] = standardise
        if self.intake is not None and self.intake.holds(entity):
            state["assembly"] = self.intake.state_dict(entity)  # rows being assembled travel with the entity
        return state

    def load_state(self, entity: str, state: dict) -> None:
        if "window" in state:
            self.windows.load_state(entity, state["window"])
            self.thresholds.load_state(entity, state["threshold"])
            self.alerts.load_state(entity, state["alert"])
            self.standardiser.load_state(entity, state.get("standardise"))
        if "assembly" in state and self.intake is not None:
            self.intake.load_state(entity, state["assembly"])
