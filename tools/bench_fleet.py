#!/usr/bin/env python3
"""Realistic-fleet benchmarks on the embedded broker: latency at the rates a fleet really sends, and the cost of
serving one bundle per entity.

    python tools/bench_fleet.py                 # both latency loads (30 s paced each) and 1,000 per-entity bundles
    python tools/bench_fleet.py --quick         # 10 s paced, 100 per-entity bundles (a smoke run)
    make bench-fleet

Latency rows (g): hosts each send one record per interval, spread evenly over it, at the default config
(config/smd.yaml: adaptive scoring, LSTM-AE default preset, window 100). Every record carries its production time
as `ts`; production -> score is measured on the daemon's scored points, production -> alert on the alerts topic
(read by a consumer that polls every few milliseconds), for spikes sent by `--alert-hosts` hosts whose windows
were filled first (warm windows only ever alert).
  (g1) 1,000 hosts x 1 record/s          (g2) 10,000 hosts x 1 record per 10 s
A row ends when every paced record has been scored (or 60 s after the last was produced: the row then says how
many were), so the slowest records are in the percentiles, not cut off. The rule for warm-up: before the paced
load, each alerting host's window is filled with WARM_STEPS records (back-dated, produced at once: a burst of
alert-hosts x 100 records), and every other host sends one record (a fleet the daemon already serves, as after a
restart that restored its checkpoints); the daemon starts, the benchmark waits for /readyz (the group joined, the
model serving), for every warm-up record to be scored and for the first checkpoint rounds (every host's first
snapshot) to be committed, and reports that time on its own line (warm-up). Only then does the paced fleet load
start, and production -> score counts every paced record from the first one on. With --first-contact the other
hosts are not primed: each host's first record arrives in the measured phase (entity created, first snapshot
written then), which is the load of a fleet's very first start (g2: 10,000 new hosts within 10 s).
Each (g) row runs on a fresh embedded broker, and beside it the broker's floor (floor_row): the same stream read by
a bare librdkafka consumer on another fresh broker. The embedded broker's memory storage costs more the more it
holds (tools/broker_floor.py), so a row on a broker that earlier rows filled would measure the broker's age.
Per-entity rows (h): the daemon fed as fast as it can by 1,000 hosts, served once by one fleet bundle and once by a
bundle directory holding a bundle per host (distinct weights: the trained bundle with host-specific noise added to
its weights and buffers, so every host has its own model of the served architecture; bundles of one architecture are
scored in one grouped call, streamdet/bundle/grouped.py); records/s, resident memory after the run and start-up time
to ready. The copies keep the trained bundle's calibration, with the GPD fit training stores in it (pot.gpd), as
`streamdet train --per-entity` writes one per bundle; the daemon builds every bundle's threshold from it at start-up.
Each (h) row runs on a fresh broker too: on one broker for all of them, every per-entity row ran on a broker its
fleet row had just filled, and the later pairs on one holding every earlier row's records (2026-12-02: per-entity
45,658, 39,173, 32,205 records/s in runs 1-3). With --repeat, the last rows give the lowest and the highest
per-entity / fleet ratio of the interleaved runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from bench_pipeline import produce, records, test_rows, train_small_bundle  # noqa: E402
from streamdet.bundle import load_bundle  # noqa: E402
from streamdet.bundleset import entity_file_name  # noqa: E402
from streamdet.config import load_config  # noqa: E402
from streamdet.io.admin import ensure_topics  # noqa: E402
from streamdet.io.broker import EmbeddedBroker  # noqa: E402
from streamdet.io.producer import Producer  # noqa: E402
from streamdet.serve.daemon import Daemon  # noqa: E402

WARM_STEPS = 100  # records each alerting host sends before the paced phase (the model window)


class Running:
    """A daemon on its own thread with a latency probe on every scored point."""

    def __init__(self, cfg, bundle: Path, bootstrap: str, since: float = float("inf")):
        self.latencies: list[float] = []
        self.since = since  # only points produced after this (wall clock) count

        def observe(result):
            now = time.time()
            for chunk in result.scored:
                ts = chunk.ts[chunk.ts >= self.since]
                self.latencies.extend((now - ts).tolist())

        started = time.perf_counter()
        self.daemon = Daemon(cfg, str(bundle), bootstrap=bootstrap, observer=observe)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 600
        while not self.daemon.metrics.is_ready():
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise SystemExit("the daemon did not become ready")
            time.sleep(0.01)
        self.startup_s = time.perf_counter() - started

    def stop(self) -> None:
        self.daemon.stop()
        self.thread.join(60)


def arrived(consumer, limit: int = 500) -> list:
    """The messages queued now, else the next one within 50 ms (consume(n, t) would wait for n or the whole t), less
    errors: a reader that times each message's arrival polls with this."""
    messages = consumer.consume(limit, 0) or [consumer.poll(0.05)]
    return [m for m in messages if m is not None and m.error() is None]


