#!/usr/bin/env python3
"""State changelog benchmark (issue 22): changelog bytes against the input's, and the restore of every entity.

    python tools/bench_changelog.py                       # 1,000 then 10,000 entities, 60 s of stream each
    python tools/bench_changelog.py --entities 1000 --seconds 20
    (tools/bench_pipeline.py prints the same rows as (h))

The stream: every entity sends 2.5 records/s of 38 values (the SMD test rows the pipeline benchmark replays,
4 decimals) for `seconds` of stream time. The default config's pipeline with a real bundle (LSTM-AE, trained as in
bench_pipeline.py) scores them, and at every commit interval of stream time (kafka.commit_interval_ms, 5 s) the
real Checkpointer writes the touched entities' checkpoints through the daemon's producer to the embedded broker's
changelog topic and flushes, as the daemon's commit does. Stream time rather than a paced 60 s: a commit covers
exactly the records a daemon that keeps up would have consumed in one interval, on any machine. Then a fresh
pipeline restores every entity from the broker (read to the end, fold, load), timed.
Bytes count keys and values, as Kafka stores them, before any broker-side compression.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from streamdet.config import load_config  # noqa: E402
from streamdet.io.broker import EmbeddedBroker  # noqa: E402
from streamdet.io.admin import ensure_topics  # noqa: E402
from streamdet.io.producer import Producer  # noqa: E402
from streamdet.io.readers import read_to_end  # noqa: E402
from streamdet.pipeline.engine import Pipeline  # noqa: E402
from streamdet.pipeline.settings import PipelineSettings  # noqa: E402
from streamdet.replay import encode_record  # noqa: E402
from streamdet.serve.ledger import Ledger  # noqa: E402
from streamdet.serve.state import Checkpointer  # noqa: E402
from streamdet.types import Source  # noqa: E402

RATE = 2.5  # records per second per entity
PARTITIONS = 4  # of the (simulated) metrics topic: sources carry a partition and per-partition offsets
CHUNK = 500  # records per pipeline.process call (the daemon's kafka.max_poll_records)


class CountingProducer:
    """The daemon's producer, counting what goes to the changelog."""

    def __init__(self, producer):
        self.producer = producer
        self.bytes = 0
        self.records = 0
        self.kinds: dict[str, list[int]] = {"snapshot": [0, 0], "delta": [0, 0]}  # kind -> [records, bytes]

    def produce(self, topic, key, value) -> None:
        size = len(key or b"") + len(value or b"")
        self.bytes += size
        self.records += 1
        if value is not None:
            kind = self.kinds["delta" if b"\x00" in key else "snapshot"]
            kind[0], kind[1] = kind[0] + 1, kind[1] + size
        self.producer.produce(topic, key, value)

    def flush(self) -> int:
        return self.producer.flush(120)


def stream_commit(entities: int, commit: int, per_commit: float, rows: np.ndarray, offsets: list[int]):
    """The records of one commit interval, round robin over entities: (value, source) items and their bytes."""
    first, last = int(round(commit * per_commit)), int(round((commit + 1) * per_commit))
    items, size = [], 0
    for step in range(first, last):
        for e in range(entities):
            entity = f"host-{e:05d}"
            value = encode_record(entity, 1.7e9 + step / RATE, rows[(step + 211 * e) % len(rows)])
            partition = e % PARTITIONS
            items.append((value, Source("bench-metrics", partition, offsets[partition], 0)))
            offsets[partition] += 1
            size += len(value) + len(entity)
    return items, size


