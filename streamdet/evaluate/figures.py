"""All the figures of one `streamdet evaluate --out` run, from the report's runs and the bundle (plots.py draws them).

The input-vs-expected figure needs the model's reconstruction, which the served bundle does not expose (it returns
scores and contributions): the eager model is rebuilt from the bundle's recorded hyper-parameters and weights
(`registry.rebuild`). A bundle whose weights cannot be mapped back (an unknown model) gets the contributions instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import plots

log = logging.getLogger(__name__)


def eager_model(bundle):
    """The bundle's detector as an eager module, or None (logged) when it cannot be rebuilt."""
    from ..models import registry

    try:
        state = {k[len("model."):]: v for k, v in bundle.module.state_dict().items() if k.startswith("model.")}
        return registry.rebuild(bundle.model_name, len(bundle.channels), bundle.window,
                                bundle.meta["model"].get("hparams") or {}, state)
    except Exception as exc:  # any mismatch means: no reconstruction plot, never a failed evaluation
        log.info("no input-vs-expected plots: cannot rebuild %s from the bundle (%s)", bundle.model_name, exc)
        return None


def highest_window(run, window: int) -> Optional[np.ndarray]:
    """Test rows [L] of the window ending at the entity's highest score (clipped to the split)."""
    if not np.isfinite(run.scores).any() or run.scores.size < window:
        return None
    end = max(int(np.nanargmax(run.scores)) + 1, window)
    return np.arange(end - window, end)


def window_figure(model, bundle, run, series, path: Path) -> Optional[Path]:
    rows = highest_window(run, bundle.window)
    if rows is None:
        return None
    raw = np.asarray(series.test, dtype=np.float32)[rows]  # [L, C]
    x = torch.from_numpy((raw - bundle.mean) / bundle.std).unsqueeze(0)
    with torch.no_grad():
        _, contrib = model(x)
        expected = model.expected(x)
    expected_raw = None if expected is None else expected[0].numpy() * bundle.std + bundle.mean
    return plots.plot_expected(run.entity, rows, raw, expected_raw, contrib[0].numpy(), bundle.channels, path)


def write_figures(bundle, runs, series_list, out_dir: Path, limit: int) -> list[Path]:
    """Every figure (without a bundle: per entity, ROC/PR and distributions only); returns the files written."""
    written = [plots.plot_entity(run, np.asarray(s.test_labels), out_dir / f"{_safe(run.entity)}.png")
               for run, s in list(zip(runs, series_list))[:limit]]
    labels = np.concatenate([np.asarray(s.test_labels) for s in series_list]) if series_list else np.zeros(0)
    scores = np.concatenate([run.scores for run in runs]) if runs else np.zeros(0)
    written.append(plots.plot_roc_pr(labels, scores, out_dir / "roc_pr.png"))
    written.append(plots.plot_score_distributions(labels, scores, out_dir / "score_distributions.png"))
    if bundle is None:
        return [p for p in written if p is not None]
    written.append(plots.plot_losses(bundle.meta.get("training", {}).get("history") or [], out_dir / "loss.png"))
    model = eager_model(bundle)
    if model is not None:
        for run, s in list(zip(runs, series_list))[:limit]:
            written.append(window_figure(model, bundle, run, s, out_dir / f"{_safe(run.entity)}.window.png"))
    return [p for p in written if p is not None]


def _safe(entity: str) -> str:
    return entity.replace("/", "__")
