"""A daemon serving a bundle directory (one entity on its own bundle, the rest on the default): kill -9 mid-stream
loses no alert, and the alerts name the bundle that scored each entity."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from streamdet.bundle import load_bundle
from streamdet.bundleset import entity_file_name
from tests.conftest import SMD_CONFIG, TINY_ENTITY, tiny_overrides

from .helpers import ENTITIES, alert_mismatches, killed_mid_stream, published_alerts, reference_alerts, \
    scenario_records

pytestmark = pytest.mark.kafka
OWN = ENTITIES[0]  # the entity with a bundle of its own


@pytest.fixture(scope="module")
def bundle_dir(tiny_bundle, tmp_path_factory) -> Path:
    """default.pt = the session's tiny bundle; OWN's bundle = the same recipe trained from another seed."""
    from streamdet.config import load_config
    from streamdet.train import train_bundle

    root = tmp_path_factory.mktemp("bundles")
    shutil.copy(tiny_bundle, root / "default.pt")
    own = root / "entities" / entity_file_name(OWN)
    cfg = load_config(SMD_CONFIG, tiny_overrides(own) + ["train.seed=7"])
    train_bundle(cfg, model_name="lstm_ae", entities=[TINY_ENTITY], out=str(own), progress=False)
    return root


def test_kill_9_with_per_entity_bundles_loses_no_alert(broker, bundle_dir, client_names, tmp_path):
    records = scenario_records()
    want = reference_alerts(bundle_dir, records)
    own_sha = load_bundle(bundle_dir / "entities" / entity_file_name(OWN)).sha256
    default_sha = load_bundle(bundle_dir / "default.pt").sha256
    assert own_sha != default_sha
    shas = {m["entity"]: m["model"]["sha256"] for m in want.values()}
    assert shas.get(OWN) == own_sha and set(shas) - {OWN}, "the scenario must alert on both kinds of entity"
    assert all(sha == default_sha for entity, sha in shas.items() if entity != OWN)

    def check_bundles_served(first):
        assert first.value("streamdet_bundles", state="served") == 2
        assert first.value("streamdet_bundles", state="grouped") == 2  # one architecture: scored in one call

    with killed_mid_stream(bundle_dir, broker.bootstrap, client_names, records, tmp_path, check_bundles_served):
        messages = published_alerts(broker.bootstrap, client_names["alerts"], want, 45)
        assert not alert_mismatches(want, messages), alert_mismatches(want, messages)
        assert {m["model"]["sha256"] for m in messages if m["entity"] == OWN} == {own_sha}
