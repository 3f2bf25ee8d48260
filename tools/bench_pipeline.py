#!/usr/bin/env python3
"""Pipeline benchmark on the embedded broker: how close the daemon gets to what the Kafka client alone can do.

    python tools/bench_pipeline.py                    # 600,000 records, 100 entities x 38 channels
    python tools/bench_pipeline.py --quick            # 20,000 records (a smoke run)
    python tools/bench_pipeline.py --saturation       # only the rows (a) to (c'): the default config's throughput
    make bench

One run prints one table:
  (a) raw ceiling: records/s that kafka-python alone consumes and decodes (orjson) from the topic
  (b) the daemon end to end at the default config (config/smd.yaml: kafka.client confluent, window 100, stride 20,
      batch 256, LSTM-AE default preset, POT thresholds, checkpoints every 5 s, alerts published): records/s from
      the group assignment until every record is scored (600,000 records take 5 to 8 s: a sustained rate, where
      200,000 mostly timed the first fetches)
  (c) (b) / (a)
  (a2) the raw ceiling of confluent-kafka (librdkafka), the default config's consumer
  (b', c') the daemon with kafka.client=kafka-python, and (b') / (a)
  (b2, b3) the pipeline alone in process, and model inference time as a share of its wall time (with
      scoring.overlap the model runs on its own thread, so this is how busy that thread is)
  (d) p50 / p99 latency from record production to its score, at a paced rate (--rate)
  (e) scoring-only windows/s of the bundle at batch sizes 1, 16, 64, 256
  (f) resident memory per 1,000 entities (windows + thresholds + alert state, window 100 x 38 channels)
  (g1-g4) collectd-format input, 1,000 hosts x 40 metrics per interval (100 hosts with --quick): the confluent
      consume + orjson ceiling of those messages, the daemon end to end in messages/s and rows/s, their ratio, and
      the pipeline alone (tools/bench_collectd.py)
  (h) the state changelog at 1,000 and 10,000 entities (--changelog): bytes per second against the input's, bytes
      per touched entity per commit, and the restore of every entity (tools/bench_changelog.py has the method)
`--formats` prints another table instead: (b) for the default model as a TorchScript bundle, as a torch.export
bundle (`scoring.compile: none`) and compiled with AOTInductor (`scoring.compile: aoti`; the compile happens before
/readyz and is not timed), interleaved runs, medians (docs/models.md, "Bundle formats").
The bundle is trained first with streamdet.train.train_bundle (1 epoch on one SMD machine; not timed).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from pathlib import Path

import numpy as np
import orjson
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamdet.config import load_config  # noqa: E402
from streamdet.io.broker import EmbeddedBroker  # noqa: E402
from streamdet.io.admin import ensure_topics  # noqa: E402
from streamdet.io.confluent import librdkafka_options  # noqa: E402
from streamdet.io.producer import Producer  # noqa: E402
from streamdet.pipeline.engine import Pipeline  # noqa: E402
from streamdet.pipeline.settings import PipelineSettings  # noqa: E402
from streamdet.pipeline.scorer import Scorer  # noqa: E402
from streamdet.replay import encode_record  # noqa: E402
from streamdet.serve.daemon import Daemon  # noqa: E402
from streamdet.types import Source  # noqa: E402

sys.path.insert(0, str(REPO / "tools"))
import bench_changelog  # noqa: E402

C = 38
DEADLINE_S = 600.0


def train_small_bundle(config_path: str, path: Path, entity: str, extra: tuple[str, ...] = ()):
    """A real bundle from streamdet.train.train_bundle on one SMD machine, kept short (1 epoch, 512 windows): the
    scoring cost depends on the architecture, not on how long it trained, so the measured rates are those of a fully
    trained model."""
    from streamdet.train import train_bundle

    cfg = load_config(config_path, [f"data.entities=[{entity}]", "train.epochs=1", "train.max_windows=512",
                                    "train.device=cpu", "logging.level=WARNING", *extra])
    started = time.perf_counter()
    bundle = train_bundle(cfg, out=str(path), progress=False)
    print(f"trained {bundle.model_name} on SMD {entity} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return bundle


def test_rows(config_path: str, entity: str) -> tuple[np.ndarray, str]:
    """The rows the benchmark replays: the SMD machine's test split (what the bundle would see live, about 4 %
    anomalous), or uniform noise when ../shared/data is absent (every point then looks anomalous to the model: a
    worst case for the alert path)."""
    from streamdet.data import data_available, load_series

    cfg = load_config(config_path, [f"data.entities=[{entity}]"])
    if data_available(cfg):
        return np.asarray(load_series(cfg, [entity])[0].test, dtype=np.float64).round(4), f"SMD {entity} test split"
    return np.random.default_rng(1).random((5000, C)).round(4), "uniform noise (no ../shared/data)"


def records(n: int, entities: int, ts0: float, rows: np.ndarray) -> list[tuple[bytes, bytes]]:
    """n records round-robin over `entities`; each entity replays `rows` from its own starting point."""
    out = []
    for i in range(n):
        e, step = i % entities, i // entities
        entity = f"host-{e:05d}"
        out.append((entity.encode(), encode_record(entity, ts0 + step, rows[(step + 211 * e) % len(rows)])))
    return out


def produce(cfg, bootstrap: str, topic: str, batch: list[tuple[bytes, bytes]], rate: float = 0.0) -> None:
    producer = Producer(cfg.kafka.at(bootstrap))
    started = time.perf_counter()
    for i, (key, value) in enumerate(batch):
        if rate:
            value = orjson.dumps({**orjson.loads(value), "ts": time.time()})
            wait = started + i / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        producer.produce(topic, key, value)
    producer.flush(120)
    producer.close()


def raw_ceiling(bootstrap: str, topic: str, n: int) -> float:
    """(a) records/s kafka-python alone consumes and decodes, timed from the group assignment (so no record is
    fetched before the clock starts, as for the daemon)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                             auto_offset_reset="earliest", enable_auto_commit=False, session_timeout_ms=6000,
                             heartbeat_interval_ms=1000, max_poll_records=5000)
    seen, untimed, started = 0, 0, None
    deadline = time.monotonic() + DEADLINE_S
    while seen < n and time.monotonic() < deadline:
        batches = consumer.poll(timeout_ms=200)
        if started is None:
            if consumer.assignment():
                started = time.perf_counter()
            early = sum(len(batch) for batch in batches.values())  # fetched before the clock: not counted
            untimed, seen = untimed + early, seen + early
            continue
        for batch in batches.values():
            for record in batch:
                orjson.loads(record.value)
            seen += len(batch)
    seconds = time.perf_counter() - started
    consumer.close()
    return (seen - untimed) / seconds


