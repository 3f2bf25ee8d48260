"""`make demo-live`: streamdet on this machine's own metrics, from a real agent, ending by itself.

collectd (io/collectd.py) writes this machine's cpu, memory, load and interface metrics to an embedded broker every
second; after a short baseline the model is trained on that stream (`train --from-topic`'s code path); the daemon
then scores the live stream from where the baseline ended; a bounded CPU load (stress-ng, or busy Python processes
where stress-ng is missing) makes the machine anomalous for a while; the alerts are printed as they arrive and a
summary at the end. The end-to-end test (tests/ingest/test_collectd_e2e.py) runs the same steps.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional

import orjson

log = logging.getLogger(__name__)

# twice the cores: the run queue grows by that many whatever else competes for the CPUs, so the load averages rise
# even where other work (or a hypervisor's steal) keeps the cpu-idle rates from falling to zero
LOAD_PROCESSES = min(8, 2 * (os.cpu_count() or 1))
QUIET_AFTER_S = 180.0  # how long to wait for alerts to resolve: the 1-minute load average decays for minutes
MIN_IDLE_SHARE = 0.25  # below this idle share in the baseline, LOAD_PROCESSES busy processes barely move the metrics


@dataclass
class LiveRun:
    """What a live run saw (for the summary and the end-to-end test)."""

    baseline_messages: int = 0
    channels: list = field(default_factory=list)
    left_out: dict = field(default_factory=dict)
    load_started: float = 0.0
    load_ended: float = 0.0
    alerts: list = field(default_factory=list)
    scored: int = 0


def _busy(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def cpu_load(seconds: float) -> Callable[[], None]:
    """Start LOAD_PROCESSES CPU-bound workers for `seconds`; returns a function that waits for them to end."""
    if shutil.which("stress-ng"):
        proc = subprocess.Popen(["stress-ng", "--cpu", str(LOAD_PROCESSES), "--timeout", f"{seconds:.0f}s", "-q"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return lambda: proc.wait(timeout=seconds + 30)
    workers = [multiprocessing.Process(target=_busy, args=(seconds,), daemon=True) for _ in range(LOAD_PROCESSES)]
    for worker in workers:
        worker.start()
    return lambda: [w.join(seconds + 30) for w in workers] and None


def history_offsets(batches, sink: dict) -> Iterator:
    """Pass history batches through, remembering per partition the next offset after the last one read."""
    for batch in batches:
        for _, source in batch:
            sink[source.partition] = max(sink.get(source.partition, 0), source.offset + 1)
        yield batch


def train_on_baseline(cfg, kafka, run: LiveRun, say: Callable[[str], None]) -> dict[int, int]:
    """Train the bundle on everything the agent wrote so far; returns the next offset per partition."""
    from ..data.topic import rows_from_history
    from ..io.history import read_history
    from ..train import train_bundle

    offsets: dict[int, int] = {}
    got = rows_from_history(cfg, history_offsets(read_history(kafka), offsets))
    run.baseline_messages, run.channels = got.messages, list(got.channels)
    run.left_out = {"on too few hosts": got.rare, "constant": got.constant}
    say(f"baseline: {got.messages} messages -> {sum(len(s.train) for s in got.series)} rows of {len(got.channels)} "
        f"channels ({len(got.constant)} constant ones left out)")
    if not got.series:
        raise RuntimeError(f"the baseline is too short for window {cfg.model.window}: {got.short}")
    bundle = train_bundle(cfg, series=got.series, source={"dataset": f"topic:{cfg.kafka.metrics_topic}",
                                                           **got.summary()}, progress=False)
    say(f"trained {bundle.model_name} on {', '.join(s.entity for s in got.series)}: {bundle.path}")
    return offsets


def watch_alerts(tail, run: LiveRun, until: Callable[[list], bool], timeout_s: float,
                 say: Callable[[str], None]) -> None:
    """Print alerts from the alerts topic (an io.readers.TopicTail) as they arrive, until `until(alerts)` or the
    timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(run.alerts):
        for raw in tail.poll(timeout_ms=300):
            alert = orjson.loads(raw)
            run.alerts.append(alert)
            top = ", ".join(f"{c['name']} {c['share']:.0%}" for c in alert["top_channels"])
            say(f"  {alert['status']:8s} {alert['entity']} {time.strftime('%H:%M:%S', time.localtime(alert['ts']))} "
                f"score {alert['score']:.2f} threshold {alert['threshold']:.2f} top: {top}")


def quiet_logs() -> None:
    """The demo prints its own progress; keep the daemon's and the Kafka clients' INFO lines out of the way."""
    if logging.getLogger().level <= logging.INFO:
        logging.getLogger("streamdet").setLevel(logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.ERROR)


def idle_share(cfg, kafka) -> Optional[float]:
    """The share of CPU time this machine spent idle during the baseline (collectd's cpu-N/cpu-STATE rates), None
    without cpu samples. A CPU load cannot stand out on a machine that other processes already keep busy: the busy
    processes only get a smaller share, and the machine-wide cpu and load metrics barely move."""
    from ..io.history import read_history
    from ..pipeline.formats import make_format_decoder

    decoder = make_format_decoder(cfg.input)
    idle = total = 0.0
    for batch in read_history(kafka):
        for raw, _ in batch:
            for sample in decoder.decode(raw):
                if sample.channel.startswith("cpu-"):
                    total += sample.value
                    idle += sample.value if sample.channel.endswith("/cpu-idle") else 0.0
    return idle / total if total > 0 else None


