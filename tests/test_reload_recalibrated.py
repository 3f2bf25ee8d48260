"""Hot reload of one bundle file: a bundle retrained with the same weights but another calibration (training is
seeded, so changing only threshold.init_level or train.attribution retrains the very same weights) is served, and
its entities' thresholds start from the new calibration; re-writing the same bundle is not a reload."""

from __future__ import annotations

import numpy as np
import torch

from streamdet.bundle import export_bundle, load_bundle
from streamdet.config import load_config
from streamdet.models import registry
from streamdet.pipeline.engine import Pipeline
from streamdet.pipeline.settings import PipelineSettings
from streamdet.serve.reload import BundleReloader
from tests.reliability.test_reload_dir import ReloadCounts
from tests.test_bundleset import CHANNELS, L


def write(path, init_threshold: float):
    """The same weights every time (seed 0); only the calibration's starting threshold differs."""
    torch.manual_seed(0)
    model = registry.build("autoencoder", len(CHANNELS), L, "tiny")
    peaks = [0.1, 0.2, 0.3, 0.5, 0.8]
    calibration = {"n": 200, "stride": L, "sample": [init_threshold] * 20, "quantiles": {"0.5": 1.0},
                   "pot": {"init_threshold": init_threshold, "n_init": 200, "peaks": peaks, "n_peaks": len(peaks)}}
    return export_bundle(model, path, channels=CHANNELS, mean=np.zeros(len(CHANNELS)), std=np.ones(len(CHANNELS)),
                         calibration=calibration, training={"epochs": 1}, config={"preset": "tiny"})


def test_a_recalibrated_bundle_with_the_same_weights_is_reloaded(tmp_path):
    live = tmp_path / "live.pt"
    first = write(live, 1.0)
    cfg = load_config(None, [f"scoring.stride={L}", "scoring.overlap=false"])
    pipeline = Pipeline(PipelineSettings.of(cfg), load_bundle(live))
    before = pipeline.thresholds.current("host-1")
    counts = ReloadCounts()
    reloader = BundleReloader(live, load_bundle(live), counts)

    write(live, 1.0)  # the same bundle written again: nothing to reload
    reloader.watch.request()
    assert reloader.poll() is None

    recalibrated = write(live, 5.0)
    assert recalibrated.sha256 == first.sha256  # same weights
    reloader.watch.request()
    new = reloader.poll()
    assert new is not None, "the new calibration was ignored: its weights' sha256 equals the running one's"
    pipeline.replace_model(new)
    reloader.served(new)
    assert pipeline.thresholds.current("host-1") > before
    assert counts == {"ok": 1}
    pipeline.close()