def alerts_reader(cfg, bootstrap: str, topic: str, out: list, stop: threading.Event) -> threading.Thread:
    """Collect (arrival wall time, message) of every alert until `stop`."""
    from confluent_kafka import Consumer

    def run():
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"lat-{uuid.uuid4().hex[:6]}",
                             "auto.offset.reset": "earliest", "enable.auto.commit": False,
                             "fetch.wait.max.ms": cfg.kafka.fetch_max_wait_ms})
        consumer.subscribe([topic])
        while not stop.is_set():
            for message in arrived(consumer, 100):
                out.append((time.time(), orjson.loads(message.value())))
        consumer.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def prime_reader(bootstrap: str, topic: str, partitions: int, out: list) -> None:
    """Send one probe message to each partition of the alerts topic and wait until the reader has read them all: on
    the embedded broker a consumer read the first message of an empty partition seconds late, which would be timed
    as the daemon's alert latency."""
    from confluent_kafka import Producer as ConfluentProducer

    probe = ConfluentProducer({"bootstrap.servers": bootstrap})
    for partition in range(partitions):
        probe.produce(topic, orjson.dumps({"status": "probe", "entity": f"probe-{partition}"}), partition=partition)
    probe.flush(30)
    deadline = time.monotonic() + 60
    while sum(1 for _, m in list(out) if m.get("status") == "probe") < partitions:
        if time.monotonic() > deadline:
            raise SystemExit("the alerts reader did not catch up with its probes")
        time.sleep(0.01)


def paced_fleet(bootstrap: str, topic: str, hosts: int, interval_s: float, seconds: float, rows: np.ndarray,
                spike_hosts: int, out) -> None:
    """Each host sends one record per interval (host h at offset h/hosts of it), `ts` = production time. Past the
    middle, the first `spike_hosts` hosts send one spike each; puts host -> production time of its spike on `out`.
    Runs in a process of its own, so that producing never competes with the daemon for the GIL, and produces with
    librdkafka (as collectd's and Telegraf's Kafka outputs do, in C and Go): the fleet's agents run on other hosts,
    and kafka-python's producer took about 0.4 of this machine's two cores away from the daemon at 1,000 records/s."""
    from confluent_kafka import Producer as ConfluentProducer

    producer = ConfluentProducer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    rate = hosts / interval_s
    n = int(seconds * rate)
    spikes: dict[str, float] = {}
    started = time.time()
    for i in range(n):
        wait = started + i / rate - time.time()
        if wait > 0:
            time.sleep(wait)  # pacing the producer, not waiting on the daemon
        h, step = i % hosts, i // hosts
        host, ts = f"host-{h:05d}", time.time()
        values = rows[(step + 211 * h) % len(rows)]
        if h < spike_hosts and host not in spikes and i >= n // 2:
            values = values + 25.0  # far outside anything the hosts sent before
            spikes[host] = ts
        producer.produce(topic, orjson.dumps({"entity": host, "ts": ts, "values": values},
                                             option=orjson.OPT_SERIALIZE_NUMPY), host.encode())
        producer.poll(0)
    if producer.flush(120):
        raise SystemExit("the fleet's records were not all acknowledged")
    out.put(spikes)


def run_paced(*args) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    process = context.Process(target=paced_fleet, args=(*args, out))
    process.start()
    spikes = out.get(timeout=900)
    process.join(60)
    return spikes


