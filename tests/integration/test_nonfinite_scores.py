"""Points a model scores NaN or infinite are counted and exported (streamdet_scores_nonfinite_total): such a point
never fires an alert nor teaches a threshold, so without the counter its host would go unwatched without a word.

The served bundle is real (exported, verified, loaded by the daemon): a detector that scores each step by the size
of its first channel and, like a model pushed far outside its training range, returns NaN past a limit. A bundle
that did so on its own training mean is refused at start-up (tests/pipeline/test_grouped_scoring.py); this one
passes that probe and fails only on the spike."""

from __future__ import annotations

import threading

import numpy as np
import orjson
import torch

from streamdet.bundle import export_bundle, load_bundle
from streamdet.config import load_config
from streamdet.io.admin import ensure_topics
from streamdet.io.producer import Producer
from streamdet.serve.daemon import Daemon
from tests.conftest import SMD_CONFIG, TINY_WINDOW, tiny_overrides, wait_until

LIMIT = 50.0  # standard deviations of the first channel past which the detector breaks
SPIKE_ROWS = 7


class BreaksFarOut(torch.nn.Module):
    """|first channel| per step (normalised input), NaN where it exceeds LIMIT."""

    name = "breaks_far_out"

    def __init__(self, window: int):
        super().__init__()
        self.window = window

    def forward(self, x: torch.Tensor):
        first = x[:, :, 0].abs()  # [B, L]
        scores = torch.where(first > LIMIT, torch.full_like(first, float("nan")), first)
        return scores, x.abs()  # [B, L], [B, L, C]


def test_points_scored_nan_are_counted_and_the_others_still_scored(broker, names, tiny_bundle, tmp_path, caplog):
    tiny = load_bundle(tiny_bundle)
    path = tmp_path / "breaks.pt"
    export_bundle(BreaksFarOut(TINY_WINDOW), path, channels=list(tiny.channels), mean=tiny.mean, std=tiny.std,
                  calibration=tiny.calibration, training={"test": True})
    cfg = load_config(SMD_CONFIG, tiny_overrides(path) + [
        f"kafka.metrics_topic={names['metrics']}", f"kafka.alerts_topic={names['alerts']}",
        f"kafka.dlq_topic={names['dlq']}", f"kafka.group_id={names['group']}", "metrics.port=0",
        "logging.level=WARNING", "scoring.adaptive=false", "scoring.stride=1"])
    kafka = cfg.kafka.at(broker.bootstrap)
    ensure_topics(kafka, [kafka.metrics_topic])
    rng = np.random.default_rng(0)
    mean, std, C = np.asarray(tiny.mean), np.asarray(tiny.std), len(tiny.channels)
    rows = 3 * TINY_WINDOW
    spike = range(2 * TINY_WINDOW, 2 * TINY_WINDOW + SPIKE_ROWS)
    producer = Producer(kafka)
    for t in range(rows):
        for host in ("steady", "spiky"):
            values = mean + std * rng.normal(size=C)
            if host == "spiky" and t in spike:
                values[0] = mean[0] + 10 * LIMIT * std[0]
            message = {"entity": host, "ts": 1.7e9 + t, "values": values.round(4).tolist()}
            producer.produce(kafka.metrics_topic, host.encode(), orjson.dumps(message))
    producer.flush()
    daemon = Daemon(cfg, str(path), bootstrap=broker.bootstrap)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
    runner.start()
    try:
        wait_until(lambda: daemon.metrics.scored_total() >= 2 * rows, 60, "every point of both hosts scored")
    finally:
        daemon.stop()
        runner.join(60)
    assert codes == [0]
    assert daemon.metrics.scored_total() == 2 * rows
    assert daemon.metrics.nonfinite_total() == SPIKE_ROWS  # the spike's points, and no other
    warnings = [r.getMessage() for r in caplog.records if "NaN or infinite" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].endswith("entities: spiky")  # once a minute at most, naming the host
