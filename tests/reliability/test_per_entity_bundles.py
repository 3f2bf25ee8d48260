"""A daemon serving a bundle directory (one entity on its own bundle, the rest on the default): kill -9 mid-stream
loses no alert, and the alerts name the bundle that scored each entity."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from streamdet.bundle import load_bundle
from streamdet.bundleset import entity_file_name
from tests.conftest import SMD_CONFIG, TINY_ENTITY, tiny_overrides, wait_until

from .helpers import ENTITIES, alert_mismatches, kill_hard, produce, published_alerts, reference_alerts, \
    scenario_records, start_daemon

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
    first = start_daemon(bundle_dir, broker.bootstrap, client_names, tmp_path / "first.log")
    second = None
    try:
        first.wait_ready()
        sender = threading.Thread(target=produce, args=(broker.bootstrap, client_names["metrics"], records, 700.0))
        sender.start()
        wait_until(lambda: first.value("streamdet_commits_total") >= 3
                   and first.value("streamdet_records_scored_total") >= 300, 30, "commits and scores")
        assert first.value("streamdet_bundles", state="served") == 2
        assert first.value("streamdet_bundles", state="grouped") == 2  # one architecture: scored in one call
        kill_hard(first)
        sender.join(30)
        second = start_daemon(bundle_dir, broker.bootstrap, client_names, tmp_path / "second.log")
        second.wait_ready()
        messages = published_alerts(broker.bootstrap, client_names["alerts"], want, 45)
        assert not alert_mismatches(want, messages), alert_mismatches(want, messages)
        assert {m["model"]["sha256"] for m in messages if m["entity"] == OWN} == {own_sha}
    finally:
        first.close()
        if second is not None:
            second.close()
