"""A shared scenario for the fault tests: three entities replaying the fixture entity's labelled anomaly
(tests/fixture_data.py), and the alerts an uninterrupted run emits (computed in-process by the same pipeline code, per
entity independent of interleaving)."""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import orjson

from streamdet.bundleset import load_bundle_set
from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from tests.conftest import SMD_CONFIG, tiny_overrides, wait_until
from tests.fixture_data import replay_slice, split_rows
from tests.integration.helpers import DaemonProcess, read_topic, record

ENTITIES = ("rig-a", "rig-b", "rig-c")
FIRST_ROW, LAST_ROW = replay_slice(460, lead=170)  # the fixture's labelled anomaly starts 170 rows in
# These tests compare alerts with an uninterrupted backtest exactly, so the window each point is scored in must not
# depend on timing: max_delay_s=0 (a fault longer than the delay bound would score the records waiting for their
# stride in partial windows) and a fixed stride (the adaptive stride follows the load of the moment; every record is
# still scored exactly once, tests/pipeline/test_adaptive_and_routing.py). docs/reliability.md says so.
EXTRA = ("alerting.min_consecutive=1", "kafka.commit_interval_ms=200", "scoring.max_delay_s=0",
         "scoring.adaptive=false")
HOLD_LIMIT_S = 120.0  # a held producer gives up (and fails its test) after this
ALERT_FIELDS = ("alert_id", "status", "entity", "start_ts", "ts", "score", "threshold", "top_channels")


def scenario_records() -> list[tuple[str, bytes]]:
    """(key, value) in production order: the entities interleaved row by row."""
    rows = split_rows(FIRST_ROW, LAST_ROW)
    out = []
    for i, values in enumerate(rows):
        for entity in ENTITIES:
            out.append((entity, record(entity, FIRST_ROW + i, values)))
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]], rate: float = 0.0,
            hold_at: Optional[int] = None, resume: Optional[threading.Event] = None) -> None:
    """Produce `records` (paced at `rate` per second when given). With `hold_at`, the records from that index on
    wait until `resume` is set, so that a test can be sure traffic continues after a fault it injects."""
    cfg = load_config(None, ["kafka.partitions=2"])
    ensure_topics(cfg.kafka.at(bootstrap), [topic])
    producer = Producer(cfg.kafka.at(bootstrap))
    started = time.monotonic()
    for n, (key, value) in enumerate(records):
        if n == hold_at and resume is not None:
            producer.flush()
            if not resume.wait(HOLD_LIMIT_S):
                raise TimeoutError(f"the producer was held at record {n} for {HOLD_LIMIT_S:.0f} s")
            started = time.monotonic() - n / rate if rate else started
        if rate:
            ahead = started + n / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the producer, not waiting on the system under test
        producer.produce(topic, key.encode(), value)
    producer.flush()
    producer.close()


def reference_alerts(bundle_path: Path, records: list[tuple[str, bytes]], extra=EXTRA) -> dict[tuple, dict]:
    """The alerts of an uninterrupted run that scored every full stride (no final drain): (alert_id, status) ->
    message."""
    cfg = load_config(SMD_CONFIG, tiny_overrides(bundle_path) + list(extra))
    pipeline = Pipeline(PipelineSettings.of(cfg), load_bundle_set(bundle_path))  # a bundle file or a directory of per-entity bundles
    events = pipeline.process((value, ("ref", 0, i, 0)) for i, (_, value) in enumerate(records)).alerts
    events += pipeline.flush_batches().alerts
    messages = [orjson.loads(orjson.dumps(e.to_message())) for e in events]  # as a consumer reads them
    return {alert_key(m): m for m in messages}


def alert_key(message: dict) -> tuple[str, str]:
    return message["alert_id"], message["status"]


def published_alerts(bootstrap: str, topic: str, want: dict, timeout_s: float) -> list[dict]:
    """Read the alerts topic until every wanted (alert_id, status) is there or the deadline passes, so that
    `alert_mismatches` can name what is missing instead of the read timing out."""
    return _alerts_until(bootstrap, topic, lambda got: want.keys() <= {alert_key(m) for m in got}, timeout_s)


def _alerts_until(bootstrap: str, topic: str, complete: Callable[[list[dict]], bool], timeout_s: float) -> list[dict]:
    """The alerts read until complete(alerts read) or the deadline, whichever comes first (never a timeout error)."""
    give_up = time.monotonic() + timeout_s
    return read_topic(bootstrap, topic, lambda got: complete(got) or time.monotonic() > give_up, timeout_s + 10)


def alert_mismatches(want: dict, messages: list[dict]) -> list[str]:
    """Missing, unexpected, or different alerts. Ids, entities and timestamps must be equal; scores, thresholds and
    channel shares within float tolerance (a window scored in another batch size may differ in the last bits)."""
    problems = []
    seen = {alert_key(m) for m in messages}
    problems += [f"missing {key}" for key in sorted(want.keys() - seen)]
    problems += [f"unexpected {key}" for key in sorted(seen - want.keys())]
    for message in messages:
        expected = want.get(alert_key(message))
        if expected is not None:
            problems += [f"{alert_key(message)} {field}: {message[field]!r} != {expected[field]!r}"
                         for field in ALERT_FIELDS if not _same(message[field], expected[field])]
    return problems


def _same(got, expected) -> bool:
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and math.isclose(got, expected, rel_tol=1e-4, abs_tol=1e-6)
    if isinstance(expected, dict):
        return isinstance(got, dict) and got.keys() == expected.keys() and all(_same(got[k], v)
                                                                             for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(_same, got, expected))
    return got == expected


def kafka_errors(daemon: DaemonProcess) -> float:
    """streamdet_kafka_errors_total over every kind: one per failed attempt (connect, flush, commit, probe)."""
    return sum(v for (name, _), v in daemon.samples().items() if name == "streamdet_kafka_errors_total")


def start_daemon(bundle: Path, bootstrap: str, names: dict, log: Path, *extra: str) -> DaemonProcess:
    return DaemonProcess(bundle, bootstrap, names, log, extra=EXTRA + (f"kafka.state_topic=state-{names['group']}",)
                         + extra)


def kill_hard(daemon: DaemonProcess) -> None:
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait(10)


@contextmanager
def killed_mid_stream(bundle: Path, bootstrap: str, names: dict, records: list[tuple[str, bytes]], tmp_path: Path,
                      before_kill: Callable[[DaemonProcess], None] = lambda first: None) -> Iterator[DaemonProcess]:
    """A daemon streams `records` at 700/s and is killed with SIGKILL once it has committed three times and scored
    300 records (`before_kill(first)` runs just before); yields a second daemon of the same group, ready, that takes
    over. Both are closed on exit."""
    first = start_daemon(bundle, bootstrap, names, tmp_path / "first.log")
    second = None
    try:
        first.wait_ready()
        sender = threading.Thread(target=produce, args=(bootstrap, names["metrics"], records, 700.0))
        sender.start()
        wait_until(lambda: first.value("streamdet_commits_total") >= 3
                   and first.value("streamdet_records_scored_total") >= 300, 30, "commits and scores")
        before_kill(first)
        kill_hard(first)
        sender.join(30)
        second = start_daemon(bundle, bootstrap, names, tmp_path / "second.log")
        second.wait_ready()
        yield second
    finally:
        first.close()
        if second is not None:
            second.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