def confluent_ceiling(cfg, bootstrap: str, topic: str, n: int) -> float:
    """(a2) the same with confluent-kafka (librdkafka) consuming, timed from the assignment (librdkafka fetches
    ahead in the background, so a clock started at the first record would miss that work). The consumer has the
    daemon's librdkafka options (io/confluent.py), in a group of its own."""
    from confluent_kafka import Consumer

    consumer = Consumer({**librdkafka_options(cfg.kafka.at(bootstrap)), "group.id": f"raw-{uuid.uuid4().hex[:6]}"})
    started: list[float] = []
    consumer.subscribe([topic], on_assign=lambda _c, _p: started.append(time.perf_counter()))
    seen = 0
    deadline = time.monotonic() + DEADLINE_S
    while seen < n and time.monotonic() < deadline:
        for message in consumer.consume(5000, 0.2):
            orjson.loads(message.value())
            seen += 1
    seconds = time.perf_counter() - started[0]
    consumer.close()
    return seen / seconds


def run_daemon(cfg, bundle_path: Path, bootstrap: str, until_scored: int, latencies: list | None = None,
               when_ready=None) -> float:
    def observe(result):
        if latencies is not None:
            now = time.time()
            latencies.extend(now - p.ts for p in result.points())

    daemon = Daemon(cfg, str(bundle_path), bootstrap=bootstrap, observer=observe)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + DEADLINE_S
    while not daemon.metrics.is_ready() and time.monotonic() < deadline:  # assigned and model loaded
        time.sleep(0.005)
    started = time.perf_counter()  # the clock starts here for both clients, as for the raw ceilings
    if when_ready is not None:  # latency run: produce only once the group has joined
        when_ready()
    while time.monotonic() < deadline and thread.is_alive():
        if daemon.metrics.scored_total() >= until_scored:
            break
        time.sleep(0.005)
    ended = time.perf_counter()
    scored = daemon.metrics.scored_total()
    daemon.stop()
    thread.join(30)
    if not scored:
        raise SystemExit("the daemon scored nothing")
    return scored / (ended - started)


