"""`streamdet alertmanager`: the alerts topic -> Alertmanager's API v2, at least once, nothing duplicated.

A separate, stateless process with its own consumer group on `kafka.alerts_topic`. One loop:
poll -> translate (translate.py) -> POST the batch (POST_CHUNK alerts a post) to every Alertmanager -> dead letters
flushed -> commit.
- Offsets are committed only after Alertmanager accepted the post (or the message went to the bridge's dead-letter
  topic): a crash or a restart re-reads, never skips; the re-posted alert has the same labels, so it is the same
  Alertmanager alert and nobody is paged twice.
- Alertmanager down, 5xx, or a 401/403/404/...: the same batch is retried with capped exponential back-off (no
  further message is consumed meanwhile), /readyz answers 503, nothing is committed.
- Alertmanager refuses an alert (400/413/422): that alert goes to the dead-letter topic with the answer; a message
  that is not an alert (not JSON, missing fields) goes there with the reason.
- Firing alerts are re-posted every `resend_interval_s` while open (Alertmanager forgets alerts across its restarts
  and resolves those not re-posted before their endsAt); a resolved alert is posted once.
- Open alerts are re-learned from the topic when partitions are assigned (the rule: openalerts.py).
- With several Alertmanagers (an HA cluster does not share alerts) a post counts as accepted when one of them took
  it, as Prometheus does; the others get firing alerts at the next resend.
One class of about 300 lines: the loop, its delivery rule and its retries read together, in commit order.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

from ..io.alertmanager import PostResult
from ..io.client import StreamClient
from ..serve.backoff import Backoff
from ..serve.delivery import dead_letter
from ..serve.signals import install_stop_signals
from ..types import Partition, Reject
from .openalerts import OpenAlerts
from .translate import MalformedAlert, parse, to_alertmanager

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 5.0  # how often an idle bridge asks the broker whether it answers (polls do not fail when not)
PROBE_TIMEOUT_MS = 2000
POST_CHUNK = 200  # alerts per POST: a proxy's body limit (nginx: 1 MB) must not refuse an incident's resend
BEAT_S = 1.0  # how often a back-off wait tells /healthz that the bridge is alive
REFUSED = "refused_by_alertmanager"  # the dead-letter reason of an alert Alertmanager answered 4xx to


class Stopped(Exception):
    """stop() was called while a post was being retried: exit without committing (the batch is redelivered)."""


@dataclass
class BridgePorts:
    """What the bridge needs from the outside, wired by main.py (the bridge's entry point) and by tests."""

    connect: Callable[[], StreamClient]  # topics made, a client in the bridge's group; raises while the broker is down
    history: Callable[[list[int]], Iterable[tuple[int, bytes]]]  # (partition, value) from the beginning to the end
    alertmanager: Any  # io.alertmanager.AlertmanagerClient: post(alerts), probe(), urls
    metrics: Any  # io.bridge_metrics.BridgeMetrics
    is_outage: Callable[[BaseException], bool]  # "the broker is not answering": retried


class Bridge:
    """`Bridge(kafka, am_cfg, ports).run()` -> exit code; `stop()` (or SIGTERM/SIGINT in the main thread) ends it
    cleanly; a second signal ends the process at once. `kafka` is the bridge's Kafka section (main.bridge_kafka: its
    own consumer group), `am_cfg` the alertmanager section."""

    def __init__(self, kafka, am_cfg, ports: BridgePorts):
        self.kafka = kafka
        self.am_cfg = am_cfg
        self.ports = ports
        self.alertmanager = ports.alertmanager
        self.metrics = ports.metrics
        self.open = OpenAlerts(self.am_cfg)
        self.backoff = Backoff(cap_s=self.am_cfg.max_backoff_s)  # Alertmanager
        self.broker_backoff = Backoff(cap_s=self.am_cfg.max_backoff_s)
        self.client: Optional[StreamClient] = None
        self._stop = threading.Event()
        self._next_resend = 0.0
        self._next_probe = 0.0
        self._committed: dict[Partition, int] = {}
        self._callback_error: Optional[BaseException] = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        with ExitStack() as stack:
            self.metrics.start_server()
            stack.callback(self.metrics.stop_server)
            install_stop_signals(stack, self.stop, "stopping")
            self._connect(stack)
            try:
                self._loop()
            except Stopped:
                log.info("stopped while retrying Alertmanager: the batch is not committed and will be redelivered")
            finally:
                self.metrics.set_state(stopped=True)
        log.info("alertmanager bridge stopped", extra={"open_alerts": len(self.open)})
        return 0

    def _connect(self, stack: ExitStack) -> None:
        """Topics, client and subscription, retried with capped back-off while the broker is unreachable."""
        while not self._stop.is_set():
            try:
                self.client = self.ports.connect()
                break
            except Exception as exc:
                if not self.ports.is_outage(exc):
                    raise
                self._broker_outage(exc)
        if self.client is None:
            return
        stack.callback(self.client.close)
        self.metrics.set_state(broker=True)
        k = self.kafka
        self.client.subscribe([k.alerts_topic], self._on_assign, self._on_revoke)
        log.info("alertmanager bridge started topic=%s group=%s alertmanagers=%s", k.alerts_topic, k.group_id,
                 ",".join(self.alertmanager.urls))

    # --- the loop -------------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        k = self.kafka
        while not self._stop.is_set() and self.client is not None:
            try:
                items = self.client.poll(k.poll_timeout_ms, k.max_poll_records)
            except Exception as exc:
                if not self.ports.is_outage(exc):
                    raise
                self._broker_outage(exc)
                continue
            self.metrics.heartbeat()
            if self._callback_error is not None:
                raise RuntimeError("re-learning open alerts failed") from self._callback_error
            if items:
                self._deliver(items)
            self._resend_if_due()
            self._commit()

    def _broker_outage(self, exc: BaseException) -> None:
        """Log once per outage, turn /readyz 503 and wait (capped back-off); the loop retries."""
        if not self.broker_backoff.failing:
            log.warning("broker unreachable (%s); retrying with back-off", exc)
        self.broker_backoff.failed()
        self.metrics.set_state(broker=False)
        self._wait(self.broker_backoff.next_delay())

    def _deliver(self, items: list) -> None:
        """Post every alert of a poll (the last event per alert_id), dead-letter what cannot be posted."""
        now = time.time()
        posts: dict[str, tuple[dict, bytes, tuple]] = {}
        for raw, source in items:
            try:
                message = parse(raw)
            except MalformedAlert as exc:
                self._dead_letter(raw, source, exc.reason, exc.detail)
                continue
            self.metrics.message(message.status)
            identity = self.open.apply(message, source[1])
            if identity is None:
                continue
            posts.pop(message.alert_id, None)  # one alert per post: its latest state
            posts[message.alert_id] = (to_alertmanager(message, self.am_cfg, now, identity), raw, source)
        self.metrics.open_alerts(len(self.open))
        entries = list(posts.values())
        for i in range(0, len(entries), POST_CHUNK):
            for raw, source, detail in self._post_all(entries[i:i + POST_CHUNK]):
                self._dead_letter(raw, source, REFUSED, detail)
            self.metrics.heartbeat()

    def _post_all(self, entries: list[tuple[dict, bytes, tuple]]) -> list[tuple[bytes, tuple, str]]:
        """Post until answered; return the entries Alertmanager refused, found by posting a refused batch one by
        one (Alertmanager keeps the valid alerts of a batch it answers 400 to; posting them again is harmless)."""
        if not entries:
            return []
        refused = self._post_until_answered([alert for alert, _, _ in entries])
        if refused is None:
            return []
        if len(entries) == 1:
            _, raw, source = entries[0]
            return [(raw, source, f"HTTP {refused.status} from {refused.url}: {refused.body}")]
        return [dead for entry in entries for dead in self._post_all([entry])]

    def _post_until_answered(self, alerts: list[dict]) -> Optional[PostResult]:
        """POST, retrying with back-off while no Alertmanager accepts or refuses; None when accepted, else the
        refusal. Raises Stopped when stop() is called meanwhile."""
        while True:
            results = self.alertmanager.post(alerts)
            if self._note(results, "post"):
                refused = [r for r in results if r.outcome == "refused"]
                return None if any(r.accepted for r in results) else refused[0]
            if self._wait(self.backoff.next_delay()):
                raise Stopped()

    def _wait(self, delay_s: float) -> bool:
        """Wait out a back-off (True when stop() came first), beating meanwhile: waiting is the bridge working, and a
        wait longer than /healthz's staleness limit (max_backoff_s allows up to an hour) would get it restarted."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            self.metrics.heartbeat()
            if self._stop.wait(min(left, BEAT_S)):
                return True
        self.metrics.heartbeat()
        return self._stop.is_set()

    def _note(self, results: list[PostResult], what: str) -> bool:
        """Count the answers and update readiness; True when an Alertmanager answered (accepted or refused)."""
        for r in results:
            self.metrics.posted(r.outcome)
        answered = any(r.outcome != "unavailable" for r in results)
        if answered:
            if self.backoff.failing:
                log.info("Alertmanager reachable again after %d failed attempts", self.backoff.attempts)
            self.backoff.reset()
        else:
            if not self.backoff.failing:
                failures = "; ".join(f"{r.url}: {r.body or r.status}" for r in results)
                log.warning("Alertmanager unavailable during %s (%s); retrying with back-off", what, failures)
            self.backoff.failed()
        self.metrics.set_state(reachable=answered)
        return answered

    def _resend_if_due(self) -> None:
        """Re-post the open alerts (fresh endsAt) every resend interval; with none open, check Alertmanager is up."""
        now = time.monotonic()
        if now < self._next_resend:
            return
        open_alerts = self.open.open_alerts()
        wall = time.time()
        if open_alerts:
            alerts = [to_alertmanager(o.message, self.am_cfg, wall, o.labels) for o in open_alerts]
            results = self._resend(alerts)
        else:
            results = self.alertmanager.probe()
        ok = self._note(results, "resend" if open_alerts else "probe")
        self._next_resend = now + (self.am_cfg.resend_interval_s if ok else self.backoff.next_delay())

    def _resend(self, alerts: list[dict]) -> list[PostResult]:
        """Post in chunks, beating between them, until one finds no Alertmanager answering (back-off then)."""
        results: list[PostResult] = []
        for i in range(0, len(alerts), POST_CHUNK):
            answers = self.alertmanager.post(alerts[i:i + POST_CHUNK])
            results += answers
            self.metrics.heartbeat()
            if all(r.outcome == "unavailable" for r in answers):
                break
        return results

    def _dead_letter(self, raw: bytes, source: tuple, reason: str, detail: str) -> None:
        log.warning("alert message dead-lettered reason=%s detail=%s", reason, detail[:200])
        self.metrics.dead_letter(reason)
        self.client.produce(self.am_cfg.dlq_topic, None, dead_letter(Reject(raw, source, reason, detail)))

    def _commit(self) -> None:
        """Dead letters acknowledged, then the offsets of everything delivered (all of it: _deliver returned). With
        nothing to commit, a probe every PROBE_INTERVAL_S (each iteration while failing) tells whether the broker
        answers."""
        offsets = {tp: o for tp, o in self.client.positions().items() if self._committed.get(tp) != o}
        pending = bool(offsets) or self.client.unacknowledged() > 0
        now = time.monotonic()
        if not pending and not self.broker_backoff.failing and now < self._next_probe:
            return
        self._next_probe = now + PROBE_INTERVAL_S
        try:
            if pending:
                self.client.flush()
                if offsets:
                    self.client.commit(offsets)
                    self._committed.update(offsets)
            else:
                self.client.probe(PROBE_TIMEOUT_MS)
        except Exception as exc:
            if not self.ports.is_outage(exc):
                raise
            self._broker_outage(exc)
            return
        if self.broker_backoff.failing:
            log.info("broker reachable again after %d failed attempts", self.broker_backoff.attempts)
        self.broker_backoff.reset()
        self.metrics.set_state(broker=True)

    # --- rebalance ------------------------------------------------------------------------------------------------
    def _on_assign(self, partitions: list[Partition]) -> None:
        """Re-learn the open alerts of the new partitions from the topic, and post them at once."""
        numbers = sorted(p for _, p in partitions)
        try:
            events = 0
            for partition, raw in self.ports.history(numbers):
                try:
                    self.open.apply(parse(raw), partition)
                    events += 1
                except MalformedAlert:
                    continue  # dead-lettered when the group consumer reaches it
        except Exception as exc:
            self._callback_error = exc
            log.exception("re-learning the open alerts failed")
            return
        log.info("partitions assigned partitions=%s events=%d open_alerts=%d", numbers, events, len(self.open))
        self.metrics.open_alerts(len(self.open))
        self.metrics.set_state(assigned=bool(partitions))
        self._next_resend = 0.0

    def _on_revoke(self, partitions: list[Partition]) -> None:
        self.open.drop_partitions(p for _, p in partitions)
        for tp in partitions:
            self._committed.pop(tp, None)
        self.client.forget(partitions)
        self.metrics.open_alerts(len(self.open))
        self.metrics.set_state(assigned=False)
