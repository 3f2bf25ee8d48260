#!/usr/bin/env python3
"""The embedded broker on its own: does its delivery latency depend on how long it has been running?

    .venv/bin/python tools/broker_floor.py                       # 1,000 records/s for 60 s
    .venv/bin/python tools/broker_floor.py --rate 1000 --seconds 60 --retention-ms 5000

No streamdet daemon: a fresh embedded broker (Tansu, memory storage), one librdkafka producer sending records like
bench_fleet's paced fleet (`ts` = production time, linger 5 ms, acks all) at a fixed rate to a 4-partition topic, and
one librdkafka consumer with the daemon's fetch settings (`fetch.wait.max.ms` from the config) polling it. Prints,
per 5 s of production time, production -> poll p50 / p99 and the broker process's CPU (cores). If the broker's cost
grew with its log, the latency of the same load rises through the run: that is a property of the benchmark's broker,
which the (g) rows of tools/bench_fleet.py are read against (their "broker's floor" row).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

from bench_fleet import arrived, finish_reading  # noqa: E402
from streamdet.config import load_config  # noqa: E402
from streamdet.io.broker import EmbeddedBroker  # noqa: E402

BUCKET_S = 5
PARTITIONS = 4


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO / "config" / "smd.yaml"))
    parser.add_argument("--rate", type=float, default=1000.0, help="records per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--retention-ms", type=int, default=0, help="topic retention.ms (0: the broker's default)")
    args = parser.parse_args(argv)
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    fetch_wait_ms = load_config(args.config).kafka.fetch_max_wait_ms
    values = [round(float(v), 3) for v in np.random.default_rng(0).random(38)]
    with EmbeddedBroker() as broker:
        config = {"retention.ms": str(args.retention_ms)} if args.retention_ms else {}
        admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept alive until the topic exists
        for future in admin.create_topics([NewTopic("floor", PARTITIONS, 1, config=config)]).values():
            future.result()
        consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "floor", "enable.auto.commit": False,
                             "fetch.wait.max.ms": fetch_wait_ms})
        consumer.assign([TopicPartition("floor", p, 0) for p in range(PARTITIONS)])
        received: list[tuple[float, float]] = []
        stop = threading.Event()

        def read():
            while not stop.is_set():
                for message in arrived(consumer):
                    received.append((orjson.loads(message.value())["ts"], time.time()))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5})
        marks, started = [cpu_seconds(broker.pid)], time.time()
        n = int(args.rate * args.seconds)
        for i in range(n):
            wait = started + i / args.rate - time.time()
            if wait > 0:
                time.sleep(wait)
            host = f"host-{i % 10_000:05d}"
            producer.produce("floor", orjson.dumps({"entity": host, "ts": time.time(), "values": values}),
                             host.encode())
            producer.poll(0)
            if (i + 1) % int(args.rate * BUCKET_S) == 0:
                marks.append(cpu_seconds(broker.pid))
        producer.flush(60)
        finish_reading(lambda: len(received), n, stop, reader, consumer)
    pairs = np.asarray(received)
    print(f"\n# {args.rate:,.0f} records/s for {args.seconds:g} s, fetch.wait.max.ms {fetch_wait_ms}, "
          f"retention.ms {args.retention_ms or 'default'}; {len(pairs):,} of {n:,} records read\n")
    print("| production time | records | production -> poll p50 / p99 | broker CPU (cores) |")
    print("|---|---:|---:|---:|")
    for b in range(len(marks) - 1):
        lo = started + b * BUCKET_S
        chosen = (pairs[:, 0] >= lo) & (pairs[:, 0] < lo + BUCKET_S)
        latency = (pairs[chosen, 1] - pairs[chosen, 0]) * 1000
        p50, p99 = np.percentile(latency, [50, 99]) if latency.size else (float("nan"),) * 2
        print(f"| {b * BUCKET_S}-{(b + 1) * BUCKET_S} s | {int(chosen.sum()):,} | {p50:,.0f} / {p99:,.0f} ms | "
              f"{(marks[b + 1] - marks[b]) / BUCKET_S:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
