"""`streamdet train --per-entity` resumes only bundles trained from exactly what they would be trained from now:
every setting that shapes a bundle is in its fingerprint, and `model.name: auto` bundles are recognised on the
next run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streamdet.config import load_config
from streamdet.data import load_series
from streamdet.train.fingerprint import fingerprint

FLEET = """
data: {{dataset: synthetic, synthetic_entities: 2, synthetic_length: 1400, synthetic_channels: 4}}
model: {{name: {name}, preset: tiny, window: 16, bundle: {bundle}{model_extra}}}
train: {{epochs: 1, device: cpu}}
scoring: {{stride: 4}}
"""


def fleet_config(root: Path, name: str = "autoencoder", model_extra: str = "", bundle: str = "unused.pt") -> Path:
    path = root / f"fleet-{len(list(root.glob('fleet-*.yaml')))}.yaml"
    path.write_text(FLEET.format(name=name, bundle=root / bundle, model_extra=model_extra))
    return path


def train_per_entity(config: Path, out: Path) -> str:
    cmd = [sys.executable, "-m", "streamdet", "train", "--config", str(config), "--per-entity", "--out", str(out),
           "--workers", "2", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.parametrize("change", [
    ", score: {smooth: 10}",  # wraps the model in a moving average: other scores, other calibration
    ", score: {channel_norm: true}",
    ", score: {standardise: true}",  # the calibration carries a standardisation prior
    ", patch: {size: 4}",  # another architecture
])
def test_every_setting_that_shapes_a_bundle_changes_its_fingerprint(tmp_path, change):
    base = load_config(fleet_config(tmp_path))
    changed = load_config(fleet_config(tmp_path, model_extra=change))
    series = load_series(base, ["synthetic-0"])
    assert fingerprint(changed, "autoencoder", series) != fingerprint(base, "autoencoder", series)


def test_where_the_bundle_is_written_is_not_part_of_its_fingerprint(tmp_path):
    base = load_config(fleet_config(tmp_path))
    elsewhere = load_config(fleet_config(tmp_path, bundle="elsewhere/fleet.pt"))
    assert base.model.bundle != elsewhere.model.bundle
    series = load_series(base, ["synthetic-0"])
    assert fingerprint(elsewhere, "autoencoder", series) == fingerprint(base, "autoencoder", series)


def test_auto_candidates_are_part_of_an_auto_fingerprint(tmp_path):
    one = load_config(fleet_config(tmp_path, "auto", ", auto_candidates: [pca]"))
    two = load_config(fleet_config(tmp_path, "auto", ", auto_candidates: [pca, knn]"))
    series = load_series(one, ["synthetic-0"])
    assert fingerprint(one, "auto", series) != fingerprint(two, "auto", series)


def test_an_auto_bundle_directory_resumes(tmp_path):
    """model.name auto: the second run finds every bundle up to date (it used to retrain them all, every time)."""
    config = fleet_config(tmp_path, "auto", ", auto_candidates: [pca, knn], auto_ensemble: 0")
    out = tmp_path / "fleet"
    assert "3 trained, 0 up to date, 0 failed" in train_per_entity(config, out)
    assert "0 trained, 3 up to date, 0 failed" in train_per_entity(config, out)


def test_a_negative_worker_count_is_refused_in_one_line(tmp_path):
    """It used to reach ProcessPoolExecutor and end in a traceback (ValueError: max_workers ...)."""
    cmd = [sys.executable, "-m", "streamdet", "train", "--config", str(fleet_config(tmp_path)), "--per-entity",
           "--out", str(tmp_path / "fleet"), "--workers", "-1", "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--workers -1" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "fleet").exists()
