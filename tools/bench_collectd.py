#!/usr/bin/env python3
"""collectd-format input: how close the daemon gets to consuming and decoding the same messages (issue 17 item 7).

    python tools/bench_collectd.py                 # 1,000 hosts x 40 metrics per interval, 20 intervals
    python tools/bench_collectd.py --quick         # 100 hosts (a smoke run)

tools/bench_pipeline.py prints the same rows as its (g) rows. The messages are write_kafka JSON value lists, one
metric each (as collectd writes most plugins), keyed by host:
  (g1) ceiling: kafka-python consuming + orjson-decoding them, messages/s, as (a) of bench_pipeline; (g1') the
       same with confluent-kafka (the daemon's consumer and options), as (a2)
  (g2) the daemon end to end with `input.format: collectd`: messages/s from the group assignment until every row is
       scored, and rows/s (one row per host per interval, 40 channels), with the default config otherwise
  (g3) (g2) / (g1), as (c) of bench_pipeline, and (g2) / (g1')
  (g4) engine.Pipeline alone, in process: messages/s and rows/s
The bundle (40 channels named as collectd names them) is trained first on generated rows (1 epoch; not timed).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamdet.config import load_config  # noqa: E402
from streamdet.data.series import Series  # noqa: E402
from streamdet.io.admin import ensure_topics  # noqa: E402
from streamdet.io.broker import EmbeddedBroker  # noqa: E402
from streamdet.io.producer import Producer  # noqa: E402
from streamdet.pipeline.engine import Pipeline  # noqa: E402
from streamdet.pipeline.settings import PipelineSettings  # noqa: E402
from streamdet.types import Source  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
from bench_pipeline import confluent_ceiling, raw_ceiling  # noqa: E402

METRICS = 40
DEADLINE_S = 600.0
T0 = 1_796_000_000.0


def channel(m: int) -> tuple[str, str, str, str]:
    """(plugin, plugin_instance, type, type_instance) of metric m: 8 per plugin instance, as cpu-N/cpu-STATE."""
    return "bench", str(m // 8), "gauge", f"m{m % 8}"


def channel_names() -> list[str]:
    return [f"{p}-{pi}/{t}-{ti}" for p, pi, t, ti in map(channel, range(METRICS))]


def messages(hosts: int, intervals: int, seed: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value): per interval, per host, METRICS single-value lists, times a few ms apart within a cycle."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(intervals):
        values = rng.normal(50.0, 5.0, size=(hosts, METRICS)).round(3)
        for h in range(hosts):
            host = f"host-{h:05d}"
            for m in range(METRICS):
                p, pi, ty, ti = channel(m)
                out.append((host.encode(), orjson.dumps([{
                    "values": [values[h, m]], "dstypes": ["gauge"], "dsnames": ["value"],
                    "time": round(T0 + t + 0.001 * m, 3), "interval": 1.0, "host": host, "plugin": p,
                    "plugin_instance": pi, "type": ty, "type_instance": ti}], option=orjson.OPT_SERIALIZE_NUMPY)))
    return out


def train_bundle_for(config_path: str, path: Path):
    from streamdet.train import train_bundle

    cfg = load_config(config_path, ["train.epochs=1", "train.max_windows=512", "train.device=cpu",
                                    "logging.level=WARNING"])
    rng = np.random.default_rng(1)
    rows = rng.normal(50.0, 5.0, size=(2000, METRICS)).astype(np.float32)
    series = [Series("host-train", channel_names(), rows, rows[:0], np.zeros(0, np.int8))]
    return train_bundle(cfg, out=str(path), progress=False, series=series, source={"dataset": "bench"})


def produce(kafka, batch: list[tuple[bytes, bytes]]) -> None:
    producer = Producer(kafka)
    for key, value in batch:
        producer.produce(kafka.metrics_topic, key, value)
    producer.flush(300)
    producer.close()


def daemon_rates(cfg, bundle_path: Path, bootstrap: str, rows: int) -> tuple[float, float]:
    """(g2) (messages/s, rows/s) of the daemon from the assignment until `rows` rows are scored."""
    from streamdet.serve.daemon import Daemon

    daemon = Daemon(cfg, str(bundle_path), bootstrap=bootstrap)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not daemon.metrics.is_ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    started = time.perf_counter()
    while time.monotonic() < deadline and thread.is_alive() and daemon.metrics.scored_total() < rows:
        time.sleep(0.005)
    seconds = time.perf_counter() - started
    scored, consumed = daemon.metrics.scored_total(), daemon.metrics.consumed_total()
    daemon.stop()
    thread.join(30)
    if scored < rows:
        raise SystemExit(f"the daemon scored {scored} of {rows} rows")
    return consumed / seconds, scored / seconds


def in_process(cfg, bundle, batch: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """(g4) (messages/s, rows/s) of engine.Pipeline alone."""
    pipeline = Pipeline(PipelineSettings.of(cfg), bundle)
    items = [(value, Source("bench", 0, i, 0)) for i, (_key, value) in enumerate(batch)]
    chunk, rows = cfg.kafka.max_poll_records, 0
    started = time.perf_counter()
    for i in range(0, len(items), chunk):
        rows += pipeline.process(items[i:i + chunk]).n_scored
    rows += pipeline.drain().n_scored
    elapsed = time.perf_counter() - started
    pipeline.close()
    return len(items) / elapsed, rows / elapsed


def measure(config_path: str, hosts: int, intervals: int, broker, tmp: Path) -> dict:
    """Every (g) number for one run on `broker`."""
    tag = uuid.uuid4().hex[:6]
    overrides = [f"kafka.metrics_topic=bench-collectd-{tag}", f"kafka.alerts_topic=bench-alerts-{tag}",
                 f"kafka.dlq_topic=bench-dlq-{tag}", f"kafka.group_id=bench-collectd-{tag}",
                 f"kafka.state_topic=state-collectd-{tag}", "metrics.port=0", "logging.level=WARNING",
                 "kafka.session_timeout_ms=6000", "input.format=collectd"]
    cfg = load_config(config_path, overrides)
    bundle = train_bundle_for(config_path, tmp / "collectd.pt")
    kafka = cfg.kafka.at(broker.bootstrap)
    ensure_topics(kafka, [kafka.metrics_topic, kafka.alerts_topic, kafka.dlq_topic])
    batch = messages(hosts, intervals)
    print(f"producing {len(batch):,} collectd messages ({hosts} hosts x {METRICS} metrics x {intervals} "
          "intervals) ...", file=sys.stderr)
    produce(kafka, batch)
    rows = hosts * intervals
    stride = cfg.scoring.stride
    whole = rows - hosts * (intervals % stride)  # rows in partial strides wait for scoring.max_delay_s
    g1 = raw_ceiling(broker.bootstrap, kafka.metrics_topic, len(batch))  # (a)'s measurement on these messages
    g1c = confluent_ceiling(cfg, broker.bootstrap, kafka.metrics_topic, len(batch))  # (a2)'s
    g2_messages, g2_rows = daemon_rates(cfg, tmp / "collectd.pt", broker.bootstrap, whole)
    g4 = in_process(cfg, bundle, batch)
    return {"messages": len(batch), "rows": rows, "g1": g1, "g1c": g1c, "g2": (g2_messages, g2_rows), "g4": g4}


def table_rows(r: dict, hosts: int) -> list[str]:
    g2m, g2r = r["g2"]
    return [f"| (g1) collectd ceiling: kafka-python consume + orjson decode, as (a) | {r['g1']:,.0f} messages/s |",
            f"| (g1') the same with confluent-kafka, as (a2) | {r['g1c']:,.0f} messages/s |",
            f"| (g2) daemon end to end, `input.format: collectd`, {hosts:,} hosts x {METRICS} metrics | "
            f"{g2m:,.0f} messages/s, {g2r:,.0f} rows/s |",
            f"| (g3) (g2) / (g1), as (c); and (g2) / (g1') | **{g2m / r['g1']:.0%}**; {g2m / r['g1c']:.0%} |",
            f"| (g4) engine.Pipeline alone on the same messages, in process | {r['g4'][0]:,.0f} messages/s, "
            f"{r['g4'][1]:,.0f} rows/s |"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--intervals", type=int, default=20, help="a multiple of scoring.stride (20)")
    parser.add_argument("--config", default=str(REPO / "config" / "smd.yaml"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.hosts = 100
    import torch

    torch.set_num_threads(1)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        result = measure(args.config, args.hosts, args.intervals, broker, Path(tmp))
    print(f"\n# {result['messages']:,} collectd messages -> {result['rows']:,} rows, 1 torch thread\n")
    print("| measure | value |")
    print("|---|---:|")
    print("\n".join(table_rows(result, args.hosts)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
