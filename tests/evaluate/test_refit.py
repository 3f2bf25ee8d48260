"""Scheduled retraining, replayed (`streamdet evaluate --refit-every`): real bundles trained by train_bundle, swapped
into the real pipeline as the daemon's hot reload swaps them."""

from pathlib import Path

import numpy as np
import pytest

from streamdet.config import load_config
from streamdet.data.series import Series

ROOT = Path(__file__).resolve().parents[2]
WINDOW, TRAIN, TEST, SHIFT_AT, EVERY = 16, 1500, 3000, 600, 500


def shifted_series() -> Series:
    """Four noisy channels whose normal level moves for good at test row SHIFT_AT (a new normal, not an
    anomaly: nothing is labelled), with one short labelled spike in the new regime."""
    rng = np.random.default_rng(0)
    train = rng.normal(0.0, 1.0, (TRAIN, 4)).astype(np.float32)
    test = rng.normal(0.0, 1.0, (TEST, 4)).astype(np.float32)
    test[SHIFT_AT:, :2] += 12.0
    labels = np.zeros(TEST, dtype=np.int8)
    test[2600:2610, 3] += 25.0
    labels[2600:2610] = 1
    return Series("host-1", ["a", "b", "c", "d"], train, test, labels)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from streamdet.evaluate.backtest import evaluation_config
    from streamdet.train import train_bundle

    tmp = tmp_path_factory.mktemp("refit")
    cfg = load_config(ROOT / "config" / "smd.yaml", [
        "model.name=pca", f"model.window={WINDOW}", "train.epochs=1", f"model.bundle={tmp / 'pca.pt'}",
        "scoring.stride=4", "scoring.max_batch=16", "train.max_windows=2000"])
    series = shifted_series()
    bundle = train_bundle(cfg, model_name="pca", series=[series], out=str(tmp / "pca.pt"), progress=False)
    return cfg, evaluation_config(cfg, 4), bundle, series, tmp


def test_recent_rows_are_only_rows_streamed_before_the_refit():
    from streamdet.evaluate.refit import recent_rows

    train, test = np.arange(10.0)[:, None], 100 + np.arange(6.0)[:, None]
    assert recent_rows(train, test, 0, 4).ravel().tolist() == [6, 7, 8, 9]
    assert recent_rows(train, test, 3, 4).ravel().tolist() == [9, 100, 101, 102]
    assert recent_rows(train, test, 3, 0).ravel().tolist() == [3, 4, 5, 6, 7, 8, 9, 100, 101, 102]  # train's length


def test_a_new_normal_stops_alerting_after_a_retraining_and_every_row_keeps_one_score(setup):
    from streamdet.evaluate.backtest import replay_entity
    from streamdet.evaluate.refit import replay_with_refits, retrain_with

    cfg, eval_cfg, bundle, series, tmp = setup
    trained_on = []

    def retrain(recent, out):
        trained_on.append(recent.train.copy())
        return retrain_with(cfg, "pca")(recent, out)

    stale = replay_entity(eval_cfg, bundle, series.entity, series.test)
    refitted = replay_with_refits(eval_cfg, bundle, series, EVERY, 0, retrain, work=str(tmp))

    assert refitted.refits == TEST // EVERY - 1 == len(trained_on)
    for k, rows in enumerate(trained_on, start=1):  # each retraining saw the latest TRAIN rows before its swap
        np.testing.assert_array_equal(rows, np.concatenate([series.train, series.test[:k * EVERY]])[-TRAIN:])
    assert not np.isnan(refitted.scores).any()  # a swap loses no row and scores none twice (scores by row index)
    np.testing.assert_allclose(refitted.scores[:EVERY], stale.scores[:EVERY], rtol=1e-5)  # before the first swap

    late = slice(2 * EVERY, None)  # the first retraining that holds the new level comes after row 2 x EVERY
    assert stale.alert_mask()[late].mean() > 0.9  # the model trained once alerts on the new normal all along
    assert refitted.alert_mask()[late].mean() < 0.1  # retrained, it stops; the resolved event is sent
    assert "resolved" in [a["status"] for a in refitted.alerts if a["row"] >= 2 * EVERY]
    assert refitted.alert_mask()[2600:2610].any()  # and the spike in the new regime is still found


def test_each_swap_records_where_its_bundle_s_scores_begin_and_its_calibration(setup):
    """NAB's inputs read every row under the calibration of the bundle that scored it (nab_calibrated): the first
    row a swapped-in bundle scores is the one after the last row its predecessor scored."""
    from streamdet.evaluate.refit import replay_with_refits, retrain_with

    cfg, eval_cfg, bundle, series, tmp = setup
    swapped = []

    def retrain(recent, out):
        swapped.append(retrain_with(cfg, "pca")(recent, out))
        return swapped[-1]

    run = replay_with_refits(eval_cfg, bundle, series, EVERY, 0, retrain, work=str(tmp))
    assert [c for _, c in run.recalibrated] == [dict(b.calibration) for b in swapped]
    stride = 4  # scoring.stride of the setup
    for k, (row, _) in enumerate(run.recalibrated, start=1):  # the partial stride pending at the swap is the new one's
        assert k * EVERY - stride < row <= k * EVERY


def test_evaluate_records_the_schedule_in_its_report(setup, tmp_path):
    from streamdet.evaluate.report import build_report
    from streamdet.evaluate.refit import replay_with_refits, retrain_with

    cfg, eval_cfg, bundle, series, _ = setup
    run = replay_with_refits(eval_cfg, bundle, series, 1000, 800, retrain_with(cfg, "pca"), work=str(tmp_path))
    entity = build_report(cfg, bundle, [series], [run])["entities"][0]
    assert entity["refits"] == 2 and entity["retrain_seconds"] > 0 and entity["unscored_rows"] == 0


def test_streamdet_evaluate_refit_every_retrains_the_bundles_own_model(tmp_path):
    from streamdet.cli import main

    bundle = tmp_path / "pca.pt"
    common = ["--config", str(ROOT / "config" / "smd.yaml"), "--set", "data.dataset=synthetic",
              "--set", "data.synthetic_entities=1", "--set", "data.synthetic_channels=4",
              "--set", "data.synthetic_length=3000", "--set", "model.window=16", "--set", "scoring.stride=4",
              "--set", f"model.bundle={bundle}"]
    assert main(["train", *common, "--set", "model.name=pca", "--no-progress"]) == 0
    out = tmp_path / "out"
    assert main(["evaluate", *common, "--set", "model.name=autoencoder", "--out", str(out),
                 "--refit-every", "400", "--refit-rows", "900"]) == 0
    import json

    report = json.loads((out / "report.json").read_text())
    assert report["refit"] == {"every": 400, "rows": 900}
    entity = report["entities"][0]
    assert entity["refits"] == (entity["rows"] - 1) // 400 and entity["unscored_rows"] == 0
    assert report["model"]["name"] == "pca"  # retrained as the bundle's model, not the config's model.name
