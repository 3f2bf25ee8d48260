"""`streamdet evaluate`: backtest a bundle on the configured dataset's test split (evaluate/backtest.py), optionally
with scheduled retraining replayed (evaluate/refit.py), and write the report (evaluate/report.py)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from .backtest import evaluation_config, replay_entity
from .refit import model_to_retrain, replay_with_refits, retrain_with

log = logging.getLogger(__name__)


def run_evaluate(cfg, bundle_path, entities: Optional[list[str]] = None, out_dir=None, refit_every: int = 0,
                 refit_rows: int = 0) -> dict:
    """Backtest a bundle on the configured dataset's test split; write report.json, report.md and plots. With
    `refit_every`, each entity's model is retrained on its latest `refit_rows` rows after every `refit_every` test
    rows and hot-swapped in (evaluate/refit.py: scheduled retraining, replayed)."""
    from ..bundle import load_bundle
    from ..data import load_series
    from .report import build_report, write_report

    bundle = load_bundle(cfg.path(str(bundle_path)))
    eval_cfg = evaluation_config(cfg, len(bundle.channels))
    series = load_series(cfg, entities)
    retrain = retrain_with(cfg, model_to_retrain(bundle)) if refit_every else None
    runs = []
    for s in series:
        if retrain is not None:
            run = replay_with_refits(eval_cfg, bundle, s, refit_every, refit_rows, retrain)
        else:
            run = replay_entity(eval_cfg, bundle, s.entity, np.asarray(s.test, dtype=np.float32),
                                timestamps=s.test_timestamps)
        log.info("backtest entity=%s rows=%d alerts=%d seconds=%.1f", s.entity, run.scores.size, len(run.alerts),
                 run.seconds)
        runs.append(run)
    report = build_report(cfg, bundle, series, runs)
    if refit_every:
        report["refit"] = {"every": refit_every, "rows": refit_rows}
    if out_dir is not None:
        write_report(report, runs, series, Path(out_dir), bundle=bundle)
    return report
