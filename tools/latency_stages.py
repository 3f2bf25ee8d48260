#!/usr/bin/env python3
"""Where a record's latency goes in a (g) row of tools/bench_fleet.py ((g1) 1,000 hosts x 1 record/s by default):
per record, the time from production to the consumer's poll returning it, from there to the model call that scored
it being submitted (stride and batch wait), and from there to its result being handled (model queue and call).

    python tools/latency_stages.py                         # (g1), default config, 30 s paced
    python tools/latency_stages.py --hosts 10000 --interval 10   # (g2)
    python tools/latency_stages.py --set kafka.state_topic=  # checkpoints off

It runs bench_fleet.latency_row unchanged and timestamps the stages by wrapping four methods for the length of the
run (the confluent client's poll, Pipeline._submit, Pipeline._handle, Delivery.commit): a diagnostic, not a
benchmark of record; the wrappers cost a few microseconds per record. Prints one table: each stage's p50 / p99 over
the paced records, the mean of each stage over the slowest 1 %, the model calls (count, batch sizes, strides), and
the loop's commits that took over 50 ms with how many of the slowest 1 % were waiting while one ran, and the same
for the cyclic garbage collector's passes over 20 ms (any thread: a collection holds the GIL, so it stops the loop).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tools"))

import bench_fleet  # noqa: E402
from streamdet.io.confluent import ConfluentClient  # noqa: E402
from streamdet.pipeline.engine import Pipeline  # noqa: E402
from streamdet.serve.delivery import Delivery  # noqa: E402
from streamdet.serve.state import Checkpointer  # noqa: E402

SLOW_COMMIT_S = 0.05
SLOW_GC_S = 0.02


class Stages:
    """Wall-clock stamps per record, keyed by (partition, offset), and the model calls and long commits."""

    def __init__(self):
        self.produced, self.polled, self.submitted, self.handled = {}, {}, {}, {}
        self.calls: list[tuple[float, int, int]] = []  # (submitted at, windows, stride)
        self.commits: list[tuple[float, float]] = []  # (started at, seconds)
        self.steps: list[tuple[str, float, float]] = []  # (what, started at, seconds): steps of the slow commits
        self.collections: list[tuple[float, float, int]] = []  # (started at, seconds, generation), over SLOW_GC_S
        self.polls: list[tuple[float, float]] = []  # (started at, returned at) of every poll
        self.paced_from = float("inf")

    def wrap(self) -> None:
        stages = self
        collecting: list[float] = []

        def collected(phase, info):
            if phase == "start":
                collecting[:] = [time.time()]
            elif collecting and time.time() - collecting[0] > SLOW_GC_S:
                stages.collections.append((collecting[0], time.time() - collecting[0], info["generation"]))
        gc.callbacks.append(collected)

        def timed(cls, name, before=None, after=None):
            original = getattr(cls, name)

            def wrapper(self, *args, **kwargs):
                if before:
                    before(self, *args)
                started = time.time()
                out = original(self, *args, **kwargs)
                if after:
                    after(self, out, started)
                return out
            setattr(cls, name, wrapper)

        def polled(_client, items, started):
            now = time.time()
            stages.polls.append((started, now))
            for _, source in items:
                stages.polled[source[1:3]] = now
                stages.produced[source[1:3]] = source[3] / 1000.0  # the producer's create time

        def submitted(pipeline, requests):
            now = time.time()
            stages.calls.append((now, len(requests), pipeline.pace.stride))
            for request in requests:
                for source in request.sources:
                    stages.submitted[source[1:3]] = now

        def handled(_pipeline, requests, _inferred):
            now = time.time()
            for request in requests:
                for source in request.sources:
                    stages.handled[source[1:3]] = now

        def committed(_delivery, _out, started):
            if time.time() - started > SLOW_COMMIT_S:
                stages.commits.append((started, time.time() - started))

        def step(name):  # a step of a commit that held the loop over SLOW_COMMIT_S
            def after(_self, _out, started):
                if time.time() - started > SLOW_COMMIT_S:
                    stages.steps.append((name, started, time.time() - started))
            return after

        timed(ConfluentClient, "poll", after=polled)
        timed(ConfluentClient, "flush", after=step("producer flush (end of a round)"))
        timed(ConfluentClient, "commit", after=step("offset commit"))
        timed(Delivery, "_start_round", after=step("start of a round"))
        timed(Delivery, "_score_queued", after=step("a slice waiting for the model"))
        timed(Checkpointer, "write_slice", after=step("a slice writing checkpoints"))
        timed(Pipeline, "_submit", before=submitted)
        timed(Pipeline, "_handle", before=handled)
        timed(Delivery, "commit", after=committed)
        run_paced = bench_fleet.run_paced

        def paced(*args):
            stages.paced_from = time.time()
            return run_paced(*args)
        bench_fleet.run_paced = paced

    def table(self) -> None:
        keys = [k for k, t in self.produced.items() if t >= self.paced_from and k in self.handled]
        produced = np.array([self.produced[k] for k in keys])
        polled = np.array([self.polled[k] for k in keys])
        submitted = np.array([self.submitted[k] for k in keys])
        handled = np.array([self.handled[k] for k in keys])
        stages = {"production -> poll returns it": polled - produced,
                  "poll -> model call submitted (stride, batch wait)": submitted - polled,
                  "submitted -> result handled (model queue + call)": handled - submitted,
                  "production -> handled": handled - produced}
        total = handled - produced
        slow = total >= np.percentile(total, 99)
        print(f"\n# {len(keys):,} paced records, load average {os.getloadavg()[0]:.1f}\n")
        print("| stage | p50 | p99 | mean over the slowest 1 % |")
        print("|---|---:|---:|---:|")
        for name, values in stages.items():
            ms = values * 1000
            print(f"| {name} | {np.percentile(ms, 50):,.1f} ms | {np.percentile(ms, 99):,.1f} ms | "
                  f"{ms[slow].mean():,.1f} ms |")
        calls = np.array([c for c in self.calls if c[0] >= self.paced_from] or [(0, 0, 0)])
        strides, counts = np.unique(calls[:, 2], return_counts=True)
        print(f"\nmodel calls: {len(calls)}, windows per call p50 {np.percentile(calls[:, 1], 50):.0f} / mean "
              f"{calls[:, 1].mean():.1f} / max {calls[:, 1].max():.0f}; calls by stride "
              f"{dict(zip(strides.astype(int).tolist(), counts.tolist()))}")
        commits = [(s, d) for s, d in self.commits if s >= self.paced_from]
        waited = sum(any(s < h and s + d > p for s, d in commits) for p, h in zip(produced[slow], handled[slow]))
        print(f"commits over {SLOW_COMMIT_S * 1000:.0f} ms: {len(commits)} (ms: "
              f"{', '.join(f'{d * 1000:.0f}' for _, d in commits)}); of the slowest 1 %, {waited} of "
              f"{int(slow.sum())} waited while one ran")
        steps: dict[str, list[float]] = {}
        for name, started, seconds in self.steps:
            if started >= self.paced_from:
                steps.setdefault(name, []).append(seconds * 1000)
        print(f"their steps over {SLOW_COMMIT_S * 1000:.0f} ms: " + ("; ".join(
            f"{name} {len(ms)} (max {max(ms):,.0f} ms)" for name, ms in steps.items()) or "none"))
        passes = [(s, d, g) for s, d, g in self.collections if s >= self.paced_from]
        waited = sum(any(s < h and s + d > p for s, d, _ in passes) for p, h in zip(produced[slow], handled[slow]))
        print(f"garbage collector passes over {SLOW_GC_S * 1000:.0f} ms: {len(passes)} (ms, generation: "
              f"{', '.join(f'{d * 1000:.0f} g{g}' for _, d, g in passes)}); of the slowest 1 %, {waited} of "
              f"{int(slow.sum())} waited while one ran")
        self.loop_absences(produced[slow], polled[slow])

    def loop_absences(self, produced: np.ndarray, polled: np.ndarray) -> None:
        """Was a slow record late to the poll because the loop was elsewhere (between two polls), or did it reach
        librdkafka late (broker, fetch, a starved fetch thread)? Per record: the longest time between one poll's
        return and the next poll's start while it waited."""
        polls = np.array(self.polls or [(0.0, 0.0)])
        gaps_from, gaps_to = polls[:-1, 1], polls[1:, 0]
        longest = []
        for p, q in zip(produced, polled):
            inside = (gaps_to > p) & (gaps_from < q)
            overlap = np.minimum(gaps_to[inside], q) - np.maximum(gaps_from[inside], p)
            longest.append(overlap.max() if overlap.size else 0.0)
        ms = np.array(longest) * 1000
        print(f"the loop away from poll while a slowest-1 % record waited for it: longest absence mean "
              f"{ms.mean():,.1f} ms, p50 {np.percentile(ms, 50):,.1f} ms; {int((ms > 50).sum())} of {len(ms)} "
              f"waited through an absence over 50 ms")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    bench_fleet.add_latency_row_arguments(parser)
    parser.add_argument("--hosts", type=int, default=1000, help="(g1) 1000, (g2) 10000")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between a host's records: (g2) 10")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stages = Stages()
    stages.wrap()
    with bench_fleet.EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "fleet.pt"
        bench_fleet.train_small_bundle(args.config, bundle, args.entity, tuple(args.set))
        rows, _ = bench_fleet.test_rows(args.config, args.entity)
        row = bench_fleet.latency_row(args, broker, bundle, rows, args.hosts, args.interval)
    print(f"{args.hosts:,} hosts x 1 record per {args.interval:g} s: production -> score p50 / p99: {row['score'][0]:,.0f} / {row['score'][1]:,.0f} ms "
          f"({row['scored']:,} of {row['paced']:,} scored)")
    stages.table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
