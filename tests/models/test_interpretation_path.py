"""Interpretation metrics rank exactly the channels the daemon's alerts send, for every model in the registry.

HitRate and NDCG (docs/RESULTS.md) are computed from the `top_channels` of alerts raised by a replay through the
live pipeline. Here each model's bundle replays a series at stride 1 (each row scored at the end of its own window),
and every firing alert's ranking must be the model's own contributions at that row, each standardised by the bundle's
attribution record (fitted on other rows, as train.attribution fits it on validation tails), ranked as
`top_channels` ranks them: MIXAD's memory-attention shift and SAR's association-weighted error are their
explanations. The daemon's
alert (alerting.top_channels, 3 by default) must send the first channels of that same ranking.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from streamdet.bundle import export_bundle, load_bundle
from streamdet.config import load_config
from streamdet.evaluate.backtest import evaluation_config, replay_entity
from streamdet.evaluate.report import interpretation_pairs
from streamdet.models import registry
from streamdet.pipeline.alerts import top_channels
from streamdet.pipeline.attribution import attributed
from streamdet.train.attribution import fit_attribution

from .helpers import C, L

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = [f"m{i}" for i in range(C)]
ROWS = 160


def _rows(seed: int = 0) -> np.ndarray:
    """Phase-shifted waves with noise and a few level jumps on one channel at a time [ROWS, C] (raw units)."""
    rng = np.random.default_rng(seed)
    t = np.arange(ROWS)[:, None]
    x = np.sin(t / 5.0 + np.arange(C)[None, :]) + 0.2 * rng.standard_normal((ROWS, C))
    for start in range(50, ROWS, 30):
        x[start:start + 4, (start // 30) % C] += 3.0
    return x.astype(np.float32)


def _windows(seed: int) -> torch.Tensor:
    """Every window of _rows(seed) [N, L, C]."""
    return torch.from_numpy(np.lib.stride_tricks.sliding_window_view(_rows(seed), L, axis=0).transpose(0, 2, 1).copy())


def _bundle(name: str, tmp_path: Path):
    """The model on its tiny preset, fitted by prepare() where it has one, exported with a calibration sample of
    its own scores on other rows (threshold at their median, so alerts fire and resolve often)."""
    torch.manual_seed(0)
    model = registry.build(name, C, L, "tiny", {})
    model.prepare(_windows(1))
    model.eval()
    with torch.inference_mode():
        scores, contrib = model(_windows(2))  # rows unseen by prepare(), as validation rows are
    sample = scores[:, -1].tolist()
    attribution = fit_attribution("tail", contrib[:, -1].numpy())
    export_bundle(model, tmp_path / "b.pt", channels=CHANNELS, mean=np.zeros(C), std=np.ones(C),
                  calibration={"n": len(sample), "sample": sample, "stride": 1, "attribution": attribution},
                  training={}, config={"preset": "tiny"})
    return load_bundle(tmp_path / "b.pt")


def _config():
    return load_config(ROOT / "config" / "smd.yaml", [
        f"model.window={L}", "scoring.stride=1", "threshold.method=percentile", "threshold.percentile=50",
        "threshold.update=false", "alerting.min_consecutive=1", "alerting.cooldown=1",
        "alerting.resolve_quantile=0"])


@pytest.mark.parametrize("name", registry.names())
def test_alert_rankings_are_the_models_contributions_at_the_firing_row(name, tmp_path):
    bundle, rows, cfg = _bundle(name, tmp_path), _rows(), _config()
    run = replay_entity(evaluation_config(cfg, C), bundle, "e", rows)
    firing = [a for a in run.alerts if a["status"] == "firing"]
    assert len(firing) >= 2, f"{name}: the median threshold should fire alerts"
    series = SimpleNamespace(interpretation=[(0, ROWS, [0])])  # one segment over the whole split, truth m0
    ranked = [r for r, _ in interpretation_pairs(run, series, CHANNELS)]
    assert len(ranked) == len(firing)
    for alert, ranking in zip(firing, ranked):
        window = torch.from_numpy(rows[alert["row"] - L + 1: alert["row"] + 1][None])  # the row's own window
        with torch.inference_mode():
            contrib = bundle.module(window)[1][0, -1].numpy()  # [C] at the firing row
        want = [c["name"] for c in top_channels(attributed(contrib, bundle.calibration["attribution"]), CHANNELS, C)]
        assert ranking == want, f"{name} row {alert['row']}: {ranking} != contributions' {want}"
    daemon = replay_entity(cfg, bundle, "e", rows)  # the daemon's config: alerting.top_channels as configured
    sent = [[c["name"] for c in a["top_channels"]] for a in daemon.alerts if a["status"] == "firing"]
    assert sent == [r[:cfg.alerting.top_channels] for r in ranked]