def produce_warm_up(args, producer, topic: str, rows: np.ndarray, hosts: int, interval_s: float) -> list:
    """The records before the paced phase (module docstring, "the rule for warm-up"), produced and flushed."""
    now = time.time()
    warm = [(f"host-{h:05d}", now - (WARM_STEPS - s) * interval_s, rows[(s + 211 * h) % len(rows)])
            for s in range(WARM_STEPS) for h in range(args.alert_hosts)]
    if not args.first_contact:  # every other host known to the daemon (and checkpointed) before the paced phase
        warm += [(f"host-{h:05d}", now - interval_s, rows[(211 * h - 1) % len(rows)])
                 for h in range(args.alert_hosts, hosts)]
    for host, ts, values in warm:  # the alerting hosts' windows are full before the paced phase
        producer.produce(topic, host.encode(), orjson.dumps({"entity": host, "ts": ts, "values": values},
                                                            option=orjson.OPT_SERIALIZE_NUMPY))
    producer.flush(120)
    return warm


def finish_reading(count, n: int, stop: threading.Event, reader: threading.Thread, consumer,
                   timeout_s: float = 60.0) -> None:
    """Wait until `count()` reaches n (or timeout_s), then stop the reader thread and close its consumer."""
    deadline = time.monotonic() + timeout_s
    while count() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    reader.join(10)
    consumer.close()


def floor_row(args, broker, rows: np.ndarray, hosts: int, interval_s: float) -> dict:
    """What the broker alone allows: latency_row's stream (the same warm-up records, the same paced producer) read
    by a bare librdkafka consumer with the daemon's fetch settings, production -> poll returning the record, p50 /
    p99. The embedded broker's memory storage slows as its log grows (docs/performance.md, "The embedded broker's
    floor"), so the daemon's rows are read against this one, measured on a broker of the same age."""
    from confluent_kafka import Consumer

    tag = uuid.uuid4().hex[:6]
    cfg = load_config(args.config, [f"kafka.metrics_topic=floor-{tag}", f"kafka.group_id=floor-{tag}", *args.set])
    k = cfg.kafka.at(broker.bootstrap)
    ensure_topics(k, [k.metrics_topic])
    producer = Producer(k)
    warm = len(produce_warm_up(args, producer, k.metrics_topic, rows, hosts, interval_s))
    producer.close()
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": k.group_id, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": k.fetch_max_wait_ms})
    consumer.subscribe([k.metrics_topic])
    latencies: list[float] = []
    seen, since, stop = [0], [float("inf")], threading.Event()

    def read():
        while not stop.is_set():
            for message in arrived(consumer):
                now, ts = time.time(), orjson.loads(message.value())["ts"]
                seen[0] += 1
                if ts >= since[0]:
                    latencies.append(now - ts)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while seen[0] < warm and time.monotonic() < deadline:  # the warm-up read (and the group joined) first
        time.sleep(0.01)
    since[0] = time.time()
    seconds = max(args.seconds, 2.5 * interval_s)
    run_paced(broker.bootstrap, k.metrics_topic, hosts, interval_s, seconds, rows, 0)
    paced = int(seconds * hosts / interval_s)
    finish_reading(lambda: len(latencies), paced, stop, reader, consumer)
    return {"hosts": hosts, "interval": interval_s, "read": len(latencies), "paced": paced,
            "load": os.getloadavg()[0], "poll": np.percentile(np.asarray(latencies) * 1000, [50, 99])}


def _round_open(daemon) -> bool:
    d = daemon.delivery
    return d is not None and (d.round is not None or bool(d.ledger.touched))