def host_name() -> str:
    return socket.gethostname() or "this-host"


def cpu_or_load(alert: dict) -> bool:
    return any(c["name"].startswith(("cpu", "load")) for c in alert["top_channels"])


def live_phase(cfg, kafka, run: LiveRun, load_s: float, say: Callable[[str], None], settle_s: float) -> None:
    """Daemon on the live stream: settle, apply the CPU load, wait for an alert that started with it to fire and
    for every alert to resolve."""
    from ..io.readers import TopicTail
    from .daemon import Daemon
    from .demo import _wait

    daemon = Daemon(cfg, bootstrap=kafka.bootstrap_servers)
    runner = threading.Thread(target=daemon.run, name="daemon", daemon=True)
    runner.start()
    try:
        _wait(lambda: daemon.metrics.is_ready() or not runner.is_alive(), 60, "the daemon to become ready")
        say(f"daemon scoring the live stream; settling {settle_s:.0f} s ...")
        with TopicTail(kafka, kafka.alerts_topic) as tail:
            watch_alerts(tail, run, lambda _: False, settle_s, say)  # alerts before the load are shown too
            if not resolved_all(run.alerts, empty=True):
                say("waiting for the open alert to resolve before the load ...")
                watch_alerts(tail, run, lambda a: resolved_all(a, empty=True), QUIET_AFTER_S, say)
            say(f"applying CPU load: {LOAD_PROCESSES} busy processes for {load_s:.0f} s "
                f"({'stress-ng' if shutil.which('stress-ng') else 'Python'})")
            loaded = threading.Thread(target=_load_then_say, args=(run, load_s, say), daemon=True)
            run.load_started = time.time()
            loaded.start()
            watch_alerts(tail, run, lambda alerts: _fired_with_load(alerts, run) and resolved_all(alerts)
                         and not loaded.is_alive(), load_s + QUIET_AFTER_S, say)
            loaded.join(30)
        run.scored = int(daemon.metrics.scored_total())
    finally:
        daemon.stop()
        runner.join(timeout=30)


def _load_then_say(run: LiveRun, load_s: float, say: Callable[[str], None]) -> None:
    cpu_load(load_s)()
    run.load_ended = time.time()
    say("load ended; waiting for the alerts to resolve ...")


def _fired_with_load(alerts: list, run: LiveRun) -> bool:
    """An alert started after the load began (allowing for the window of the scoring that saw it first)."""
    return any(a["status"] == "firing" and a["start_ts"] >= run.load_started - 2 for a in alerts)


def resolved_all(alerts: list, empty: bool = False) -> bool:
    """Every alert that fired has resolved (and, unless `empty`, at least one fired)."""
    firing = {a["alert_id"] for a in alerts if a["status"] == "firing"}
    resolved = {a["alert_id"] for a in alerts if a["status"] == "resolved"}
    return (empty or bool(firing)) and firing <= resolved


def run_live(cfg, baseline_s: float = 120.0, load_s: float = 20.0, settle_s: float = 20.0,
             say: Callable[[str], None] = print) -> LiveRun:
    """The whole flow on an embedded broker; returns what happened."""
    from ..io.admin import ensure_topics
    from ..io.broker import EmbeddedBroker
    from ..io.collectd import CollectdAgent
    from ..io.history import start_group_at
    from ..train import train_bundle  # noqa: F401  torch in memory before the baseline: no jump when training

    run = LiveRun()
    with EmbeddedBroker() as broker:
        kafka = cfg.kafka.at(broker.bootstrap)
        ensure_topics(kafka, [kafka.metrics_topic, kafka.alerts_topic, kafka.dlq_topic])  # before the agent starts
        with CollectdAgent(broker.bootstrap, kafka.metrics_topic, host_name(), interval_s=1.0):
            say(f"collectd writing this machine's cpu, memory, load and interface metrics every second to "
                f"'{kafka.metrics_topic}'; collecting a {baseline_s:.0f} s baseline ...")
            _countdown(baseline_s, say)
            idle = idle_share(cfg, kafka)
            if idle is not None and idle < MIN_IDLE_SHARE:
                say(f"note: the CPUs were only {idle:.0%} idle during the baseline: other processes keep this machine "
                    "busy, so the CPU load may not stand out")
            offsets = train_on_baseline(cfg, kafka, run, say)
            start_group_at(kafka, offsets)
            live_phase(cfg, kafka, run, load_s, say, settle_s)
    return run


def _countdown(seconds: float, say: Callable[[str], None]) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(30.0, left))
        if end - time.monotonic() > 1:
            say(f"  ... {end - time.monotonic():.0f} s to go")


def summary(run: LiveRun, say: Callable[[str], None] = print) -> None:
    firing = [a for a in run.alerts if a["status"] == "firing"]
    with_load = [a for a in firing if a["start_ts"] >= run.load_started - 2]
    say("")
    say("summary")
    say(f"  baseline messages        {run.baseline_messages}")
    say(f"  channels in the model    {len(run.channels)} ({len(run.left_out.get('constant', []))} constant left out)")
    say(f"  rows scored live         {run.scored}")
    say(f"  alerts                   {len(firing)} firing, {len(run.alerts) - len(firing)} resolved")
    say(f"  started with the load    {len(with_load)}, {sum(cpu_or_load(a) for a in with_load)} of them naming a "
        "cpu or load channel")
