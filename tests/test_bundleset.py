"""Bundle directories: which bundle scores which entity, and what happens to broken or mismatched bundles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamdet.bundle import export_bundle
from streamdet.bundleset import entity_file_name, entity_of_file, load_bundle_set
from streamdet.errors import BundleError
from streamdet.models import registry
from streamdet.pipeline.gpd import fit_gpd, stored_fit

C, L = 4, 16
CHANNELS = ["cpu", "mem", "disk", "net"]
REPO = Path(__file__).resolve().parent.parent


def export(path: Path, seed: int, channels=CHANNELS, window: int = L, context: int = 0):
    torch.manual_seed(seed)
    model = registry.build("autoencoder", len(channels), window, "tiny")
    return export_bundle(model, path, channels=list(channels), mean=np.zeros(len(channels)),
                         std=np.ones(len(channels)), calibration={"n": 1, "quantiles": {"0.5": 1.0}, "pot": {},
                                                                  "sample": [1.0]},
                         training={"epochs": 1}, config={"preset": "tiny", "context": context})


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    root = tmp_path / "bundles"
    export(root / "default.pt", 0)
    export(root / "entities" / entity_file_name("host/a:1"), 1)
    export(root / "groups" / "web.pt", 2)
    (root / "groups.yaml").write_text("- pattern: 'web-*'\n  bundle: groups/web.pt\n")
    return root


def test_an_entity_uses_its_own_bundle_then_its_group_then_the_default(bundle_dir):
    bundles = load_bundle_set(bundle_dir)
    own, group, default = (bundles.for_entity(e).sha256 for e in ("host/a:1", "web-7", "db-1"))
    assert len({own, group, default}) == 3
    assert default == bundles.default.sha256
    assert not bundles.is_fleet and len(bundles.distinct()) == 3 and not bundles.refused


def test_a_single_file_is_a_fleet_of_one(bundle_dir):
    bundles = load_bundle_set(bundle_dir / "default.pt")
    assert bundles.is_fleet and bundles.for_entity("anything") is bundles.default


def test_entity_file_names_round_trip_any_id():
    for entity in ("machine-1-1", "host/a:1", "with space", "ü-ñ", "..", "a%2Fb"):
        name = entity_file_name(entity)
        assert "/" not in name and name not in (".pt", "..pt") and entity_of_file(name) == entity


@pytest.mark.parametrize("damage", ["corrupt", "other_channels", "other_window", "missing_group_file"])
def test_a_bad_bundle_is_refused_and_its_entities_fall_back_to_the_default(bundle_dir, damage, caplog):
    bad = bundle_dir / "entities" / entity_file_name("host/a:1")
    if damage == "corrupt":
        bad.write_bytes(bad.read_bytes()[:500])
    elif damage == "other_channels":
        export(bad, 3, channels=["cpu", "mem", "disk", "swap"])
    elif damage == "other_window":
        export(bad, 3, window=L * 2)
    else:
        (bundle_dir / "groups" / "web.pt").unlink()
        bad = bundle_dir / "groups" / "web.pt"
    bundles = load_bundle_set(bundle_dir)
    entity = "web-7" if damage == "missing_group_file" else "host/a:1"
    assert bundles.for_entity(entity) is bundles.default
    assert list(bundles.refused) == [bad]
    assert str(bad) in bundles.refused[bad]
    assert sum("bundle refused" in r.getMessage() for r in caplog.records) == 1


def test_a_directory_without_its_default_or_empty_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="is empty"):
        load_bundle_set(tmp_path / "empty")
    export(tmp_path / "nodefault" / "entities" / "a.pt", 0)
    with pytest.raises(BundleError, match="default.pt"):
        load_bundle_set(tmp_path / "nodefault")


def test_malformed_groups_file_names_the_entry(bundle_dir):
    (bundle_dir / "groups.yaml").write_text("- pattern: 'web-*'\n- {pattern: 3, bundle: x.pt}\n")
    with pytest.raises(BundleError, match="entry 0"):
        load_bundle_set(bundle_dir)


def test_train_per_entity_writes_a_servable_directory_and_resumes(tmp_path):
    config = tmp_path / "fleet.yaml"
    config.write_text(f"""
data: {{dataset: synthetic, synthetic_entities: 2, synthetic_length: 1400, synthetic_channels: 4}}
model: {{name: autoencoder, preset: tiny, window: 16, bundle: {tmp_path}/unused.pt}}
train: {{epochs: 1, device: cpu}}
scoring: {{stride: 4}}
""")
    out = tmp_path / "fleet"
    cmd = [sys.executable, "-m", "streamdet", "train", "--config", str(config), "--per-entity", "--out", str(out),
           "--workers", "2", "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert "3 trained, 0 up to date, 0 failed" in first.stdout
    bundles = load_bundle_set(out)
    assert set(bundles.entity_bundles) == {"synthetic-0", "synthetic-1"} and not bundles.refused
    assert bundles.default.meta["training"]["entities"] == ["synthetic-0", "synthetic-1"]
    assert bundles.for_entity("synthetic-1").meta["training"]["entities"] == ["synthetic-1"]
    for bundle in bundles.distinct():  # each carries the GPD fit of its own peaks: the daemon starts from it
        pot = bundle.calibration["pot"]
        assert stored_fit(pot["gpd"], len(pot["peaks"])) == fit_gpd(np.asarray(pot["peaks"]))

    stale = out / "entities" / entity_file_name("synthetic-1")
    stale.write_bytes(b"not a bundle")  # an interrupted or damaged file is trained again, the rest is kept
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "1 trained, 2 up to date, 0 failed" in again.stdout
    assert load_bundle_set(out).for_entity("synthetic-0").sha256 == bundles.for_entity("synthetic-0").sha256


def test_per_entity_needs_an_output_directory(tmp_path):
    out = subprocess.run([sys.executable, "-m", "streamdet", "train", "--config", str(REPO / "config" / "smd.yaml"),
                          "--per-entity"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--per-entity needs --out DIR" in out.stderr