def latency_row(args, broker, bundle: Path, rows: np.ndarray, hosts: int, interval_s: float) -> dict:
    tag = uuid.uuid4().hex[:6]
    cfg = load_config(args.config, [f"kafka.metrics_topic=fleet-{tag}", f"kafka.alerts_topic=fleet-alerts-{tag}",
                                    f"kafka.dlq_topic=fleet-dlq-{tag}", f"kafka.group_id=fleet-{tag}",
                                    "metrics.port=0", "logging.level=WARNING", "kafka.session_timeout_ms=6000",
                                    "alerting.min_consecutive=1", *args.set])
    k = cfg.kafka.at(broker.bootstrap)
    ensure_topics(k, [k.metrics_topic, k.alerts_topic, k.dlq_topic])
    producer = Producer(k)
    warm = produce_warm_up(args, producer, k.metrics_topic, rows, hosts, interval_s)
    alerts: list = []
    stop = threading.Event()
    reader = alerts_reader(cfg, broker.bootstrap, k.alerts_topic, alerts, stop)
    daemon = Running(cfg, bundle, broker.bootstrap)  # returns at /readyz
    ready = time.perf_counter()
    while daemon.daemon.metrics.scored_total() < len(warm):  # the warm-up records are scored, not measured
        time.sleep(0.005)
    settled = time.monotonic() + 120
    while not args.first_contact and _round_open(daemon.daemon) and time.monotonic() < settled:
        time.sleep(0.01)  # the primed hosts' first snapshots written and committed, not in the measured phase
    warmup_s = time.perf_counter() - ready
    prime_reader(broker.bootstrap, k.alerts_topic, k.partitions, alerts)
    daemon.since = time.time()
    seconds = max(args.seconds, 2.5 * interval_s)
    spikes = run_paced(broker.bootstrap, k.metrics_topic, hosts, interval_s, seconds, rows, args.alert_hosts)
    paced = int(seconds * hosts / interval_s)
    deadline = time.monotonic() + 60  # every paced record scored (the slowest are the p99), every spike alerted
    while time.monotonic() < deadline and (len(daemon.latencies) < paced or not spikes.keys() <= {
            m["entity"] for _, m in alerts if m["status"] == "firing"}):
        time.sleep(0.05)
    daemon.stop()
    stop.set()
    reader.join(10)
    producer.close()
    first: dict[str, float] = {}  # spiked host -> arrival of its first alert fired at or after the spike
    before: dict[str, str] = {}  # spiked host -> status of its last alert event before the spike
    for arrived, m in sorted((a for a in alerts if a[1]["status"] != "probe"), key=lambda a: a[1]["ts"]):
        spiked = spikes.get(m["entity"])
        if spiked is not None and m["ts"] < spiked:
            before[m["entity"]] = m["status"]
        if m["status"] == "firing" and spiked is not None and m["ts"] >= spiked:
            first.setdefault(m["entity"], arrived - spiked)
    open_at_spike = sum(1 for host in spikes if host not in first and before.get(host) == "firing")
    return {"hosts": hosts, "interval": interval_s, "scored": len(daemon.latencies), "paced": paced, "warm": len(warm),
            "warmup_s": warmup_s, "load": os.getloadavg()[0],
            "score": np.percentile(np.asarray(daemon.latencies) * 1000, [50, 99]),
            "alert": np.percentile(np.asarray(list(first.values())) * 1000, [50, 99]) if first else None,
            "alerted": len(first), "spiked": len(spikes), "open_at_spike": open_at_spike}


def per_entity_dir(trained: Path, out: Path, hosts: int) -> Path:
    """A bundle directory: the trained bundle as default, and per host a copy of it whose trained weights (a fitted
    baseline, which has none: its fitted statistics) are moved by host-specific noise (streamdet.bundle.variants:
    each file a real bundle with its own sha256, so every host has its own model of the served architecture and
    grouped scoring gathers distinct weights). Buffers of trained models are left alone: some are constants whose
    noise breaks the model (the Anomaly Transformer's squared distances turned negative and every copy scored NaN)."""
    from streamdet.bundle import torchscript
    from streamdet.bundle.variants import save_variant

    base = load_bundle(trained)
    module, _ = torchscript.load(base.path)
    moved = {name for name, _ in module.named_parameters()} or \
        {name for name, _ in module.named_buffers() if name not in ("mean", "std")}
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(trained, out / "default.pt")
    for h in range(hosts):
        generator = torch.Generator().manual_seed(h)

        def perturb(state):
            for name, tensor in state.items():
                if name in moved and tensor.is_floating_point():
                    tensor.add_(0.05 * tensor.abs().mean() * torch.randn(tensor.shape, generator=generator))

        save_variant(base, out / "entities" / entity_file_name(f"host-{h:05d}"), perturb, {"host": h})
    return out