def pipeline_only(cfg, bundle, batch: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """Records/s of engine.Pipeline alone (decode -> alerts, in process, no Kafka) and the share of that time spent
    in model inference: what bounds (b) besides the consumer."""
    pipeline = Pipeline(PipelineSettings.of(cfg), bundle)
    items = [(value, Source("bench", 0, i, 0)) for i, (_key, value) in enumerate(batch)]
    chunk = cfg.kafka.max_poll_records
    inference = 0.0
    started = time.perf_counter()
    for i in range(0, len(items), chunk):
        inference += sum(seconds for _size, seconds in pipeline.process(items[i:i + chunk]).batches)
    inference += sum(seconds for _size, seconds in pipeline.drain().batches)
    elapsed = time.perf_counter() - started
    pipeline.close()
    return len(items) / elapsed, inference / elapsed


def scoring_only(bundle, window: int) -> dict[int, float]:
    scorer = Scorer(bundle.module, 1)
    out = {}
    for size in (1, 16, 64, 256):
        x = np.random.default_rng(2).random((size, window, C), dtype=np.float32)
        scorer.score(x)
        repeats = max(3, 2048 // size)
        started = time.perf_counter()
        for _ in range(repeats):
            scorer.score(x)
        out[size] = size * repeats / (time.perf_counter() - started)
    return out


def memory_per_1000_entities(cfg, bundle, entities: int = 2000) -> float:
    """Bytes the pipeline's per-entity state holds (ring buffers, thresholds, alert state) per 1,000 entities, counted
    by tracemalloc (numpy buffers included): the process RSS is too coarse and moves with the allocator."""
    pipeline = Pipeline(PipelineSettings.of(cfg), bundle)
    row = np.random.default_rng(3).random(len(bundle.channels), dtype=np.float32)
    L = pipeline.window
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for e in range(entities):
        entity = f"e{e:06d}"
        pipeline.windows.push([entity] * L, [float(t) for t in range(L)], np.tile(row, (L, 1)),
                              [Source("t", 0, t) for t in range(L)])
        pipeline.thresholds.decide([entity], np.array([[0.1]]), np.array([[True]]))
        pipeline.alerts.update(entity, np.array([float(L)]), np.array([0.1]), np.array([1.0]), np.array([False]),
                               row[None, :], [Source("t", 0, L)])
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return held / entities * 1000


FORMATS = {"TorchScript": ("bench.pt", "none"), "exported": ("bench.pt2", "none"),
           "AOTInductor": ("bench.pt2", "aoti")}  # row -> (bundle file, scoring.compile)


def format_rates(args, broker, overrides: list[str], tag: str, tmp: Path) -> dict[str, list[float]]:
    """(b) per bundle format: records/s of the daemon end to end, `args.repeats` interleaved runs each."""
    train_small_bundle(args.config, tmp / "bench.pt", args.entity)
    train_small_bundle(args.config, tmp / "bench.pt2", args.entity, ("train.export_format=export",))
    rates: dict[str, list[float]] = {row: [] for row in FORMATS}
    for r in range(args.repeats):
        for row, (bundle, compile_mode) in FORMATS.items():
            run = f"{tag}-{r}-{compile_mode}-{bundle.replace('.', '')}"
            run_cfg = load_config(args.config, overrides + [f"kafka.group_id=bench-{run}",
                                                            f"kafka.state_topic=state-{run}",
                                                            f"scoring.compile={compile_mode}",
                                                            f"scoring.compile_cache={tmp / 'aoti'}"])
            in_partial = args.entities * (run_cfg.scoring.stride - 1)
            rates[row].append(run_daemon(run_cfg, tmp / bundle, broker.bootstrap, args.records - in_partial))
    return rates


def print_format_rates(args, cfg, rates: dict[str, list[float]]) -> None:
    print(f"\n# {args.records:,} records, {args.entities} entities x {C} channels, model {cfg.model.name} (window "
          f"{cfg.model.window}, stride {cfg.scoring.stride}, batch {cfg.scoring.max_batch}), 1 torch thread, "
          f"kafka.client {cfg.kafka.client}; median of {args.repeats} interleaved runs (each run in brackets)\n")
    print("| bundle format | daemon end to end | / TorchScript |")
    print("|---|---:|---:|")
    base = float(np.median(rates["TorchScript"]))
    for row, values in rates.items():
        each = ", ".join(f"{v:,.0f}" for v in values)
        print(f"| {row} | {np.median(values):,.0f} records/s ({each}) | {np.median(values) / base:.2f}x |")


def print_saturation(args, cfg, source: str, rates: dict[str, list[float]]) -> None:
    """The table's header and its saturation rows: (a), (b), (c), (a2), (b'), (c')."""
    print(f"\n# {args.records:,} records ({source}), {args.entities} entities x {C} channels, model {cfg.model.name} "
          f"(window {cfg.model.window}, stride {cfg.scoring.stride}, batch {cfg.scoring.max_batch}), 1 torch thread; "
          f"rates: median of {args.repeats} interleaved runs (each run in brackets)\n")
    print("| measure | value |")
    print("|---|---:|")
    med = {row: float(np.median(values)) for row, values in rates.items()}

    def rate(row: str) -> str:
        spread = f" ({', '.join(f'{v:,.0f}' for v in rates[row])})" if len(rates[row]) > 1 else ""
        return f"{med[row]:,.0f} records/s{spread}"

    def ratio(top: str, bottom: str) -> str:
        each = [f"{t / b:.0%}" for t, b in zip(rates[top], rates[bottom])]
        return f"{med[top] / med[bottom]:.0%}" + (f" (each run: {', '.join(each)})" if len(each) > 1 else "")

    print(f"| (a) raw ceiling: kafka-python consume + orjson decode | {rate('a')} |")
    print(f"| (b) daemon end to end, default config (`kafka.client: {cfg.kafka.client}`) | {rate('b')} |")
    print(f"| (c) daemon / raw ceiling, (b) / (a) | {ratio('b', 'a')} |")
    print(f"| (a2) raw ceiling with confluent-kafka: consume + orjson decode | {rate('a2')} |")
    python = "b'"
    print(f"| (b') daemon end to end, `kafka.client: kafka-python` | {rate(python)} |")
    print(f"| (c') (b') / (a) | {ratio(python, 'a')} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--entities", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0, help="records/s of the paced latency run")
    parser.add_argument("--latency-records", type=int, default=20_000)
    parser.add_argument("--config", default=str(REPO / "config" / "smd.yaml"))
    parser.add_argument("--entity", default="machine-1-2", help="SMD machine the bundle is trained on")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of (a), (a2), (b), (b'): medians")
    parser.add_argument("--changelog", default="1000,10000", help="(h): entity counts, comma-separated ('' skips)")
    parser.add_argument("--changelog-seconds", type=float, default=60.0, help="(h): seconds of stream per count")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--formats", action="store_true", help="(b) per bundle format only")
    parser.add_argument("--saturation", action="store_true",
                        help="the saturation rows only: (a), (a2), (b), (b') and their ratios")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.latency_records, args.repeats = 20_000, 4000, 1
        args.changelog, args.changelog_seconds = "200", 20.0
    torch.set_num_threads(1)
    tag = uuid.uuid4().hex[:6]
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        overrides = [f"kafka.metrics_topic=bench-{tag}", f"kafka.alerts_topic=bench-alerts-{tag}",
                     f"kafka.dlq_topic=bench-dlq-{tag}", "metrics.port=0", "logging.level=WARNING",
                     "kafka.session_timeout_ms=6000"]
        cfg = load_config(args.config, overrides + [f"kafka.group_id=bench-{tag}"])
        if args.formats:
            ensure_topics(cfg.kafka.at(broker.bootstrap), [cfg.kafka.metrics_topic])
            rows, _ = test_rows(args.config, args.entity)
            produce(cfg, broker.bootstrap, cfg.kafka.metrics_topic, records(args.records, args.entities, 1.7e9, rows))
            print_format_rates(args, cfg, format_rates(args, broker, overrides, tag, Path(tmp)))
            return 0
        bundle = train_small_bundle(args.config, Path(tmp) / "bench.pt", args.entity)
        k = cfg.kafka
        ensure_topics(k.at(broker.bootstrap), [k.metrics_topic, k.alerts_topic, k.dlq_topic])
        print(f"producing {args.records:,} records ({args.entities} entities x {C} channels) ...", file=sys.stderr)
        rows, source = test_rows(args.config, args.entity)
        stream = records(args.records, args.entities, 1.7e9, rows)
        produce(cfg, broker.bootstrap, k.metrics_topic, stream)
        gc.collect()
        gc.freeze()  # the replayed records stay alive here: out of the collector's way for every row alike, as the
        #              daemon freezes its own start-up heap (otherwise each full collection in the daemon's thread
        #              would also walk this benchmark's replayed records)
        in_partial = args.entities * (cfg.scoring.stride - 1)
        rates: dict[str, list[float]] = {"a": [], "a2": [], "b": [], "b'": []}
        for r in range(args.repeats):  # interleaved, so that a slow spell of the machine hits every row alike
            rates["a"].append(raw_ceiling(broker.bootstrap, k.metrics_topic, args.records))
            rates["a2"].append(confluent_ceiling(cfg, broker.bootstrap, k.metrics_topic, args.records))
            for row, client in (("b", cfg.kafka.client), ("b'", "kafka-python")):  # each run its group and changelog
                run = f"{tag}-{r}-{'b' if row == 'b' else 'kp'}"  # a row's own name, even if both use one client
                run_cfg = load_config(args.config, overrides + [f"kafka.group_id=bench-{run}",
                                                                f"kafka.state_topic=state-{run}",
                                                                f"kafka.client={client}"])
                rates[row].append(run_daemon(run_cfg, Path(tmp) / "bench.pt", broker.bootstrap,
                                             args.records - in_partial))
        if args.saturation:
            print_saturation(args, cfg, source, rates)
            return 0
        latencies: list = []
        lat_cfg = load_config(args.config, [f"kafka.metrics_topic=lat-{tag}", f"kafka.alerts_topic=bench-alerts-{tag}",
                                            f"kafka.dlq_topic=bench-dlq-{tag}", f"kafka.group_id=lat-{tag}",
                                            "metrics.port=0", "logging.level=WARNING"])
        ensure_topics(lat_cfg.kafka.at(broker.bootstrap), [f"lat-{tag}"])
        n_lat = args.latency_records
        sender = threading.Thread(target=produce, args=(lat_cfg, broker.bootstrap, f"lat-{tag}",
                                                        records(n_lat, args.entities, 0.0, rows), args.rate))
        run_daemon(lat_cfg, Path(tmp) / "bench.pt", broker.bootstrap, n_lat - in_partial, latencies,
                   when_ready=sender.start)
        sender.join()
        in_process, inference_share = pipeline_only(cfg, bundle, stream)
        scoring = scoring_only(bundle, cfg.model.window)
        memory = memory_per_1000_entities(cfg, bundle)
        import bench_collectd  # tools/ is on sys.path when this file runs

        hosts = 100 if args.quick else 1000
        collectd = bench_collectd.measure(args.config, hosts, 20, broker, Path(tmp))
        changelog = [bench_changelog.measure(cfg, bundle, broker.bootstrap, int(n), args.changelog_seconds, rows)
                     for n in args.changelog.split(",") if n]
    lat = np.asarray(latencies) * 1000
    print_saturation(args, cfg, source, rates)
    print(f"| (b2) engine.Pipeline alone, in process (no Kafka) | {in_process:,.0f} records/s |")
    print(f"| (b3) model inference time / (b2) wall time | {inference_share:.0%} |")
    print(f"| (d) latency production -> score at {args.rate:,.0f} records/s, p50 / p99 | "
          f"{np.percentile(lat, 50):,.0f} / {np.percentile(lat, 99):,.0f} ms |")
    for size, value in scoring.items():
        print(f"| (e) scoring only, batch {size} | {value:,.0f} windows/s |")
    print(f"| (f) resident memory per 1,000 entities | {memory / 2**20:,.1f} MiB |")
    print("\n".join(bench_collectd.table_rows(collectd, hosts)))
    for result in changelog:
        print("\n".join(f"| (h) {line[2:]}" for line in bench_changelog.rows_line(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
