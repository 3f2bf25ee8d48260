"""Replacing the bundle file (or SIGHUP) swaps the model without dropping records; a bad bundle is refused."""

from __future__ import annotations

import os
import shutil
import signal

import pytest
import torch

from streamdet.bundle import export_bundle, load_bundle
from streamdet.models import registry
from tests.conftest import SMD_CONFIG, TINY_ENTITY, TINY_WINDOW, tiny_overrides, wait_until
from tests.integration.helpers import DaemonProcess, final_totals, read_topic

from .helpers import ENTITIES, EXTRA, produce, published_alerts, reference_alerts, scenario_records, start_daemon

pytestmark = pytest.mark.kafka


def sibling_bundle(original, path, window=TINY_WINDOW, bundle_format="torchscript", seed=123, context=0):
    """A different model (fresh weights) with the same channels and normalisation as the running one."""
    torch.manual_seed(seed)
    model = registry.build("lstm_ae", len(original.channels), window, "tiny")
    return export_bundle(model, path, channels=original.channels, mean=original.mean, std=original.std,
                         calibration=original.calibration, training={}, config={"preset": "tiny", "context": context},
                         bundle_format=bundle_format)


def model_sha(daemon) -> str:
    for (name, labels), _ in daemon.samples().items():
        if name == "streamdet_model_info":
            return dict(labels)["sha256"]
    return ""


def reloads(daemon, result: str) -> float:
    return daemon.value("streamdet_model_reloads_total", result=result)


@pytest.mark.parametrize("bundle_format", ["torchscript", "export"])
def test_replaced_bundle_is_served_and_bad_ones_are_refused(broker, tiny_bundle, names, tmp_path, bundle_format):
    live = tmp_path / "live.pt"
    shutil.copy(tiny_bundle, live)
    original = load_bundle(live)
    if bundle_format == "export":  # the trained bundle's layout and calibration, as a torch.export bundle
        original = sibling_bundle(original, live, bundle_format="export", seed=7)
    new = sibling_bundle(original, tmp_path / "new.pt", bundle_format=bundle_format)
    assert (original.format, new.format) == (bundle_format, bundle_format)
    other_window = sibling_bundle(original, tmp_path / "other-window.pt", window=TINY_WINDOW * 2,
                                  bundle_format=bundle_format)
    # the same layout, but each step needs more rows before it than the running stride leaves in a window
    long_context = sibling_bundle(original, tmp_path / "long-context.pt", bundle_format=bundle_format, seed=9,
                                  context=TINY_WINDOW - 1)
    records = scenario_records()
    third = len(records) // 3
    daemon = DaemonProcess(live, broker.bootstrap, names, tmp_path / "daemon.log", extra=("kafka.state_topic=''",))
    try:
        daemon.wait_ready()
        assert model_sha(daemon) == original.sha256
        produce(broker.bootstrap, names["metrics"], records[:third])

        os.replace(shutil.copy(new.path, tmp_path / "staged.pt"), live)  # an atomic swap, as a deploy would do
        wait_until(lambda: reloads(daemon, "ok") == 1, 20, "the reload of the new bundle")
        assert model_sha(daemon) == new.sha256
        produce(broker.bootstrap, names["metrics"], records[third:2 * third])

        live.write_bytes(b"this is not a bundle")  # corrupt: refused, the new model keeps serving
        wait_until(lambda: reloads(daemon, "rejected") == 1, 20, "the corrupt bundle to be rejected")
        shutil.copy(other_window.path, live)  # copied in place: read once whole; valid, but another input layout
        wait_until(lambda: reloads(daemon, "rejected") == 2, 20, "the incompatible bundle to be rejected")
        daemon.proc.send_signal(signal.SIGHUP)  # asks again for the unchanged file: checked, and refused again
        wait_until(lambda: reloads(daemon, "rejected") == 3, 20, "the SIGHUP check to refuse it again")
        shutil.copy(long_context.path, live)  # was: a ValueError out of the swap, and the daemon exited
        wait_until(lambda: reloads(daemon, "rejected") == 4, 20, "the bundle needing more context to be rejected")
        assert model_sha(daemon) == new.sha256 and daemon.proc.poll() is None
        produce(broker.bootstrap, names["metrics"], records[2 * third:])
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= len(records), 30, "every record consumed")
        code, _ = daemon.terminate(20)
        assert code == 0 and final_totals(daemon)["scored"] == len(records)  # no record dropped by the swaps
        text = daemon.log_text()
        assert "model reloaded" in text and text.count("model reload rejected") == 4
    finally:
        daemon.close()


def retrained(path):
    """The tiny bundle trained again on the same entity with another seed: other weights, same layout."""
    from streamdet.config import load_config
    from streamdet.train import train_bundle

    torch.set_num_threads(1)
    cfg = load_config(SMD_CONFIG, tiny_overrides(path) + ["train.seed=1"])
    return train_bundle(cfg, model_name="lstm_ae", entities=[TINY_ENTITY], out=str(path), progress=False).path


def test_an_alert_open_at_a_reload_is_resolved_after_it(broker, tiny_bundle, names, tmp_path):
    """The bundle is replaced (by one trained again) while an alert is open: the alert keeps its id and its resolved
    event reaches the alerts topic. Before the fix the reload dropped the episode, and its firing event was never
    resolved. Stride 1, so that the swap can fall between an alert's firing and resolving rows."""
    live = tmp_path / "live.pt"
    shutil.copy(tiny_bundle, live)
    records = scenario_records()
    stride_1 = ("scoring.stride=1",)
    want = reference_alerts(live, records, EXTRA + stride_1)  # an uninterrupted run's alerts, with their records
    row = {key: m["source"]["ref"][2] for key, m in want.items()}
    span, open_id = max((row[(i, "resolved")] - row[(i, "firing")], i) for i, status in want
                        if status == "firing" and (i, "resolved") in want)
    assert span > 2 * len(ENTITIES), "the scenario needs an alert that stays open over a few rows"
    cut = row[(open_id, "firing")] + 1 + len(ENTITIES)  # the alert has fired and not resolved yet
    daemon = start_daemon(live, broker.bootstrap, names, tmp_path / "daemon.log", *stride_1)
    try:
        daemon.wait_ready()
        produce(broker.bootstrap, names["metrics"], records[:cut])
        published_alerts(broker.bootstrap, names["alerts"], {(open_id, "firing"): None}, 60)
        os.replace(retrained(tmp_path / "staged.pt"), live)  # a deploy of the retrained bundle
        wait_until(lambda: reloads(daemon, "ok") == 1, 20, "the reload while the alert is open")
        produce(broker.bootstrap, names["metrics"], records[cut:])
        wait_until(lambda: daemon.value("streamdet_records_consumed_total", topic=names["metrics"])
                   >= len(records), 30, "every record consumed")
        code, _ = daemon.terminate(20)
        assert code == 0
        published = final_totals(daemon)["alerts"]  # alert events the daemon published (and flushed) in its run
    finally:
        daemon.close()
    # all of them, not until some condition holds: one partition may hand over an entity's resolved event before
    # the other hands over another entity's firing (nor to the partitions' high-water marks: Tansu's lagged one
    # record behind what a reader then got)
    messages = read_topic(broker.bootstrap, names["alerts"], lambda got: len(got) >= published, 30)
    assert (open_id, "firing") in {(m["alert_id"], m["status"]) for m in messages}
    resolved = {m["alert_id"] for m in messages if m["status"] == "resolved"}
    assert open_id in resolved, "the alert open at the reload was never resolved"
    assert {m["alert_id"] for m in messages if m["status"] == "firing"} <= resolved  # none left open