def throughput_row(args, broker, bundle: Path, stream: list, label: str) -> dict:
    tag = uuid.uuid4().hex[:6]
    cfg = load_config(args.config, [f"kafka.metrics_topic=tp-{tag}", f"kafka.alerts_topic=tp-alerts-{tag}",
                                    f"kafka.dlq_topic=tp-dlq-{tag}", f"kafka.group_id=tp-{tag}", "metrics.port=0",
                                    "logging.level=WARNING", "kafka.session_timeout_ms=6000", *args.set])
    k = cfg.kafka.at(broker.bootstrap)
    ensure_topics(k, [k.metrics_topic, k.alerts_topic, k.dlq_topic])
    produce(cfg, broker.bootstrap, k.metrics_topic, stream)
    rss_before, load = _rss_mib(), os.getloadavg()[0]
    daemon = Running(cfg, bundle, broker.bootstrap)
    started, cpu = time.perf_counter(), time.process_time()
    target = len(stream) - args.hosts * cfg.scoring.stride  # partial strides wait in the windows
    while daemon.daemon.metrics.scored_total() < target and daemon.thread.is_alive():
        time.sleep(0.01)
    scored = daemon.daemon.metrics.scored_total()
    rate, cpu = scored / (time.perf_counter() - started), time.process_time() - cpu
    rss = _rss_mib()
    router = daemon.daemon.pipeline.router
    daemon.stop()
    return {"label": label, "rate": rate, "startup": daemon.startup_s, "rss_growth": rss - rss_before,
            "cpu_us": cpu / max(scored, 1) * 1e6, "grouped": router.grouped_count(),
            "stacked_mib": router.grouped_bytes() / 2**20, "load": (load, os.getloadavg()[0])}