def measure(cfg, bundle, bootstrap: str, entities: int, seconds: float, rows: np.ndarray) -> dict:
    """Write `seconds` of stream for `entities` entities through the real checkpointer, then restore them all."""
    kafka = replace(cfg.kafka, state_topic=f"bench-state-{uuid.uuid4().hex[:8]}").at(bootstrap)
    ensure_topics(kafka, [kafka.state_topic], compacted=True)
    producer = CountingProducer(Producer(kafka))
    pipeline, ledger = Pipeline(PipelineSettings.of(cfg), bundle), Ledger()
    checkpointer = Checkpointer(kafka, producer)
    interval_s = kafka.commit_interval_ms / 1000.0
    commits = int(round(seconds / interval_s))
    input_bytes, checkpoints, write_s, write_cpu_s, offsets = 0, 0, 0.0, 0.0, [0] * PARTITIONS
    for commit in range(commits):
        items, size = stream_commit(entities, commit, RATE * interval_s, rows, offsets)
        input_bytes += size
        for i in range(0, len(items), CHUNK):
            ledger.took(pipeline.process(items[i:i + CHUNK]).held)
        ledger.took(pipeline.flush_batches().held)
        started, cpu = time.perf_counter(), time.process_time()
        checkpoints += len(ledger.touched)
        checkpointer.write(pipeline, ledger, sorted(ledger.touched))
        ledger.touched.clear()
        producer.flush()
        write_s, write_cpu_s = write_s + time.perf_counter() - started, write_cpu_s + time.process_time() - cpu
    pipeline.close()
    writer = checkpointer.writer
    fresh = Pipeline(PipelineSettings.of(cfg), bundle)
    started, cpu = time.perf_counter(), time.process_time()
    records = list(read_to_end(kafka, kafka.state_topic))  # what Checkpointer.restore reads, timed apart
    read_s = time.perf_counter() - started
    restorer = Checkpointer(kafka, None)  # a new process's: it knows nothing but the changelog
    restored = restorer.restore_from(fresh, Ledger(), {("bench-metrics", p) for p in range(PARTITIONS)}, records)
    restore_s, restore_cpu_s = time.perf_counter() - started, time.process_time() - cpu
    fresh.close()
    stream_s = commits * interval_s
    return {"entities": entities, "seconds": stream_s, "input_Bps": input_bytes / stream_s,
            "changelog_Bps": producer.bytes / stream_s, "per_checkpoint": producer.bytes / max(checkpoints, 1),
            "snapshots": writer.snapshots, "deltas": writer.deltas, "records": producer.records,
            "mean_bytes": {kind: b / max(n, 1) for kind, (n, b) in producer.kinds.items()},
            "write_s_per_commit": write_s / commits, "write_cpu_s_per_commit": write_cpu_s / commits,
            "restored": restored, "restore_s": restore_s, "read_s": read_s,
            "restore_cpu_s": restore_cpu_s,
            "read_records": len(records), "read_bytes": sum(len(k or b"") + len(v or b"") for k, v in records)}


def rows_line(result: dict) -> list[str]:
    """The benchmark table's rows for one measure() result."""
    e = f"{result['entities']:,} entities"
    ratio = result["changelog_Bps"] / result["input_Bps"]
    return [
        f"| changelog, {e} x {RATE} records/s x 38 values, {result['seconds']:.0f} s of stream, commit every 5 s: "
        f"input / changelog bytes per second | {result['input_Bps'] / 1e6:,.2f} / {result['changelog_Bps'] / 1e6:,.2f}"
        f" MB/s ({ratio:.0%} of the input) |",
        f"| changelog, {e}: bytes per touched entity per commit; snapshots / deltas written (mean bytes) | "
        f"{result['per_checkpoint']:,.0f} B; {result['snapshots']:,} ({result['mean_bytes']['snapshot']:,.0f} B) / "
        f"{result['deltas']:,} ({result['mean_bytes']['delta']:,.0f} B) |",
        f"| changelog, {e}: checkpoint write + flush per commit (all touched entities) | "
        f"{result['write_s_per_commit']:.2f} s ({result['write_cpu_s_per_commit']:.2f} s of CPU) |",
        f"| restore of {result['restored']:,} entities from the broker: read to the end ({result['read_records']:,} "
        f"records, {result['read_bytes'] / 1e6:,.0f} MB), then fold and load | {result['restore_s']:.1f} s "
        f"({result['read_s']:.1f} s reading; {result['restore_cpu_s']:.1f} s of CPU) |",
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entities", default="1000,10000", help="comma-separated entity counts")
    parser.add_argument("--seconds", type=float, default=60.0, help="stream time per run")
    parser.add_argument("--config", default=str(REPO / "config" / "smd.yaml"))
    parser.add_argument("--entity", default="machine-1-2", help="SMD machine the bundle is trained on")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "tools"))
    from bench_pipeline import test_rows, train_small_bundle

    import torch

    torch.set_num_threads(1)
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, ["metrics.port=0", "logging.level=WARNING"])
        bundle = train_small_bundle(args.config, Path(tmp) / "bench.pt", args.entity)
        rows, source = test_rows(args.config, args.entity)
        lines = []
        for entities in (int(n) for n in args.entities.split(",")):
            started = time.perf_counter()
            lines += rows_line(measure(cfg, bundle, broker.bootstrap, entities, args.seconds, rows))
            print(f"{entities:,} entities took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    print(f"\n# state changelog ({source}), model {cfg.model.name}, default config\n")
    print("| measure | value |")
    print("|---|---:|")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
