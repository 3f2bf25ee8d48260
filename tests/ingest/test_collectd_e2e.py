"""A real agent end to end: Debian's collectd writes this machine's cpu, memory, load and interface metrics to the
broker every second; `streamdet train --from-topic --until` trains on two minutes of it, recorded while a stand-in
daemon ran (the live daemon's own footprint is part of this machine's normal); `streamdet run` scores the live
stream; a bounded CPU load (stress-ng, or busy Python processes) makes an alert fire naming a cpu or load channel,
and it resolves after the load ends. Skipped, saying why, only where collectd cannot run (.ci/run installs it)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from typing import Optional

import orjson
import pytest

from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.collectd import CollectdAgent, missing
from streamdet.io.history import read_history, start_group_at
from streamdet.io.readers import TopicTail
from streamdet.serve.livedemo import (MIN_IDLE_SHARE, cpu_load, cpu_or_load, history_offsets, host_name, idle_share,
                                      resolved_all)
from tests.conftest import REPO
from tests.integration.helpers import DaemonProcess

# alone: the load must stand out in machine-wide metrics, so nothing else may run beside it (`make test` runs it
# after the rest of the suite)
pytestmark = [pytest.mark.kafka, pytest.mark.alone]

BASELINE_S = 120.0
LOAD_S = 45.0  # twice as many busy processes as cores (livedemo.LOAD_PROCESSES): where other work kept the CPUs
#                busy in the baseline, only the rising load average set the load apart (CI: 20 s of two did not)
LIVE_CONFIG = REPO / "config" / "demo-live.yaml"


def overrides(bootstrap: str, names: dict, bundle) -> list[str]:
    return [f"kafka.bootstrap_servers={bootstrap}", f"kafka.metrics_topic={names['metrics']}",
            f"kafka.alerts_topic={names['alerts']}", f"kafka.dlq_topic={names['dlq']}",
            f"kafka.group_id={names['group']}", f"kafka.state_topic=state-{names['group']}",
            f"model.bundle={bundle}", "train.device=cpu"]


def test_collectd_to_alert_and_back(broker, names, tiny_bundle, tmp_path):
    reason = missing()
    if reason is not None:
        pytest.skip(f"collectd cannot run here: {reason}")
    bundle = tmp_path / "live.pt"
    sets = overrides(broker.bootstrap, names, bundle)
    cfg = load_config(LIVE_CONFIG, sets)
    kafka = cfg.kafka.at(broker.bootstrap)
    ensure_topics(kafka, [kafka.metrics_topic, kafka.alerts_topic, kafka.dlq_topic])
    # The machine's metrics include the daemon that watches them (its polling, the broker answering its fetches, the
    # scrapes of its /metrics), so the baseline must too, or the model calls the daemon itself an anomaly (a quiet
    # baseline's threshold, ~2, under the live daemon's own footprint, 36-513, kept an alert open for good). A stand-in
    # daemon (the tiny synthetic bundle on topics of its own, scraped as the live one will be) runs through it; its
    # start-up falls in the baseline too, as restarts do in a real one.
    with CollectdAgent(broker.bootstrap, kafka.metrics_topic, host_name(), interval_s=1.0) as agent:
        baseline_end = time.monotonic() + BASELINE_S  # the agent's baseline: two minutes of this machine
        standin = DaemonProcess(tiny_bundle, broker.bootstrap, {**{k: f"standin-{v}" for k, v in names.items()},
                                                               "client": "confluent"}, tmp_path / "standin.log")
        try:
            standin.wait_ready()
            _scrape_until(standin, baseline_end)
            # the baseline ends here: the training process's own start-up (seconds of CPU) is not part of it
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
        finally:
            standin.close()
        assert agent.running(), agent.log_tail()
        idle = idle_share(cfg, kafka)
        assert idle is not None, "collectd wrote no cpu samples"
        if idle < MIN_IDLE_SHARE:  # measured, not assumed: the baseline's own cpu-idle rates
            pytest.skip(f"this machine's CPUs were {idle:.0%} idle during the baseline: other processes keep them "
                        f"busy, so {LOAD_S:.0f} s of CPU load cannot stand out in machine-wide metrics")
        cmd = [sys.executable, "-m", "streamdet", "train", "--config", str(LIVE_CONFIG), "--from-topic",
               "--no-progress", "--until", until]
        done = subprocess.run(cmd + [a for item in sets for a in ("--set", item)], cwd=REPO, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        assert bundle.exists() and "from topic" in done.stderr
        start_group_at(kafka, _next_offsets(kafka))  # score the live stream
        daemon = LiveDaemon(bundle, broker.bootstrap, names, tmp_path / "daemon.log", sets)
        try:
            daemon.wait_ready()
            with TopicTail(kafka, kafka.alerts_topic) as tail:
                alerts: list[dict] = []
                # the load starts on a quiet detector: 30 rows scored and no alert open (training's own CPU use
                # lifts the load average for a while, and an open episode would absorb the load's alert)
                settled = Watch(daemon)
                _collect(tail, alerts, lambda got: settled.scored() >= 30 and resolved_all(got, empty=True), 150, settled)
                assert settled.scored() >= 30, f"the daemon scored {settled.scored():.0f} rows in 150 s: {settled}"
                load_started = time.time()
                waiter = threading.Thread(target=cpu_load(LOAD_S), daemon=True)
                waiter.start()
                # the 1-minute load average decays for a couple of minutes after the load: the resolve waits for it
                loaded = Watch(daemon)
                _collect(tail, alerts, lambda got: _fired_and_resolved(got, load_started), LOAD_S + 240, loaded)
                waiter.join(60)
            seen = [(a["status"], round(a["start_ts"] - load_started, 1), round(a["ts"] - load_started, 1),
                     [c["name"] for c in a["top_channels"]]) for a in alerts]  # times relative to the load
            firing = [a for a in alerts if a["status"] == "firing" and a["start_ts"] >= load_started - 2]
            assert any(cpu_or_load(a) for a in firing), (seen, f"baseline {idle:.0%} idle", f"before the load: {settled}",
                                                         f"from it: {loaded}")
            resolved = [a for a in alerts if a["status"] == "resolved" and a["alert_id"] in
                        {f["alert_id"] for f in firing if cpu_or_load(f)}]
            assert resolved and max(a["ts"] for a in resolved) >= load_started + LOAD_S - 2, seen  # after the load
        finally:
            daemon.close()


def _scrape_until(daemon: DaemonProcess, end: float) -> None:
    """Scrape the daemon's /metrics twice a second until time.monotonic() passes `end` (as Watch scrapes the live
    one)."""
    while time.monotonic() < end:
        daemon.samples()
        time.sleep(0.5)


def _fired_and_resolved(alerts: list[dict], load_started: float) -> bool:
    """An alert that started with the load and names a cpu or load channel fired, and every alert resolved."""
    return resolved_all(alerts, empty=True) and any(a["status"] == "firing" and a["start_ts"] >= load_started - 2
                                         and cpu_or_load(a) for a in alerts)


def _collect(tail, alerts: list[dict], done, timeout_s: float, watch: "Watch") -> None:
    """Read alerts into `alerts` until done(alerts) or the timeout (then the caller's asserts say what came)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not done(alerts):
        alerts += [orjson.loads(raw) for raw in tail.poll(timeout_ms=500)]
        watch.look()


class Watch:
    """What the daemon's /metrics showed over one phase, for a failure message that says why no alert came: rows
    scored, the highest score against the threshold, records rejected, and the log's warnings."""

    def __init__(self, daemon: DaemonProcess):
        self.daemon = daemon
        self.first_scored: Optional[float] = None
        self.last: dict = {}
        self.peak = (0.0, 0.0)  # (score, threshold) at the highest ratio
        self.trail: list[tuple[float, float]] = []  # (score, threshold) at each change, for the failure message

    def look(self) -> None:
        self.last = self.daemon.samples()
        scored = self.scored()
        self.first_scored = scored if self.first_scored is None else self.first_scored
        scores = {labels: v for (name, labels), v in self.last.items() if name == "streamdet_entity_score"}
        for labels, score in scores.items():
            threshold = self.last.get(("streamdet_entity_threshold", labels), 0.0)
            if threshold > 0 and score / threshold > self.peak[0] / max(self.peak[1], 1e-12):
                self.peak = (score, threshold)
            if not self.trail or self.trail[-1] != (score, threshold):
                self.trail.append((score, threshold))

    def scored(self) -> float:
        return self.last.get(("streamdet_records_scored_total", ()), 0.0)

    def __str__(self) -> str:
        rejected = {dict(labels).get("reason"): v for (name, labels), v in self.last.items()
                    if name == "streamdet_records_rejected_total"}
        warnings = [line[-300:] for line in self.daemon.log_text().splitlines()
                    if '"level":"WARNING"' in line or '"level":"ERROR"' in line][-5:]
        return (f"rows scored {self.first_scored or 0:.0f} -> {self.scored():.0f}, highest score {self.peak[0]:.4g} "
                f"against threshold {self.peak[1]:.4g}, rejected {rejected}, last warnings {warnings}, "
                f"score/threshold as scraped: {' '.join(f'{s:.3g}/{t:.3g}' for s, t in self.trail[-60:])}")


class LiveDaemon(DaemonProcess):
    """`streamdet run` with the live config (DaemonProcess runs the SMD config with the tiny-bundle overrides)."""

    def __init__(self, bundle, bootstrap: str, names: dict, log_path, sets: list[str]):
        from streamdet.io.broker import free_port

        self.port = free_port()
        self.log_path = log_path
        cmd = [sys.executable, "-m", "streamdet", "run", "--config", str(LIVE_CONFIG), "--set",
               f"metrics.port={self.port}", "--set", "logging.format=json"]
        for item in sets:
            cmd += ["--set", item]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)


def _next_offsets(kafka) -> dict[int, int]:
    """Per partition the offset after the last message written so far (the live stream starts there)."""
    offsets: dict[int, int] = {}
    for _ in history_offsets(read_history(kafka), offsets):
        pass
    return offsets
