"""`streamdet evaluate --out` writes the figures the research projects show (issue 19 item 6); each file opens as a
non-empty image with something drawn on it."""

from __future__ import annotations

import numpy as np
import pytest

from streamdet.config import load_config
from streamdet.evaluate.run import run_evaluate
from tests.conftest import SMD_CONFIG, TINY_ENTITY, tiny_overrides

pytest.importorskip("matplotlib")
from PIL import Image  # noqa: E402  (matplotlib depends on pillow)


def opened(path) -> np.ndarray:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def test_evaluate_out_writes_every_figure_as_a_drawn_png(tiny_bundle, tmp_path):
    cfg = load_config(SMD_CONFIG, tiny_overrides(tiny_bundle))
    run_evaluate(cfg, tiny_bundle, entities=[TINY_ENTITY], out_dir=tmp_path)
    expected = {f"{TINY_ENTITY}.png", "loss.png", "roc_pr.png", "score_distributions.png",
                f"{TINY_ENTITY}.window.png"}
    assert expected <= {p.name for p in tmp_path.glob("*.png")}
    for name in expected:
        pixels = opened(tmp_path / name)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100, name
        assert pixels.std() > 5, f"{name} is blank"


def test_roc_and_pr_curves_follow_the_scores():
    from streamdet.evaluate.plots import curves

    fpr, tpr, precision, recall = curves(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert tpr[np.searchsorted(fpr, 0.0, side="right") - 1] == 1.0  # perfect ranking: all positives before any fp
    assert precision[1] == 1.0 and recall[-1] == 1.0
    fpr, tpr, _, _ = curves(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert tpr[np.searchsorted(fpr, 1.0) - 1] == 0.0  # inverted ranking: no positive until every negative


def test_the_window_figure_rebuilds_the_eager_model_from_the_bundle(tiny_bundle):
    """Input vs expected needs the model's reconstruction: the rebuilt eager model scores like the bundle."""
    import torch

    from streamdet.bundle import load_bundle
    from streamdet.evaluate.figures import eager_model

    bundle = load_bundle(tiny_bundle)
    model = eager_model(bundle)
    x = torch.randn(2, bundle.window, len(bundle.channels))
    with torch.no_grad():
        raw = x * torch.as_tensor(bundle.std) + torch.as_tensor(bundle.mean)
        torch.testing.assert_close(model(x)[0], bundle.module(raw)[0], rtol=1e-4, atol=1e-5)
        assert model.expected(x).shape == x.shape