def _rss_mib() -> float:
    """Resident memory of this process now (MiB), from /proc (the peak from getrusage never falls)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def add_latency_row_arguments(parser: argparse.ArgumentParser) -> None:
    """The options latency_row and the bundle it scores with read (tools/latency_stages.py runs latency_row too)."""
    parser.add_argument("--config", default=str(REPO / "config" / "smd.yaml"))
    parser.add_argument("--entity", default="machine-1-2", help="SMD machine the bundle is trained on")
    parser.add_argument("--seconds", type=float, default=30.0, help="paced phase of each latency row")
    parser.add_argument("--alert-hosts", type=int, default=50, help="hosts that send a spike in each latency row")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--first-contact", action="store_true",
                        help="latency rows without priming: every host's first record arrives in the measured phase "
                             "(its entity created and first snapshot written then), as at a fleet's very first start")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_latency_row_arguments(parser)
    parser.add_argument("--hosts", type=int, default=1000, help="hosts (and per-entity bundles) of the (h) rows")
    parser.add_argument("--records", type=int, default=300_000, help="records of each (h) row (300 per host at 1,000 "
                        "hosts: a window fills at 100, the rest are scored at the adaptive stride)")
    parser.add_argument("--repeat", type=int, default=1, help="pairs of (h) rows, fleet and per-entity interleaved")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-per-entity", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.hosts, args.records, args.alert_hosts = 10.0, 100, 20_000, 10
    torch.set_num_threads(1)
    results = {"latency": [], "floor": [], "throughput": []}
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "fleet.pt"
        train_small_bundle(args.config, bundle, args.entity, tuple(args.set))
        rows, source = test_rows(args.config, args.entity)
        if not args.skip_latency:
            for hosts, interval in ((1000, 1.0), (10_000, 10.0)):  # each row on a fresh broker (its floor, too)
                with EmbeddedBroker() as broker:
                    results["latency"].append(latency_row(args, broker, bundle, rows, hosts, interval))
                with EmbeddedBroker() as broker:
                    results["floor"].append(floor_row(args, broker, rows, hosts, interval))
        if not args.skip_per_entity:
            started = time.perf_counter()
            directory = per_entity_dir(bundle, Path(tmp) / "per-entity", args.hosts)
            print(f"exported {args.hosts} bundles in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            stream = records(args.records, args.hosts, 1.7e9, rows)
            for run in range(1, args.repeat + 1):  # interleaved: fleet, per-entity, fleet, ... (load alike)
                for path, label in ((bundle, "fleet bundle"), (directory, f"{args.hosts} per-entity bundles")):
                    with EmbeddedBroker() as broker:  # fresh: a broker earlier rows filled is slower
                        results["throughput"].append({**throughput_row(args, broker, path, stream, label),
                                                      "run": run})
    print_table(args, source, results)
    return 0


def print_table(args, source: str, results: dict) -> None:
    cfg = load_config(args.config, list(args.set))
    s = cfg.scoring
    print(f"\n# {source}; model {cfg.model.name} (window {cfg.model.window}), scoring adaptive={s.adaptive} "
          f"stride ceiling {s.stride}, batch {s.max_batch}, 1 torch thread\n")
    if results["latency"]:
        primed = ("every host's first record in the measured phase (--first-contact)" if args.first_contact
                  else "every host known to the daemon and checkpointed before it")
        print("Latency: every paced record, from the first; the warm-up burst is scored before the paced load starts "
              f"and is timed on its own line; {primed}; load = 1-minute load average at the row's end.\n")
    print("| row | value |")
    print("|---|---:|")
    for i, row in enumerate(results["latency"], start=1):
        load = f"{row['hosts']:,} hosts x 1 record per {row['interval']:g} s"
        print(f"| (g{i}) {load}: warm-up, {row['warm']:,} records produced before the daemon started, scored "
              f"after /readyz within (not in the rows below) | {row['warmup_s'] * 1000:,.0f} ms |")
        print(f"| (g{i}) {load}: production -> score, p50 / p99 ({row['scored']:,} of {row['paced']:,} records; "
              f"load {row['load']:.1f}) | {row['score'][0]:,.0f} / {row['score'][1]:,.0f} ms |")
        alert = "no alert" if row["alert"] is None else f"{row['alert'][0]:,.0f} / {row['alert'][1]:,.0f} ms"
        missed = row["spiked"] - row["alerted"]
        why = f"; of the {missed} others, {row['open_at_spike']} had an alert open at the spike (no new firing)" \
            if missed else ""
        print(f"| (g{i}) {load}: production -> alert on the topic, p50 / p99 ({row['alerted']} of "
              f"{row['spiked']} spikes{why}) | {alert} |")
        for floor in results["floor"][i - 1:i]:
            print(f"| (g{i}) {load}: the broker's floor, production -> poll by a bare librdkafka consumer of the "
                  f"same stream on a fresh broker, p50 / p99 ({floor['read']:,} of {floor['paced']:,} records; load "
                  f"{floor['load']:.1f}) | {floor['poll'][0]:,.0f} / {floor['poll'][1]:,.0f} ms |")
    for row in results["throughput"]:
        name = f"(h) run {row['run']}, {args.hosts:,} hosts, {row['label']}"
        print(f"| {name}: records/s (load average {row['load'][0]:.1f} -> {row['load'][1]:.1f}) | "
              f"{row['rate']:,.0f} |")
        print(f"| {name}: CPU time of the daemon's process per record (all threads; contention on a shared machine "
              f"does not inflate it) | {row['cpu_us']:,.0f} us |")
        print(f"| {name}: start-up to ready | {row['startup']:.1f} s |")
        print(f"| {name}: resident memory added by the daemon run | {row['rss_growth']:,.0f} MiB |")
        if row["grouped"]:
            print(f"| {name}: stacked weights of the {row['grouped']:,} bundles scored grouped | "
                  f"{row['stacked_mib']:,.0f} MiB |")
    rows = results["throughput"]
    for fleet, per in zip(rows[::2], rows[1::2]):
        print(f"| (h) run {fleet['run']}: per-entity / fleet records/s | {per['rate'] / fleet['rate']:.0%} |")
        print(f"| (h) run {fleet['run']}: per-entity / fleet CPU time per record | "
              f"{per['cpu_us'] / fleet['cpu_us']:.2f}x |")
    ratios = [per["rate"] / fleet["rate"] for fleet, per in zip(rows[::2], rows[1::2])]
    if len(ratios) > 1:
        print(f"| (h) {len(ratios)} runs: per-entity / fleet records/s, lowest / highest | "
              f"{min(ratios):.0%} / {max(ratios):.0%} |")


if __name__ == "__main__":
    sys.exit(main())
